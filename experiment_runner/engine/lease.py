"""Who works on an experiment: one `worker` row per process, kept alive by a heartbeat (issue 23).

A runner (`run`, `resume`, `reevaluate`, `worker`, a server's background run) registers a worker row before
it claims any item, renews it every `heartbeat` seconds and in every writer transaction (which fails with
`LeaseLostError` once the row is gone), and removes it when it ends. Several live workers may share one
experiment: each claims its own items (`engine.workplan.claim_work`). A worker not renewed for `timeout`
seconds is stale (its process died or stalled), and so is one whose process is gone on this very host:
the next worker that registers or claims removes it and its items go back to the pool.
What must stay single checks `ensure_free` in its own write transaction (`delete`, `resume` changing settings,
a provider batch run, which registers `exclusive`): while any live worker exists it is `ExperimentBusyError`.
Timings: env `EXPERIMENT_RUNNER_LEASE_HEARTBEAT` (default 2 s), `EXPERIMENT_RUNNER_LEASE_TIMEOUT` (default 10 s).
"""

import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import anyio
from sqlalchemy import Connection

from experiment_runner.errors import ExperimentBusyError, LeaseLostError, StoreError
from experiment_runner.store import Store
from experiment_runner.store.queries import claims as q
from experiment_runner.store.queries.rows import WorkerRow
from experiment_runner.store.timeutil import now

log = logging.getLogger(__name__)

_HELD_HERE: set[str] = set()  # this process's live worker ids: its own rows left by a run that failed are dead


def _seconds(name: str, default: float) -> float:
    try:
        return max(0.01, float(os.environ.get(name) or default))
    except ValueError:
        return default


@dataclass(frozen=True)
class LeaseTimings:
    """How often a worker renews its row, and after how long without renewal it is stale."""

    heartbeat: float = 2.0
    timeout: float = 10.0

    @classmethod
    def from_env(cls) -> "LeaseTimings":
        """The timings from `EXPERIMENT_RUNNER_LEASE_HEARTBEAT` / `EXPERIMENT_RUNNER_LEASE_TIMEOUT`."""
        return cls(_seconds("EXPERIMENT_RUNNER_LEASE_HEARTBEAT", 2.0), _seconds("EXPERIMENT_RUNNER_LEASE_TIMEOUT", 10.0))


@dataclass
class Lease:
    """This process's worker row on one experiment (`owner` is its id, the value of its items' `claimed_by`)."""

    store: Store
    experiment_id: str
    timings: LeaseTimings = field(default_factory=LeaseTimings.from_env)
    owner: str = field(default_factory=lambda: uuid.uuid4().hex)
    claims: bool = False  # it claims items: the writer fences each item's rows on the claim
    reserved_usd: float = 0.0  # the budget reserved for its items under way, published with each heartbeat

    def check(self, conn: Connection) -> None:
        """Renew the row inside the caller's write transaction; `LeaseLostError` if it was reaped meanwhile."""
        if not q.renew(conn, self.owner, time.time(), self.reserved_usd):
            raise LeaseLostError(
                f"experiment {self.experiment_id}: another runner took the lease over (this one stalled for over "
                f"{self.timings.timeout:g} s); this run stops, the other one goes on"
            )

    def renew(self) -> None:
        """Renew the row in a transaction of its own."""
        with self.store.write() as session:
            self.check(session.connection())

    def release(self) -> None:
        """Give back its items and remove its row; a store fault here only leaves a row that goes stale."""
        _HELD_HERE.discard(self.owner)
        try:
            with self.store.write() as session:
                q.release(session.connection(), self.owner, now())
        except StoreError:
            pass

    async def keep_alive(self) -> None:
        """Renew every `heartbeat` seconds until cancelled; raises `LeaseLostError` if the row was reaped."""
        while True:
            await anyio.sleep(self.timings.heartbeat)
            await anyio.to_thread.run_sync(self.renew)


def acquire(store: Store, experiment_id: str, timings: LeaseTimings | None = None, *, exclusive: bool = False) -> Lease:
    """Register this process as a worker of the experiment (removing dead ones first). `exclusive` (a provider
    batch run): `ExperimentBusyError` naming the holder while another live worker exists."""
    lease = Lease(store, experiment_id, timings or LeaseTimings.from_env())
    row: WorkerRow = {"id": lease.owner, "experiment": experiment_id, "host": socket.gethostname(), "pid": os.getpid(),
           "started_at": now(), "heartbeat": time.time()}
    with store.write() as session:
        conn = session.connection()
        q.lock_experiment(conn, experiment_id)
        live = reap_dead(conn, experiment_id, lease.timings)
        if exclusive and live:
            raise _busy(experiment_id, live[0])
        q.register(conn, row)
    _HELD_HERE.add(lease.owner)
    return lease


def reap_dead(conn: Connection, experiment_id: str, timings: LeaseTimings) -> list[Any]:
    """Inside the caller's write transaction: remove the experiment's dead workers (their items go back to the
    pool, logged naming pid and host) and return the live ones."""
    rows = q.workers(conn, experiment_id)
    dead = [row for row in rows if not is_live(row, timings)]
    if dead:
        q.reap(conn, [row.id for row in dead], now())
        for row in dead:
            log.info("experiment %s: took over the stale lease of pid %s on %s (last renewed %.0f s ago)",
                     experiment_id, row.pid, row.host, time.time() - row.heartbeat_at)
    return [row for row in rows if is_live(row, timings)]


def _busy(experiment_id: str, holder: Any) -> ExperimentBusyError:
    return ExperimentBusyError(experiment_id, holder.pid, holder.host, holder.acquired_at)


def ensure_free(conn: Connection, experiment_id: str, timings: LeaseTimings | None = None) -> None:
    """Inside the caller's write transaction: `ExperimentBusyError` naming the oldest live worker, if any.

    What must not happen under a run (delete it, change its settings) is then safe until the transaction
    ends; dead workers do not count (their rows go with a deleted experiment)."""
    q.lock_experiment(conn, experiment_id)  # PostgreSQL: a worker registering now waits for this transaction
    live = [row for row in q.workers(conn, experiment_id) if is_live(row, timings or LeaseTimings.from_env())]
    if live:
        raise _busy(experiment_id, live[0])


def is_live(holder: Any, timings: LeaseTimings) -> bool:
    """Whether a worker row's process is alive: renewed within the timeout, and its process exists if on this host."""
    if holder.heartbeat_at < time.time() - timings.timeout:
        return False
    if holder.host != socket.gethostname():
        return True
    return holder.id in _HELD_HERE if holder.pid == os.getpid() else _alive(holder.pid)


def holder_state(store: Store, experiment_id: str, timings: LeaseTimings | None = None) -> str | None:
    """`running` while a live worker works on it, `crashed` when only dead workers' rows are left, else None."""
    with store.read() as session:
        rows = q.workers(session.connection(), experiment_id)
    if not rows:
        return None
    return "running" if any(is_live(row, timings or LeaseTimings.from_env()) for row in rows) else "crashed"


def _alive(pid: int) -> bool:
    """Whether a process with this id exists on this host (one we may not signal counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def leased_experiments(store: Store, timings: LeaseTimings | None = None) -> set[str]:
    """Experiments a live worker (any process) works on now."""
    with store.read() as session:
        return q.live_experiments(session.connection(), time.time() - (timings or LeaseTimings.from_env()).timeout)
