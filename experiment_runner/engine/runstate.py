"""An experiment's run state: who runs it, why its last run stopped, and what its budget has left (issue 20).

A run records at its start who runs it (`cli` or `server`) and clears the previous run's stop; at its
end, if items are left, why it stopped: `interrupted` (Ctrl-C, SIGTERM), `budget`, `systematic` (an
endpoint that cannot work: unreachable, no credentials, no such model), `failed` (the run itself broke:
a store fault) or `shutdown` (the server running it stopped). Its items in progress go back to `pending`
and `completed_at` stays empty. A runner that dies (kill -9, power loss) records nothing: the lease row it
leaves behind says it crashed (`lease.holder_state`).

A server resumes at startup only what it was running itself when it went down (runner `server`, no
stop or a `shutdown`); anything stopped otherwise waits for `experiment-runner resume`, which clears the
stop. The budget (`max_cost_usd`) is stored with the experiment and covers all its runs: each run may
spend what the stored results have not spent yet.
"""

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Protocol

import anyio

from experiment_runner.engine.lease import Lease, LeaseTimings, reap_dead
from experiment_runner.errors import ExperimentRunnerError, LeaseLostError, StoreError
from experiment_runner.store import Store
from experiment_runner.store.queries import claims, runs
from experiment_runner.store.queries import experiments as q
from experiment_runner.store.tables import Experiment
from experiment_runner.store.timeutil import now

log = logging.getLogger(__name__)

INTERRUPTED, BUDGET, SYSTEMATIC, FAILED, SHUTDOWN = "interrupted", "budget", "systematic", "failed", "shutdown"
EXPERIMENT_WIDE = (BUDGET, SYSTEMATIC)  # stops every worker of the experiment, not only the one that met it
RUNNERS = ("cli", "server")


@dataclass(frozen=True)
class Stop:
    """Why a run ended before its work was done: one of the reasons above, and the line that says what happened."""

    reason: str
    detail: str


@dataclass(frozen=True)
class BudgetLeft:
    """The experiment's stored cap, what its stored results cost, and what this run may spend (None: no cap)."""

    cap_usd: float | None
    spent_usd: float

    @property
    def left_usd(self) -> float | None:
        return None if self.cap_usd is None else self.cap_usd - self.spent_usd


class Outcome(Protocol):
    """What a finished run reports (`run.Progress`), as far as its stop is concerned."""

    stopped_by: str | None
    budget_reached: bool
    interrupted: bool
    budget_usd: float | None
    spent_usd: float
    spent_before_usd: float


def stop_of(outcome: Outcome) -> Stop | None:
    """Why a run that returned ended early, or None when it did all it had to do."""
    if outcome.stopped_by:
        return Stop(SYSTEMATIC, outcome.stopped_by)
    if outcome.budget_reached:
        spent = outcome.spent_before_usd + outcome.spent_usd
        return Stop(BUDGET, f"budget of ${outcome.budget_usd or 0:g} reached (${spent:.6f} spent)")
    if outcome.interrupted:
        return Stop(INTERRUPTED, "stopped by Ctrl-C or SIGTERM")
    return None


class ExperimentStoppedError(ExperimentRunnerError):
    """A worker (not a resume) found the experiment stopped by a user, its budget or a failure: it stays stopped."""


def begin_run(store: Store, lease: Lease, runner: str, resume: bool = True) -> None:
    """Start this worker's part of the run (under its worker row). `resume` (run, resume, a server): clear the
    last stop, and record who runs it unless it joins other live workers. A plain worker leaves a stopped
    experiment alone (`ExperimentStoppedError`)."""
    with store.write() as session:
        conn = session.connection()
        lease.check(conn)
        stop = claims.lock_experiment(conn, lease.experiment_id)
        if not resume:
            if stop is not None:
                raise ExperimentStoppedError(f"experiment {lease.experiment_id} is stopped ({stop}); it waits for resume")
            return
        if len(reap_dead(conn, lease.experiment_id, lease.timings)) > 1:  # joining: keep who started it
            q.clear_stop(conn, lease.experiment_id)
        else:
            q.start_run(conn, lease.experiment_id, runner)


def prepare_run(store: Store, experiment_id: str, runner: str) -> Experiment:
    """`run --workers`: what `begin_run` records, done by the command before it starts its worker processes
    (which never clear a stop themselves); the experiment as it will run."""
    with store.write() as session:
        conn = session.connection()
        claims.lock_experiment(conn, experiment_id)
        if reap_dead(conn, experiment_id, LeaseTimings.from_env()):
            q.clear_stop(conn, experiment_id)
        else:
            q.start_run(conn, experiment_id, runner)
        return q.require_experiment(session, experiment_id)


def end_run(store: Store, lease: Lease, stop: Stop | None) -> None:
    """End this worker's part of the run in one transaction: its claims back to the pool (items in progress to
    `pending`), then, as the last live worker, why the run stopped and `completed_at` when nothing is left. A
    stop that concerns the whole experiment (its budget, a systematic failure) is recorded even while other
    workers go on, so they take no new items; a Ctrl-C stops only this process then. A worker that lost its
    row, or a store that fails now, writes nothing: the dead row then tells the story."""
    stamp = now()
    try:
        with store.write() as session:
            conn = session.connection()
            lease.check(conn)
            claims.lock_experiment(conn, lease.experiment_id)
            claims.release(conn, lease.owner, stamp)
            last = all(row.id == lease.owner for row in reap_dead(conn, lease.experiment_id, lease.timings))
            if last and stop is not None:  # a provider batch run's items in progress (they hold no claim)
                claims.reopen_unclaimed(conn, lease.experiment_id, stamp)
            if stop is not None and (last or stop.reason in EXPERIMENT_WIDE):
                q.stop_run(conn, lease.experiment_id, stop.reason, stop.detail, stamp)
            runs.finish_experiment(conn, lease.experiment_id, stamp)
    except (LeaseLostError, StoreError) as exc:
        log.warning("experiment %s: the end of the run was not recorded: %s", lease.experiment_id, exc)


def budget_left(store: Store, experiment: Experiment) -> BudgetLeft:
    """The experiment's budget and what its stored results have spent (replies it copied cost nothing here)."""
    if experiment.max_cost_usd is None:
        return BudgetLeft(None, 0.0)
    with store.read() as session:
        spent = q.spent_usd(session.connection(), experiment.id, replayed=not experiment.pass_through)
    return BudgetLeft(experiment.max_cost_usd, spent)


def server_resumable(store: Store) -> list[str]:
    """Unfinished experiments a server was running when it went down, oldest first."""
    with store.read() as session:
        return q.server_resumable_ids(session.connection())


@dataclass
class RunRecord:
    """What `recorded_run` writes when the run ends: the body sets `stop` (None: nothing left to stop for)."""

    stop: Stop | None = field(default_factory=lambda: Stop(FAILED, "the run ended unexpectedly"))


@asynccontextmanager
async def recorded_run(
    store: Store, lease: Lease, runner: str, interrupted: str = "stopped by Ctrl-C", resume: bool = True
) -> AsyncIterator[RunRecord]:
    """Hold a run between `begin_run` and `end_run`, recording why it stopped, and release its lease.

    A cancellation is the server shutting down, Ctrl-C an interruption (`interrupted` says what it left),
    any other error a failed run; a run that lost its lease records nothing (its new holder does)."""
    record, keep = RunRecord(), True
    try:
        await anyio.to_thread.run_sync(begin_run, store, lease, runner, resume)
        yield record
    except anyio.get_cancelled_exc_class():
        record.stop = Stop(SHUTDOWN, "the server running it stopped")
        raise
    except KeyboardInterrupt:
        record.stop = Stop(INTERRUPTED, interrupted)
        raise
    except (LeaseLostError, ExperimentStoppedError):
        keep = False
        raise
    except Exception as exc:
        record.stop = Stop(FAILED, str(exc))
        raise
    finally:
        with anyio.CancelScope(shield=True):
            if keep:
                await anyio.to_thread.run_sync(end_run, store, lease, record.stop)
            await anyio.to_thread.run_sync(lease.release)


def first_error(group: BaseExceptionGroup) -> BaseException:
    """The exception to report from a task group's failure: ours first, then any other, never a cancellation."""
    leaves: list[BaseException] = []
    pending: list[BaseException] = [group]
    while pending:
        exc = pending.pop(0)
        if isinstance(exc, BaseExceptionGroup):
            pending.extend(exc.exceptions)
        elif not isinstance(exc, anyio.get_cancelled_exc_class()):
            leaves.append(exc)
    ours = [e for e in leaves if isinstance(e, ExperimentRunnerError)]
    return (ours or leaves or [group])[0]
