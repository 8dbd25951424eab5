"""The API's endpoints, one thin function each: parse, call one core function (in a worker thread), format.

The store and the background runs come from the app (`request.app.state`) through dependencies, so the
router holds no state of its own and can be mounted on any app.
"""

import json
import uuid
from collections.abc import Iterator
from typing import Annotated

import anyio
from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from experiment_runner import jsonlimits
from experiment_runner.engine.estimate import called_models, check_priced
from experiment_runner.engine.estimate import dry_run as run_dry
from experiment_runner.engine.experiments import check_spec, create_experiment
from experiment_runner.errors import BadInputError, InputLimitError
from experiment_runner.ingest.importing import import_conversations
from experiment_runner.results.catalog import delete_experiment, list_experiments, list_items
from experiment_runner.results.documents import ExperimentObject
from experiment_runner.results.export import experiment_object, export_chunks
from experiment_runner.server.allowlist import check_api_base
from experiment_runner.server.background import Runs
from experiment_runner.server.openapi import NOT_FOUND, json_response
from experiment_runner.server.schemas import CreateExperiment, ImportResponse
from experiment_runner.store import Store
from experiment_runner.store.queries.experiments import require_experiment

EXPORT_CHUNK_CHARS = 64 * 1024


def get_store(request: Request) -> Store:
    """The store the app serves."""
    store: Store = request.app.state.store
    return store


def get_runs(request: Request) -> Runs:
    """The app's background runs."""
    runs: Runs = request.app.state.runs
    return runs


StoreDep = Annotated[Store, Depends(get_store)]
RunsDep = Annotated[Runs, Depends(get_runs)]


def experiment_id_path(experiment_id: Annotated[str, Path(description="Experiment UUID")]) -> str:
    """The path's experiment id, canonical when it is a UUID; anything else is looked up as given, so a
    malformed id is 404 like an unknown one (not FastAPI's 422)."""
    try:
        return str(uuid.UUID(experiment_id))
    except ValueError:
        return experiment_id


ExperimentId = Annotated[str, Depends(experiment_id_path)]
Cursor = Annotated[str | None, Query(description="Cursor for pagination")]

router = APIRouter()


def experiment_document(store: Store, experiment_id: str) -> ExperimentObject:
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


@router.post(
    "/v1/experiments",
    status_code=201,
    tags=["experiments"],
    summary="Create Experiment",
    responses={201: json_response("Experiment", "The created experiment; it runs in the background")},
)
async def create(
    body: CreateExperiment,
    store: StoreDep,
    runs: RunsDep,
    request: Request,
    dry_run: Annotated[bool, Query(description="Validate and estimate calls, tokens and cost; store and call nothing")] = False,
) -> JSONResponse:
    """Run an issue-detection experiment on traced conversations."""
    spec = check_spec(body.to_spec())
    for field in ("api_base", "evaluator_api_base"):
        check_api_base(getattr(spec, field), request.app.state.allow_api_bases, field)
    if dry_run:
        estimate = await anyio.to_thread.run_sync(run_dry, store, spec)
        return JSONResponse(estimate.as_dict())
    if not runs.active:
        raise HTTPException(503, "the server is starting or shutting down; try again")
    await anyio.to_thread.run_sync(check_priced, called_models(spec), body.max_cost_usd, body.max_cost_unpriced_ok)
    experiment_id = await anyio.to_thread.run_sync(lambda: create_experiment(store, spec, runner="server"))
    try:
        document = await anyio.to_thread.run_sync(experiment_document, store, experiment_id)
    finally:
        runs.start(experiment_id)
    return JSONResponse(document, status_code=201, headers={"Location": f"/v1/experiments/{experiment_id}"})


@router.get(
    "/v1/experiments",
    tags=["experiments"],
    summary="List Experiments",
    responses={200: json_response("ExperimentPage", "A page of experiments, newest first")},
)
async def list_(
    store: StoreDep,
    limit: Annotated[int, Query(ge=1, le=100, description="Maximum number of experiments to return")] = 50,
    cursor: Cursor = None,
) -> JSONResponse:
    """Browse experiments, newest first."""
    page = await anyio.to_thread.run_sync(lambda: list_experiments(store, limit=limit, cursor=cursor))
    return JSONResponse(page)

@router.get(
    "/v1/experiments/{experiment_id}",
    tags=["experiments"],
    summary="Get Experiment",
    responses={200: json_response("Experiment", "The experiment with its counts and metrics so far"), **NOT_FOUND},
)
async def get(experiment_id: ExperimentId, store: StoreDep) -> JSONResponse:
    """One experiment: settings, status summary and metrics (poll it to follow a run)."""
    return JSONResponse(await anyio.to_thread.run_sync(experiment_document, store, experiment_id))

@router.get(
    "/v1/experiments/{experiment_id}/items",
    tags=["experiments"],
    summary="List Experiment Items",
    responses={200: json_response("ExperimentItemPage", "A page of items in conversation order"), **NOT_FOUND},
)
async def items(
    experiment_id: ExperimentId,
    store: StoreDep,
    limit: Annotated[int, Query(ge=1, le=100, description="Maximum number of items to return")] = 50,
    cursor: Cursor = None,
) -> JSONResponse:
    """An experiment's items, each with its source and result conversations, as in the export."""
    page = await anyio.to_thread.run_sync(
        lambda: list_items(store, experiment_id, limit=limit, cursor=cursor)
    )
    return JSONResponse(page)

@router.get(
    "/v1/experiments/{experiment_id}/export",
    tags=["experiments"],
    summary="Export Experiment",
    response_class=StreamingResponse,
    responses={200: json_response("ExperimentExport", "The export document (export.schema.json)"), **NOT_FOUND},
)
async def export(experiment_id: ExperimentId, store: StoreDep) -> StreamingResponse:
    """Export full experiment data as JSON."""
    chunks = await anyio.to_thread.run_sync(export_chunks, store, experiment_id)  # 404 before streaming
    return StreamingResponse(
        _batched(chunks),
        media_type="application/json",
        headers={"Content-Disposition": f'attachment; filename="experiment-{experiment_id}.json"'},
    )

@router.delete(
    "/v1/experiments/{experiment_id}",
    status_code=204,
    tags=["experiments"],
    summary="Delete Experiment",
    response_class=Response,
    responses=NOT_FOUND,
)
async def delete(experiment_id: ExperimentId, store: StoreDep, runs: RunsDep) -> Response:
    """Delete an experiment (stopping its run), its items, result conversations and evaluations."""
    await runs.stop(experiment_id)
    await anyio.to_thread.run_sync(delete_experiment, store, experiment_id)
    return Response(status_code=204)

@router.post(
    "/v1/conversations",
    status_code=201,
    tags=["conversations"],
    summary="Import Conversations",
    response_model=ImportResponse,
    responses={400: {"description": "The body passes a JSON limit (depth, number size) or holds NaN/Infinity"}},
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
async def import_(request: Request, store: StoreDep) -> Response:
    """Store one conversation or a list of them, as `experiment-runner import` does: all or nothing.

    The body is parsed here with the JSON limits (`jsonlimits`): past one (depth, number size, NaN or
    Infinity, also inside `arguments` strings) answers 400 `{"detail"}`; bad JSON or a bad conversation 422."""
    raw = await request.body()
    try:
        body = await anyio.to_thread.run_sync(jsonlimits.loads, raw)
    except jsonlimits.JSONLimitError as exc:
        return JSONResponse({"detail": f"body:{exc.lineno or 1}: {exc}"}, status_code=400)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return JSONResponse({"detail": [{"loc": ["body"], "msg": f"JSON decode error: {exc}", "type": "json_invalid"}]}, 422)
    objects = body if isinstance(body, list) else [body]
    try:
        result = await anyio.to_thread.run_sync(import_conversations, store, objects, "body")
    except InputLimitError as exc:
        return JSONResponse({"detail": str(exc)}, status_code=400)
    except BadInputError as exc:
        if not isinstance(body, list) and exc.loc[:1] == ("body",):
            exc.loc = ("body",)  # one object: the body itself, not its index 0
        raise
    response = ImportResponse(ids=result.ids, new=result.new, unchanged=result.unchanged, duplicates=result.duplicates)
    return JSONResponse(response.model_dump(), status_code=201)
