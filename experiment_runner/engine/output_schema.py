"""`--output-schema`: a list of `{name, type, is_list, is_optional}` fields as a strict JSON schema.

The schema is sent in the structured-output mode the server accepts (`engine/structured.py`; strict
json_schema first) and the reply is checked against it.
Strict mode wants every property required, so an optional field is required but may be null.
"""

import json
from typing import Any

from experiment_runner import jsonlimits
from experiment_runner.conversation import JSONObject
from experiment_runner.errors import BadInputError

TYPES = {
    "string": "string", "str": "string", "text": "string",
    "integer": "integer", "int": "integer",
    "number": "number", "float": "number",
    "boolean": "boolean", "bool": "boolean",
    "object": "object", "dict": "object",
}


def check_fields(fields: Any) -> list[dict[str, Any]]:
    """Validate an output schema field list; return it with defaults filled in."""
    if not isinstance(fields, list) or not fields:
        raise BadInputError("output schema must be a non-empty JSON list of {name, type, is_list, is_optional}", loc=("body", "output_schema"))
    out, names = [], set()
    for i, field in enumerate(fields):
        loc = ("body", "output_schema", i)
        if not isinstance(field, dict) or not isinstance(field.get("name"), str) or not field["name"]:
            raise BadInputError(f"output schema field {i} needs a non-empty 'name'", loc=loc)
        if field.get("type") not in TYPES:
            raise BadInputError(f"output schema field {field['name']!r}: type must be one of {', '.join(sorted(set(TYPES.values())))}", loc=loc)
        if field["name"] in names:
            raise BadInputError(f"output schema field {field['name']!r} appears twice", loc=loc)
        names.add(field["name"])
        out.append({"name": field["name"], "type": field["type"], "is_list": bool(field.get("is_list", False)), "is_optional": bool(field.get("is_optional", False))})
    return out


def to_json_schema(fields: list[dict[str, Any]]) -> JSONObject:
    """The JSON schema of an object with these fields (strict-mode compatible)."""
    properties: JSONObject = {}
    for field in fields:
        schema: JSONObject = {"type": TYPES[field["type"]]}
        if schema["type"] == "object":
            schema = {"type": "object", "additionalProperties": True}
        if field["is_list"]:
            schema = {"type": "array", "items": schema}
        if field["is_optional"]:
            schema = {"anyOf": [schema, {"type": "null"}]}
        properties[field["name"]] = schema
    return {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}


def check_reply(fields: list[dict[str, Any]], text: str) -> str | None:
    """None when `text` is JSON matching the fields, else a one-line reason."""
    import jsonschema

    try:
        value = jsonlimits.loads(text)
    except json.JSONDecodeError as exc:
        return f"reply is not JSON as the output schema requires ({exc.msg} at char {exc.pos})"
    except jsonlimits.JSONLimitError as exc:
        return f"reply is not JSON as the output schema requires ({exc})"
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(to_json_schema(fields)).iter_errors(value))
    if error is not None:
        where = "/".join(map(str, error.absolute_path)) or "reply"
        return f"reply does not match the output schema at {where}: {error.message}"
    return None
