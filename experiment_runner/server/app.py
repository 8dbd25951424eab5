"""The REST API (`experiment-runner serve`): the hosted experiments API's paths and shapes, on a laptop.

Endpoints follow `seeds/create-experiment.txt`, `list-experiments.txt` and `export-experiment.txt`. Every
database call runs in a worker thread, so the event loop stays free for the experiments this server runs:
each created (or, at startup, unfinished) experiment runs in the background as one task of the
lifespan's task group, one engine per experiment. Shutting down cancels them; their items stay
`pending`/`in_progress` and the next start resumes them.

Errors: invalid input is 422 `{"detail": [{"loc", "msg", "type"}]}` (FastAPI's own shape, also for our
`BadInputError`), an unknown id 404 `{"detail": "..."}`, a missing or wrong bearer token 401.
FastAPI is imported only here; the CLI imports this module when `serve` runs.
"""

import logging
import re
import secrets
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import anyio
from fastapi import Body, FastAPI, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from experiment_runner import __version__
from experiment_runner.engine.experiments import create_experiment, require_experiment
from experiment_runner.errors import (
    BadInputError,
    ExperimentRunnerError,
    NotFoundError,
    StoreError,
)
from experiment_runner.ingest.importing import import_conversations
from experiment_runner.results.catalog import delete_experiment, list_experiments, list_items
from experiment_runner.results.export import (
    experiment_object,
    export_chunks,
    load_export_schema,
)
from experiment_runner.server.background import Runs, unfinished_experiments
from experiment_runner.server.schemas import CreateExperiment, ErrorDetail, ImportResponse
from experiment_runner.store import Store

log = logging.getLogger("experiment_runner.server.app")

PUBLIC_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})
EXPORT_CHUNK_CHARS = 64 * 1024


def experiment_document(store: Store, experiment_id: str) -> dict[str, Any]:
    """The export's `experiment` object for one experiment, or `NotFoundError`."""
    with store.read() as session:
        return experiment_object(session, require_experiment(session, experiment_id))


def _batched(chunks: Iterator[str], size: int = EXPORT_CHUNK_CHARS) -> Iterator[str]:
    """Join small chunks, so streaming a large export is not one thread hop per item."""
    buffer: list[str] = []
    length = 0
    for chunk in chunks:
        buffer.append(chunk)
        length += len(chunk)
        if length >= size:
            yield "".join(buffer)
            buffer, length = [], 0
    if buffer:
        yield "".join(buffer)


# --- errors and authentication -------------------------------------------------------------------


def _validation_error(exc: BadInputError) -> JSONResponse:
    loc = list(exc.loc) or ["body"]
    return JSONResponse({"detail": [{"loc": loc, "msg": str(exc), "type": "value_error"}]}, status_code=422)


def _install_error_handlers(app: FastAPI) -> None:
    async def not_found(_: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    async def bad_input(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, BadInputError)
        return _validation_error(exc)

    async def store_error(_: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=500)

    async def failed(_: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=400)

    async def internal(_: Request, exc: Exception) -> JSONResponse:  # logged (with traceback) by the server
        return JSONResponse({"detail": f"internal error: {type(exc).__name__}"}, status_code=500)

    app.add_exception_handler(NotFoundError, not_found)  # before its base class: handlers match by MRO
    app.add_exception_handler(BadInputError, bad_input)
    app.add_exception_handler(StoreError, store_error)
    app.add_exception_handler(ExperimentRunnerError, failed)
    app.add_exception_handler(Exception, internal)


class BearerAuth:
    """ASGI middleware: every request except the docs needs `Authorization: Bearer <token>` (else 401).

    It runs before routing and body parsing, so an unauthenticated caller learns nothing about the input.
    """

    def __init__(self, app: Any, token: str) -> None:
        self.app = app
        self.expected = f"bearer {token}".encode()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] not in PUBLIC_PATHS and not self._authorized(scope):
            response = JSONResponse(
                {"detail": "missing or wrong bearer token: send the header `Authorization: Bearer <token>`"},
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _authorized(self, scope: Any) -> bool:
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, credentials = value.partition(b" ")
                return secrets.compare_digest(scheme.lower() + b" " + credentials.strip(), self.expected)
        return False


# --- OpenAPI --------------------------------------------------------------------------------------


def _schemas() -> dict[str, Any]:
    """Response schemas for the docs, taken from the packaged export schema (the public contract)."""
    export = {k: v for k, v in load_export_schema().items() if k != "$schema"}
    item = export["properties"]["items"]["items"]

    def page(of: str) -> dict[str, Any]:
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
            "properties": {"id": {"type": "string"}, "messages": {"type": "array", "items": {"type": "object"}}},
        },
    }


def _json(ref: str, description: str) -> dict[str, Any]:
    schema = {"$ref": f"#/components/schemas/{ref}"}
    return {"description": description, "content": {"application/json": {"schema": schema}}}


NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorDetail, "description": "No experiment with that id"}}


def _customize_openapi(app: FastAPI, token: str | None) -> None:
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            schema.setdefault("components", {}).setdefault("schemas", {}).update(_schemas())
            if token:
                schema["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
                schema["security"] = [{"bearer": []}]
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]


# --- the app -------------------------------------------------------------------------------------

ExperimentId = Annotated[uuid.UUID, Path(description="Experiment UUID")]
Cursor = Annotated[str | None, Query(description="Cursor for pagination")]
_BODY_INDEX = re.compile(r"^body\[(\d+)\]")


def create_app(store: Store, *, token: str | None = None, concurrency: int = 8) -> FastAPI:
    """The API over `store`; with `token`, every request but the docs needs `Authorization: Bearer <token>`.

    Experiments run inside the app's lifespan (uvicorn, or `with TestClient(app)`), `concurrency` model
    calls at most per experiment; at startup, experiments left unfinished are resumed.
    """
    runs = Runs(store, concurrency)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with runs.serving():
            unfinished = await anyio.to_thread.run_sync(unfinished_experiments, store)
            if unfinished:
                log.info("resuming %d unfinished experiment(s)", len(unfinished))
            for experiment_id in unfinished:
                runs.start(experiment_id)
            yield

    app = FastAPI(
        title="experiment-runner",
        version=__version__,
        description="Local experiments API: import conversations, create experiments that replay them against "
        "a target model and annotate the replies with an evaluator, follow their progress, export the results.",
        lifespan=lifespan,
    )
    app.state.runs = runs
    _install_error_handlers(app)
    _customize_openapi(app, token)
    if token:
        app.add_middleware(BearerAuth, token=token)

    @app.post(
        "/v1/experiments",
        status_code=201,
        tags=["experiments"],
        summary="Create Experiment",
        responses={201: _json("Experiment", "The created experiment; it runs in the background")},
    )
    async def create(body: CreateExperiment) -> JSONResponse:
        """Run an issue-detection experiment on traced conversations."""
        if not runs.active:
            raise HTTPException(503, "the server is starting or shutting down; try again")
        spec = body.to_spec()
        experiment_id = await anyio.to_thread.run_sync(create_experiment, store, spec)
        try:
            document = await anyio.to_thread.run_sync(experiment_document, store, experiment_id)
        finally:
            runs.start(experiment_id)
        return JSONResponse(document, status_code=201, headers={"Location": f"/v1/experiments/{experiment_id}"})

    @app.get(
        "/v1/experiments",
        tags=["experiments"],
        summary="List Experiments",
        responses={200: _json("ExperimentPage", "A page of experiments, newest first")},
    )
    async def list_(
        limit: Annotated[int, Query(ge=1, le=100, description="Maximum number of experiments to return")] = 50,
        cursor: Cursor = None,
    ) -> JSONResponse:
        """Browse experiments, newest first."""
        page = await anyio.to_thread.run_sync(lambda: list_experiments(store, limit=limit, cursor=cursor))
        return JSONResponse(page)

    @app.get(
        "/v1/experiments/{experiment_id}",
        tags=["experiments"],
        summary="Get Experiment",
        responses={200: _json("Experiment", "The experiment with its counts and metrics so far"), **NOT_FOUND},
    )
    async def get(experiment_id: ExperimentId) -> JSONResponse:
        """One experiment: settings, status summary and metrics (poll it to follow a run)."""
        return JSONResponse(await anyio.to_thread.run_sync(experiment_document, store, str(experiment_id)))

    @app.get(
        "/v1/experiments/{experiment_id}/items",
        tags=["experiments"],
        summary="List Experiment Items",
        responses={200: _json("ExperimentItemPage", "A page of items in conversation order"), **NOT_FOUND},
    )
    async def items(
        experiment_id: ExperimentId,
        limit: Annotated[int, Query(ge=1, le=100, description="Maximum number of items to return")] = 50,
        cursor: Cursor = None,
    ) -> JSONResponse:
        """An experiment's items, each with its source and result conversations, as in the export."""
        page = await anyio.to_thread.run_sync(
            lambda: list_items(store, str(experiment_id), limit=limit, cursor=cursor)
        )
        return JSONResponse(page)

    @app.get(
        "/v1/experiments/{experiment_id}/export",
        tags=["experiments"],
        summary="Export Experiment",
        response_class=StreamingResponse,
        responses={200: _json("ExperimentExport", "The export document (export.schema.json)"), **NOT_FOUND},
    )
    async def export(experiment_id: ExperimentId) -> StreamingResponse:
        """Export full experiment data as JSON."""
        chunks = await anyio.to_thread.run_sync(export_chunks, store, str(experiment_id))  # 404 before streaming
        return StreamingResponse(
            _batched(chunks),
            media_type="application/json",
            headers={"Content-Disposition": f'attachment; filename="experiment-{experiment_id}.json"'},
        )

    @app.delete(
        "/v1/experiments/{experiment_id}",
        status_code=204,
        tags=["experiments"],
        summary="Delete Experiment",
        response_class=Response,
        responses=NOT_FOUND,
    )
    async def delete(experiment_id: ExperimentId) -> Response:
        """Delete an experiment (stopping its run), its items, result conversations and evaluations."""
        await runs.stop(str(experiment_id))
        await anyio.to_thread.run_sync(delete_experiment, store, str(experiment_id))
        return Response(status_code=204)

    @app.post(
        "/v1/conversations",
        status_code=201,
        tags=["conversations"],
        summary="Import Conversations",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "anyOf": [
                                {"$ref": "#/components/schemas/ImportConversation"},
                                {"type": "array", "items": {"$ref": "#/components/schemas/ImportConversation"}},
                            ]
                        }
                    }
                },
            }
        },
    )
    async def import_(body: Annotated[Any, Body()]) -> ImportResponse:
        """Store one conversation or a list of them, as `experiment-runner import` does: all or nothing."""
        objects = body if isinstance(body, list) else [body]
        try:
            result = await anyio.to_thread.run_sync(import_conversations, store, objects, "body")
        except BadInputError as exc:
            if exc.loc:
                raise
            match = _BODY_INDEX.match(str(exc))
            loc: tuple[str | int, ...] = ("body", int(match[1])) if match and isinstance(body, list) else ("body",)
            raise BadInputError(str(exc), loc=loc) from None
        return ImportResponse(ids=result.ids, new=result.new, unchanged=result.unchanged)

    return app
