"""Run leases: take, renew, release, and which experiments a live runner holds.

A lease is one `run_lease` row per experiment. `lease_holder` then `put_lease` must run in one
`Store.write()` transaction, so reading the holder and replacing a stale one is atomic: on SQLite the
transaction is `BEGIN IMMEDIATE` (one writer at a time); on PostgreSQL `lock_experiment` first locks the
experiment's row (`SELECT ... FOR UPDATE`), which another runner's `lock_experiment` waits for until this
transaction ends (the lease row itself may not exist yet, so it cannot be the lock).
"""

from typing import Any

from sqlalchemy import Connection, Row, text

from experiment_runner.store.queries.rows import LeaseRow

_LOCK_EXPERIMENT = text("SELECT id FROM experiment WHERE id = :experiment FOR UPDATE")

_HOLDER = text("SELECT owner, host, pid, acquired_at, heartbeat_at FROM run_lease WHERE experiment_id = :experiment")

_UPSERT = text(
    """
    INSERT INTO run_lease (experiment_id, owner, host, pid, acquired_at, heartbeat_at)
    VALUES (:experiment, :owner, :host, :pid, :acquired_at, :heartbeat)
    ON CONFLICT (experiment_id) DO UPDATE SET owner = excluded.owner, host = excluded.host, pid = excluded.pid,
        acquired_at = excluded.acquired_at, heartbeat_at = excluded.heartbeat_at
    """
)

_RENEW = text("UPDATE run_lease SET heartbeat_at = :heartbeat WHERE experiment_id = :experiment AND owner = :owner")

_RELEASE = text("DELETE FROM run_lease WHERE experiment_id = :experiment AND owner = :owner")

_LIVE = text("SELECT experiment_id FROM run_lease WHERE heartbeat_at >= :fresh_after ORDER BY experiment_id")


def lock_experiment(conn: Connection, experiment_id: str) -> None:
    """In a write transaction: hold the experiment against other runners until it ends (PostgreSQL row lock;
    SQLite's `BEGIN IMMEDIATE` holds the whole store already)."""
    if conn.dialect.name == "postgresql":
        conn.execute(_LOCK_EXPERIMENT, {"experiment": experiment_id})


def lease_holder(conn: Connection, experiment_id: str) -> Row[Any] | None:
    """The experiment's lease row (`owner, host, pid, acquired_at, heartbeat_at`), or None."""
    return conn.execute(_HOLDER, {"experiment": experiment_id}).first()


def put_lease(conn: Connection, experiment_id: str, lease: LeaseRow) -> None:
    """Make `lease` (`owner, host, pid, acquired_at, heartbeat`) the experiment's lease, replacing any other."""
    conn.execute(_UPSERT, {"experiment": experiment_id, **lease})


def renew_lease(conn: Connection, experiment_id: str, owner: str, heartbeat: float) -> bool:
    """Record a heartbeat; False when `owner` no longer holds the lease (another runner took it over)."""
    return conn.execute(_RENEW, {"experiment": experiment_id, "owner": owner, "heartbeat": heartbeat}).rowcount == 1


def release_lease(conn: Connection, experiment_id: str, owner: str) -> None:
    """Give the lease up (only if `owner` still holds it)."""
    conn.execute(_RELEASE, {"experiment": experiment_id, "owner": owner})


def live_leases(conn: Connection, fresh_after: float) -> set[str]:
    """Experiments whose lease was renewed at or after `fresh_after` (Unix seconds)."""
    return set(conn.execute(_LIVE, {"fresh_after": fresh_after}).scalars())
