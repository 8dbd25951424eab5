"""The run lease: at most one runner per experiment, across processes and hosts sharing the store.

A runner takes the experiment's lease in one write transaction (`BEGIN IMMEDIATE` on SQLite, the
experiment's row locked on PostgreSQL: `queries.leases.lock_experiment`) before it plans any work,
renews it every `heartbeat` seconds (and in every writer transaction, which fails with `LeaseLostError`
if another runner has taken it over), and releases it when the run ends. A lease not renewed for
`timeout` seconds is stale: its runner died (kill -9, power loss) or stalled, and the next runner takes
it over; so is a lease whose process is gone on this very host (`resume` right after a crash).
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
from experiment_runner.store.queries import leases as q
from experiment_runner.store.queries.rows import LeaseRow
from experiment_runner.store.timeutil import now

log = logging.getLogger(__name__)


def _seconds(name: str, default: float) -> float:
    try:
        return max(0.01, float(os.environ.get(name) or default))
    except ValueError:
        return default


@dataclass(frozen=True)
class LeaseTimings:
    """How often a runner renews its lease, and after how long without renewal it is stale."""

    heartbeat: float = 2.0
    timeout: float = 10.0

    @classmethod
    def from_env(cls) -> "LeaseTimings":
        """The timings from `EXPERIMENT_RUNNER_LEASE_HEARTBEAT` / `EXPERIMENT_RUNNER_LEASE_TIMEOUT`."""
        return cls(_seconds("EXPERIMENT_RUNNER_LEASE_HEARTBEAT", 2.0), _seconds("EXPERIMENT_RUNNER_LEASE_TIMEOUT", 10.0))


@dataclass
class Lease:
    """This runner's hold on one experiment."""

    store: Store
    experiment_id: str
    timings: LeaseTimings = field(default_factory=LeaseTimings.from_env)
    owner: str = field(default_factory=lambda: uuid.uuid4().hex)

    def check(self, conn: Connection) -> None:
        """Renew the lease inside the caller's write transaction; `LeaseLostError` if another runner holds it now."""
        if not q.renew_lease(conn, self.experiment_id, self.owner, time.time()):
            raise LeaseLostError(
                f"experiment {self.experiment_id}: another runner took the lease over (this one stalled for over "
                f"{self.timings.timeout:g} s); this run stops, the other one goes on"
            )

    def renew(self) -> None:
        """Renew the lease in a transaction of its own."""
        with self.store.write() as session:
            self.check(session.connection())

    def release(self) -> None:
        """Give the lease up; a store fault here only leaves a lease that goes stale."""
        try:
            with self.store.write() as session:
                q.release_lease(session.connection(), self.experiment_id, self.owner)
        except StoreError:
            pass

    async def keep_alive(self) -> None:
        """Renew every `heartbeat` seconds until cancelled; raises `LeaseLostError` if the lease was taken over."""
        while True:
            await anyio.sleep(self.timings.heartbeat)
            await anyio.to_thread.run_sync(self.renew)


def acquire(store: Store, experiment_id: str, timings: LeaseTimings | None = None) -> Lease:
    """Take the experiment's lease; `ExperimentBusyError` naming the holder if a live runner has it."""
    lease = Lease(store, experiment_id, timings or LeaseTimings.from_env())
    row: LeaseRow = {"owner": lease.owner, "host": socket.gethostname(), "pid": os.getpid(), "acquired_at": now(), "heartbeat": time.time()}
    with store.write() as session:
        conn = session.connection()
        stale = ensure_free(conn, experiment_id, lease.timings)
        q.put_lease(conn, experiment_id, row)
    if stale is not None:
        log.info("experiment %s: took over the stale lease of pid %s on %s (last renewed %.0f s ago)",
                 experiment_id, stale.pid, stale.host, time.time() - stale.heartbeat_at)
    return lease


def ensure_free(conn: Connection, experiment_id: str, timings: LeaseTimings | None = None) -> Any:
    """Inside the caller's write transaction: `ExperimentBusyError` if a live runner holds the lease.

    What may be done under the lease (run it, change its settings, delete it) is then safe until the
    transaction ends; a stale lease (a crashed runner) does not count, and is returned (else None)."""
    q.lock_experiment(conn, experiment_id)
    holder = q.lease_holder(conn, experiment_id)
    if holder is not None and is_live(holder, timings or LeaseTimings.from_env()):
        raise ExperimentBusyError(experiment_id, holder.pid, holder.host, holder.acquired_at)
    return holder


def is_live(holder: Any, timings: LeaseTimings) -> bool:
    """Whether a lease row's runner is alive: renewed within the timeout, and its process exists if on this host."""
    if holder.heartbeat_at < time.time() - timings.timeout:
        return False
    return holder.host != socket.gethostname() or _alive(holder.pid)


def holder_state(store: Store, experiment_id: str, timings: LeaseTimings | None = None) -> str | None:
    """`running` while a live runner holds the lease, `crashed` when a runner died holding it, else None."""
    with store.read() as session:
        holder = q.lease_holder(session.connection(), experiment_id)
    if holder is None:
        return None
    return "running" if is_live(holder, timings or LeaseTimings.from_env()) else "crashed"


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
    """Experiments a live runner (any process) holds now."""
    with store.read() as session:
        return q.live_leases(session.connection(), time.time() - (timings or LeaseTimings.from_env()).timeout)
