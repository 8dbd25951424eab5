"""The experiments a server runs in the background: one engine each, in the app's lifespan task group.

Shutting down cancels them; their items stay `pending`/`in_progress` and the next start resumes them.
An experiment whose lease another live runner holds (a CLI `resume`, another server) is skipped and
checked again every lease heartbeat: once that lease is released or stale, this server runs it.
"""

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace

import anyio
from anyio.abc import TaskGroup

from experiment_runner.engine.lease import LeaseTimings, leased_experiments
from experiment_runner.engine.run import Progress, RunOptions, run_experiment_async
from experiment_runner.errors import ExperimentBusyError
from experiment_runner.store import Store
from experiment_runner.store.queries.experiments import unfinished_experiment_ids

log = logging.getLogger("experiment_runner.server.app")


class Runs:
    """The experiments this server is running: one engine each, all tasks of the lifespan's task group."""

    def __init__(self, store: Store, concurrency: int) -> None:
        self.store = store
        self.options = RunOptions(concurrency=concurrency, handle_signals=False)
        self._group: TaskGroup | None = None
        self._running: dict[str, tuple[anyio.CancelScope, anyio.Event]] = {}
        self._deferred: set[str] = set()  # leased by another live runner: retried when the lease goes stale
        self._ready: anyio.Event | None = None
        self.timings = LeaseTimings.from_env()

    @property
    def active(self) -> bool:
        return self._group is not None

    def running(self) -> list[str]:
        """Ids of the experiments whose engine is under way here."""
        return list(self._running)

    def deferred(self) -> list[str]:
        """Ids of the experiments waiting for another runner's lease to end."""
        return sorted(self._deferred)

    @asynccontextmanager
    async def serving(self) -> AsyncIterator[None]:
        """Accept runs while inside; on leaving, cancel every run (their state stays resumable)."""
        async with anyio.create_task_group() as group:
            self._group = group
            self._ready = anyio.Event()
            # litellm (seconds to import) is loaded before the server accepts requests: creating an
            # experiment checks its models with litellm, and a first request should not wait for that.
            await self._import_litellm(self._ready)
            group.start_soon(self._retry_deferred)
            try:
                yield
            finally:
                self._group = self._ready = None
                group.cancel_scope.cancel()

    def start(self, experiment_id: str, max_cost_usd: float | None = None) -> None:
        """Run (or resume) the experiment in the background, unless this server already runs it.

        `max_cost_usd` caps this run's spend (a run resumed at startup has no cap: a budget belongs to the
        request that set it)."""
        if self._group is None or self._ready is None:
            raise RuntimeError("the app's lifespan is not running: serve it with uvicorn or `with TestClient(app)`")
        if experiment_id in self._running:
            return
        self._deferred.discard(experiment_id)
        entry = (anyio.CancelScope(), anyio.Event())
        self._running[experiment_id] = entry
        options = replace(self.options, max_cost_usd=max_cost_usd)
        self._group.start_soon(self._run, experiment_id, options, *entry, self._ready, name=f"experiment {experiment_id}")

    async def stop(self, experiment_id: str) -> None:
        """Cancel the experiment's run, if any, and wait until it has stopped writing."""
        entry = self._running.get(experiment_id)
        if entry is not None:
            entry[0].cancel()
            await entry[1].wait()

    async def _retry_deferred(self) -> None:
        """Every heartbeat: start the deferred experiments whose lease no live runner holds any more."""
        while True:
            await anyio.sleep(self.timings.heartbeat)
            if not self._deferred:
                continue
            try:
                leased = await anyio.to_thread.run_sync(leased_experiments, self.store, self.timings)
            except Exception:  # a store fault: try again at the next beat
                log.exception("checking run leases failed")
                continue
            for experiment_id in sorted(self._deferred - leased):
                if self._group is not None:
                    self.start(experiment_id)

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
                log.info("experiment %s: %s", experiment_id, _outcome(progress))
        except ExperimentBusyError as exc:
            log.info("experiment %s: skipped: %s; it starts here when that run ends", experiment_id, str(exc).split(" is ", 1)[1])
            self._deferred.add(experiment_id)
        except anyio.get_cancelled_exc_class():
            log.info("experiment %s: interrupted by shutdown; it resumes when the server starts again", experiment_id)
            raise
        except Exception:
            log.exception("experiment %s: the run failed; it resumes when the server starts again", experiment_id)
        finally:
            del self._running[experiment_id]
            done.set()


def _outcome(progress: Progress) -> str:
    if progress.total == 0:
        return "nothing left to run"
    if progress.stopped_by:
        return f"stopped: {progress.stopped_by}; the rest stays pending and resumes at the next start"
    if progress.budget_reached:
        return f"budget reached after {progress.done} item(s) (${progress.spent_usd:.4f} spent); the rest stays pending"
    extra = f", {progress.evaluations_failed} evaluation(s) failed" if progress.evaluations_failed else ""
    return f"{progress.total} item(s) run: {progress.completed} completed, {progress.failed} failed{extra}"


def unfinished_experiments(store: Store) -> list[str]:
    """Experiments with items still pending or in progress, oldest first."""
    with store.read() as session:
        return unfinished_experiment_ids(session.connection())
