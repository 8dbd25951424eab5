"""`experiment-runner worker`: work on the store's unfinished experiments until none is left (issue 23).

A worker is the run loop (`engine.run`) as one more worker of each experiment: it registers, claims items a
page at a time, writes their results through its own writer, and leaves. It never clears a stop: an
experiment a user stopped (Ctrl-C), or that stopped on its budget or a systematic failure, waits for
`resume`. Like every run, it stays while other workers hold an experiment's last items, so a dead worker's
are taken over once its heartbeat is stale. Settings come from the store; credentials from this process's environment, checked before it
claims anything (the preflight of `run`). With `wait`, it looks for new work every `poll_seconds` until a
signal (on PostgreSQL, `wait_for_work` is where LISTEN/NOTIFY would wake it instead).

SIGTERM/SIGINT: it takes no new item, finishes the calls under way (a grace period; a second signal stops
at once), gives back what it claimed and exits. A plain worker's signal is not a user's stop (a restarted
fleet leaves experiments runnable); the processes of `run --workers` (`as_run`) record it as `run` does.
"""

import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass, field

import anyio

from experiment_runner.engine.experiments import get_experiment, preflight
from experiment_runner.engine.lease import LeaseTimings
from experiment_runner.engine.progress import Progress, ProgressCallback, RunOptions, on_signals
from experiment_runner.engine.run import run_experiment_async
from experiment_runner.engine.runstate import ExperimentStoppedError
from experiment_runner.engine.spec import ExperimentSpec
from experiment_runner.errors import BadInputError
from experiment_runner.store import Store
from experiment_runner.store.queries import claims

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerOptions:
    """What `experiment-runner worker` is told."""

    experiment_id: str | None = None  # only this experiment (else every unfinished one)
    concurrency: int = 8
    wait: bool = False  # keep looking for new work until a signal
    poll_seconds: float = field(default_factory=lambda: LeaseTimings.from_env().heartbeat)
    use_cache: bool = True
    retry_before: str | None = None  # `run --workers` of `resume --retry-failed`: redo what failed before this stamp
    as_run: bool = False  # a process of `run --workers`: a signal is the user's stop, recorded as `run` records it
    grace_seconds: float = 5.0


@dataclass
class WorkerOutcome:
    """What a worker did: each experiment's counts, in the order it worked on them, and whether a signal ended it."""

    runs: list[tuple[str, Progress]] = field(default_factory=list)
    signalled: bool = False


ExperimentCallback = Callable[[str, Progress], None]


def open_experiments(store: Store, experiment_id: str | None = None) -> list[str]:
    """The experiments a worker may take now, oldest first."""
    with store.read() as session:
        return claims.open_experiments(session.connection(), experiment_id)


@dataclass
class _StopBetweenRuns:
    """SIGTERM/SIGINT that come while no run is under way (`progress.on_signals`, installed again after each run
    and each wait, whose own handlers give the signals back to the default): the worker stops before its next step."""

    requested: bool = False

    def install(self) -> None:
        on_signals(self._note)

    def _note(self) -> None:
        self.requested = True


async def work(
    store: Store, options: WorkerOptions, on_progress: ProgressCallback | None = None, on_done: ExperimentCallback | None = None
) -> WorkerOutcome:
    """Work until no experiment has work left (or, with `wait`, until a signal); returns what was done."""
    outcome, stop = WorkerOutcome(), _StopBetweenRuns()
    stop.install()
    if options.wait:  # import litellm (seconds) while there is nothing to do, not when the first experiment comes
        from experiment_runner.engine.llm import litellm_module

        await anyio.to_thread.run_sync(litellm_module)
    while not outcome.signalled:
        worked = False
        for experiment_id in await anyio.to_thread.run_sync(open_experiments, store, options.experiment_id):
            if stop.requested:
                break
            check_keys(store, experiment_id)  # a missing key: the one-line error, nothing claimed
            try:
                progress = await run_experiment_async(store, experiment_id, _run_options(options), on_progress)
            except ExperimentStoppedError as exc:  # stopped between the listing and the claim
                log.info("%s", exc)
                continue
            finally:
                stop.install()
            worked = worked or progress.claimed > 0
            outcome.runs.append((experiment_id, progress))
            if on_done is not None:
                on_done(experiment_id, progress)
            if progress.stop_requested:
                outcome.signalled = True
                break
        outcome.signalled = outcome.signalled or stop.requested
        if outcome.signalled or worked:
            continue
        if not options.wait:
            break
        outcome.signalled = await wait_for_work(options.poll_seconds)
        stop.install()
    return outcome


def check_keys(store: Store, experiment_id: str) -> None:
    """The preflight of `run` on the stored experiment, with this process's keys; the error names the experiment."""
    try:
        preflight(ExperimentSpec.from_row(get_experiment(store, experiment_id)))
    except BadInputError as exc:
        raise BadInputError([f"experiment {experiment_id}: ", *exc.parts], field=exc.field) from None


def _run_options(options: WorkerOptions) -> RunOptions:
    return RunOptions(
        concurrency=options.concurrency, retry_failed=options.retry_before is not None, retry_before=options.retry_before,
        handle_signals=True, grace_seconds=options.grace_seconds, use_cache=options.use_cache, resume=False,
        user_stop=options.as_run, tick_seconds=0.5 if options.as_run else None,
    )


async def wait_for_work(seconds: float) -> bool:
    """Sleep until the next look for work; True when SIGTERM/SIGINT came meanwhile (the worker then exits).

    Polling works on every store; a PostgreSQL store could wake it with LISTEN/NOTIFY here instead."""
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as received:
        with anyio.move_on_after(seconds):
            async for _ in received:
                return True
    return False
