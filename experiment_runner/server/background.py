"""The experiments a server runs in the background: one engine each, in the app's lifespan task group.

Each run records the server as its runner. Shutting down cancels them (recorded as `shutdown`, their
items back to `pending`), and the next start resumes them, as it resumes those a crashed server left;
nothing else: not what the CLI ran, not what a user stopped, nor what stopped on its budget or on a
systematic failure (`runstate.server_resumable`); those wait for `experiment-runner resume`. Every run
keeps the budget stored with its experiment. An experiment other live workers are running is joined: this
server claims the items they do not hold, and takes over a dead worker's once it is stale (issue 23).
"""

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from anyio.abc import TaskGroup

from experiment_runner.engine.outcome import RunOutcome
from experiment_runner.engine.progress import RunOptions
from experiment_runner.engine.run import run_experiment_async
from experiment_runner.store import Store

log = logging.getLogger("experiment_runner.server.app")


class Runs:
    """The experiments this server is running: one engine each, all tasks of the lifespan's task group."""

    def __init__(self, store: Store, concurrency: int) -> None:
        self.store = store
        self.options = RunOptions(concurrency=concurrency, handle_signals=False, runner="server")
        self._group: TaskGroup | None = None
        self._running: dict[str, tuple[anyio.CancelScope, anyio.Event]] = {}
        self._ready: anyio.Event | None = None

    @property
    def active(self) -> bool:
        return self._group is not None

    def running(self) -> list[str]:
        """Ids of the experiments whose engine is under way here."""
        return list(self._running)

    @asynccontextmanager
    async def serving(self) -> AsyncIterator[None]:
        """Accept runs while inside; on leaving, cancel every run (their state stays resumable)."""
        async with anyio.create_task_group() as group:
            self._group = group
            self._ready = anyio.Event()
            # litellm (seconds to import) is loaded before the server accepts requests: creating an
            # experiment checks its models with litellm, and a first request should not wait for that.
            await self._import_litellm(self._ready)
            try:
                yield
            finally:
                self._group = self._ready = None
                group.cancel_scope.cancel()

    def start(self, experiment_id: str) -> None:
        """Run (or resume) the experiment in the background, unless this server already runs it (its stored
        budget, if any, caps what the run may spend)."""
        if self._group is None or self._ready is None:
            raise RuntimeError("the app's lifespan is not running: serve it with uvicorn or `with TestClient(app)`")
        if experiment_id in self._running:
            return
        entry = (anyio.CancelScope(), anyio.Event())
        self._running[experiment_id] = entry
        self._group.start_soon(self._run, experiment_id, self.options, *entry, self._ready, name=f"experiment {experiment_id}")

    async def stop(self, experiment_id: str) -> None:
        """Cancel the experiment's run, if any, and wait until it has stopped writing."""
        entry = self._running.get(experiment_id)
        if entry is not None:
            entry[0].cancel()
            await entry[1].wait()

    async def _import_litellm(self, ready: anyio.Event) -> None:
        """Import litellm (seconds) in a worker thread, so the first model call does not block the event loop."""
        from experiment_runner.engine.llm import litellm_module

        try:
            await anyio.to_thread.run_sync(litellm_module, abandon_on_cancel=True)
        except Exception:  # the run's first call will import it again and report the problem
            log.exception("importing litellm failed")
        finally:
            ready.set()

    async def _run(
        self, experiment_id: str, options: RunOptions, scope: anyio.CancelScope, done: anyio.Event, ready: anyio.Event
    ) -> None:
        log.info("experiment %s: running", experiment_id)
        try:
            with scope:
                await ready.wait()  # runs start once litellm is imported (one import, off the loop)
                progress = await run_experiment_async(self.store, experiment_id, options)
            if scope.cancelled_caught:
                log.info("experiment %s: stopped", experiment_id)
            else:
                log.info("experiment %s: %s", experiment_id, RunOutcome.of(experiment_id, progress).describe())
        except anyio.get_cancelled_exc_class():
            log.info("experiment %s: interrupted by shutdown; it resumes when the server starts again", experiment_id)
            raise
        except Exception:
            log.exception("experiment %s: the run failed; it stays stopped until `experiment-runner resume %s`", experiment_id, experiment_id)
        finally:
            del self._running[experiment_id]
            done.set()
