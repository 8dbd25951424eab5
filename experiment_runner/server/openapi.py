"""The OpenAPI document: response schemas taken from the packaged export schema (the public contract)."""


from fastapi import FastAPI

from experiment_runner.conversation import JSONObject
from experiment_runner.results.export import load_export_schema
from experiment_runner.server.schemas import ErrorDetail


def _schemas() -> JSONObject:
    """Response schemas for the docs, taken from the packaged export schema (the public contract)."""
    export = {k: v for k, v in load_export_schema().items() if k != "$schema"}
    item = export["properties"]["items"]["items"]

    def page(of: str) -> JSONObject:
        return {
            "type": "object",
            "required": ["next_page_cursor", "query", "has_more", "items"],
            "properties": {
                "next_page_cursor": {"anyOf": [{"type": "string"}, {"type": "null"}]},
                "query": {"type": "object"},
                "has_more": {"type": "boolean"},
                "items": {"type": "array", "items": {"$ref": f"#/components/schemas/{of}"}},
            },
        }

    return {
        "Experiment": export["properties"]["experiment"],
        "ExperimentItem": item,
        "ExperimentExport": export,
        "ExperimentPage": page("Experiment"),
        "ExperimentItemPage": page("ExperimentItem"),
        "ImportConversation": {
            "type": "object",
            "description": "A conversation, native (`parts`) or OpenAI chat (`content`, `tool_calls`); see the README",
            "required": ["messages"],
            "properties": {
                "id": {"type": "string", "description": "Optional; without it the id is derived from the content"},
                "messages": {"type": "array", "items": {"type": "object"}},
                "tools": {"type": "array", "items": {"type": "object"}, "description": "OpenAI tool definitions, declared on replay"},
                "metadata": {"type": "object", "description": "Kept as it is; exported with the source conversation"},
            },
        },
    }


def json_response(ref: str, description: str) -> JSONObject:
    schema = {"$ref": f"#/components/schemas/{ref}"}
    return {"description": description, "content": {"application/json": {"schema": schema}}}


NOT_FOUND: dict[int | str, JSONObject] = {404: {"model": ErrorDetail, "description": "No experiment with that id"}}


def customize_openapi(app: FastAPI, token: str | None) -> None:
    generate = app.openapi

    def openapi() -> JSONObject:
        if app.openapi_schema is None:
            schema = generate()
            schema.setdefault("components", {}).setdefault("schemas", {}).update(_schemas())
            if token:
                schema["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
                schema["security"] = [{"bearer": []}]
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]
