"""The REST API (`experiment-runner serve`): the hosted experiments API's paths and shapes, on a laptop.

Endpoints follow the hosted API's create, list and export experiment pages (README, REST API). Every
database call runs in a worker thread, so the event loop stays free for the experiments this server runs:
each created experiment runs in the background as one task of the lifespan's task group, one engine
per experiment. Shutting down cancels them; their items go back to `pending` and the next start resumes
them (and only them: see `background`).

Request bodies are bounded (`bodies.py`: 413 past `serve --max-body-mb`/`--max-inflated-mb`). The docs
(`/docs`, Swagger UI) are served from the `fastapi-offline` package's copy of Swagger UI, so they work with
no network and the page fetches nothing from outside the server.

Errors: invalid input is 422 `{"detail": [{"loc", "msg", "type"}]}` (FastAPI's own shape, also for our
`BadInputError`), an unknown id 404 `{"detail": "..."}`, a missing or wrong bearer token 401.
FastAPI is imported only here; the CLI imports this module when `serve` runs.
"""

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline

from experiment_runner import __version__
from experiment_runner.engine.runstate import server_resumable
from experiment_runner.errors import BadInputError, ExperimentBusyError, ExperimentRunnerError, NotFoundError, StoreError
from experiment_runner.server.auth import BearerAuth
from experiment_runner.server.background import Runs
from experiment_runner.server.bodies import BodyLimit, BodyLimits
from experiment_runner.server.openapi import customize_openapi
from experiment_runner.server.routes import experiment_document, router
from experiment_runner.server.traces import router as traces_router
from experiment_runner.server.ui import install_ui
from experiment_runner.store import Store

__all__ = ["create_app", "experiment_document"]

log = logging.getLogger("experiment_runner.server.app")


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

    async def busy(_: Request, exc: Exception) -> JSONResponse:  # another process runs the experiment
        return JSONResponse({"detail": str(exc)}, status_code=409)

    async def failed(_: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=400)

    async def internal(_: Request, exc: Exception) -> JSONResponse:  # logged (with traceback) by the server
        return JSONResponse({"detail": f"internal error: {type(exc).__name__}"}, status_code=500)

    app.add_exception_handler(NotFoundError, not_found)  # before its base class: handlers match by MRO
    app.add_exception_handler(BadInputError, bad_input)
    app.add_exception_handler(StoreError, store_error)
    app.add_exception_handler(ExperimentBusyError, busy)
    app.add_exception_handler(ExperimentRunnerError, failed)
    app.add_exception_handler(Exception, internal)


DOCS_STATIC = "/docs/static"  # Swagger UI's script, stylesheet and favicon (public, like /docs)


def create_app(
    store: Store,
    *,
    token: str | None = None,
    concurrency: int = 8,
    allow_api_bases: tuple[str, ...] = (),
    limits: BodyLimits | None = None,
) -> FastAPI:
    """The API over `store`; with `token`, every request but the docs needs `Authorization: Bearer <token>`.

    Experiments run inside the app's lifespan (uvicorn, or `with TestClient(app)`), `concurrency` model
    calls at most per experiment; at startup, the experiments a server was running when it went down are
    resumed (with their stored budgets). Requests may
    name loopback model endpoints and those under `allow_api_bases` only, and send bodies within
    `limits` (the defaults of `BodyLimits` when not given).
    """
    limits = limits or BodyLimits()
    runs = Runs(store, concurrency)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with runs.serving():
            unfinished = await anyio.to_thread.run_sync(server_resumable, store)
            if unfinished:
                log.info("resuming %d experiment(s) a server was running when it stopped", len(unfinished))
            for experiment_id in unfinished:
                runs.start(experiment_id)
            yield
        # The runs are stopped: make the .db file the whole store now, since after a SIGTERM uvicorn ends
        # the process (re-raising the signal) before the CLI closes the store.
        await anyio.to_thread.run_sync(store.checkpoint_writes)

    app = FastAPIOffline(  # FastAPI, with /docs served from the package instead of a CDN
        redoc_url=None,  # ReDoc's page links outside the server; Swagger UI at /docs is the one docs page
        static_url=DOCS_STATIC,
        swagger_ui_parameters={"validatorUrl": None},  # else Swagger UI may send the spec to an outside validator
        title="experiment-runner",
        version=__version__,
        description="Local experiments API: import conversations, create experiments that replay them against "
        "a target model and annotate the replies with an evaluator, follow their progress, export the results.",
        lifespan=lifespan,
    )
    app.state.store = store
    app.state.runs = runs
    app.state.allow_api_bases = tuple(allow_api_bases)
    app.state.body_limits = limits
    _install_error_handlers(app)
    customize_openapi(app, token)
    app.add_middleware(BodyLimit, limits=limits, collector_paths=frozenset({"/v1/traces"}))
    if token:  # added last, so it runs first: an unauthenticated caller learns nothing, not even the limits
        app.add_middleware(BearerAuth, token=token)
    app.include_router(router)
    app.include_router(traces_router)
    install_ui(app, token)  # the web UI at `/`; after BearerAuth, so its session check runs first
    return app
