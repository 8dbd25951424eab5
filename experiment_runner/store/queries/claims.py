"""Workers and item claims (issue 23): register, heartbeat, reap, claim a page of items, fence writes, release.

A `worker` row is one process working on one experiment; an item it claimed names it in `item.claimed_by`.
Every function runs inside the caller's `Store.write()` transaction. On SQLite that transaction is
`BEGIN IMMEDIATE`, so reading the unclaimed items and claiming them is atomic. On PostgreSQL the same
statements run under row locks instead: the page query ends in `FOR UPDATE OF i SKIP LOCKED` (concurrent
claimers skip each other's rows rather than wait), the fence and the experiment lock in `FOR UPDATE`.
That suffix is the only dialect branch (`_locking`); parameters PostgreSQL cannot type from their context
(`:experiment IS NULL`, a bare `:evaluates`) are cast.
"""

from typing import Any

from sqlalchemy import Connection, Row, text

from experiment_runner.store.queries.common import execute_in, expanding
from experiment_runner.store.queries.rows import WorkerRow


def _postgres(conn: Connection) -> bool:
    return conn.dialect.name == "postgresql"


def _locking(conn: Connection, clause: str) -> str:
    """` FOR UPDATE ...` on PostgreSQL (row locks), nothing on SQLite (the write transaction holds the file lock)."""
    return f" {clause}" if _postgres(conn) else ""


_REGISTER = text(
    """
    INSERT INTO worker (id, experiment_id, host, pid, started_at, heartbeat_at, reserved_usd)
    VALUES (:id, :experiment, :host, :pid, :started_at, :heartbeat, 0)
    """
)
_RENEW = text("UPDATE worker SET heartbeat_at = :heartbeat, reserved_usd = :reserved WHERE id = :worker")
_REMOVE = text("DELETE FROM worker WHERE id = :worker")
_WORKERS = text(
    "SELECT id, host, pid, started_at AS acquired_at, heartbeat_at, reserved_usd FROM worker "
    "WHERE experiment_id = :experiment ORDER BY started_at, id"
)
_REMOVE_MANY = expanding("DELETE FROM worker WHERE id IN :ids", "ids")
_RELEASE_MANY = expanding(
    """
    UPDATE item SET claimed_by = NULL, claimed_at = NULL,
                    updated_at = CASE WHEN status = 'in_progress' THEN :stamp ELSE updated_at END,
                    status = CASE WHEN status = 'in_progress' THEN 'pending' ELSE status END
    WHERE claimed_by IN :ids
    """,
    "ids",
)
_REOPEN_UNCLAIMED = text(
    """
    UPDATE item SET status = 'pending', updated_at = :stamp
    WHERE experiment_id = :experiment AND status = 'in_progress' AND claimed_by IS NULL
    """
)
_LIVE_EXPERIMENTS = text("SELECT DISTINCT experiment_id FROM worker WHERE heartbeat_at >= :fresh_after ORDER BY experiment_id")
_OPEN_EXPERIMENTS = text(
    """
    SELECT e.id FROM experiment e
    WHERE e.stop_reason IS NULL AND (CAST(:experiment AS TEXT) IS NULL OR e.id = :experiment)
      AND NOT EXISTS (SELECT 1 FROM batch_job b WHERE b.experiment_id = e.id)
      AND EXISTS (SELECT 1 FROM item i WHERE i.experiment_id = e.id AND i.status IN ('pending', 'in_progress'))
    ORDER BY e.created_at, e.id
    """
)
_STOP_REASON = "SELECT stop_reason FROM experiment WHERE id = :experiment"

# What is still to do for an experiment, as `engine.workplan` reads it: unfinished items, completed ones missing
# their evaluation, and (with `retry_before`, a stamp) items that failed, or whose evaluation failed, before it.
_TO_DO = """
    (i.status IN ('pending', 'in_progress')
     OR (i.status = 'completed' AND CAST(:evaluates AS BOOLEAN) AND i.result_conversation_id IS NOT NULL
         AND (e.status IS NULL OR (e.status = 'failed' AND i.updated_at < :retry_before)))
     OR (i.status = 'failed' AND i.updated_at < :retry_before))
"""
_PAGE = f"""
    SELECT i.id, i.status, i.source_conversation_id AS source, i.result_conversation_id AS result, e.status AS evaluation
    FROM item i LEFT JOIN evaluation e ON e.item_id = i.id
    WHERE i.experiment_id = :experiment AND i.claimed_by IS NULL AND {_TO_DO}
    ORDER BY i.position LIMIT :page
"""
_COUNT_TO_DO = text(f"SELECT count(*) FROM item i LEFT JOIN evaluation e ON e.item_id = i.id WHERE i.experiment_id = :experiment AND {_TO_DO}")
_HELD_ELSEWHERE = text(
    f"SELECT count(*) FROM item i LEFT JOIN evaluation e ON e.item_id = i.id WHERE i.experiment_id = :experiment "
    f"AND i.claimed_by IS NOT NULL AND i.claimed_by != :worker AND {_TO_DO}"
)
_CLAIM = expanding("UPDATE item SET claimed_by = :worker, claimed_at = :stamp WHERE id IN :ids AND claimed_by IS NULL", "ids")
_HELD = "SELECT id FROM item WHERE id IN :ids AND claimed_by = :worker"


def register(conn: Connection, worker: WorkerRow) -> None:
    """Add a worker row (`id, experiment, host, pid, started_at, heartbeat`)."""
    conn.execute(_REGISTER, worker)


def renew(conn: Connection, worker_id: str, heartbeat: float, reserved_usd: float) -> bool:
    """Record a heartbeat and the budget the worker has reserved; False when its row is gone (it was reaped)."""
    return conn.execute(_RENEW, {"worker": worker_id, "heartbeat": heartbeat, "reserved": reserved_usd}).rowcount == 1


def remove(conn: Connection, worker_id: str) -> None:
    """Delete the worker's row (its claims are released first, by `release`)."""
    conn.execute(_REMOVE, {"worker": worker_id})


def workers(conn: Connection, experiment_id: str) -> list[Row[Any]]:
    """The experiment's worker rows (`id, host, pid, acquired_at, heartbeat_at, reserved_usd`), oldest first."""
    return list(conn.execute(_WORKERS, {"experiment": experiment_id}).all())


def reap(conn: Connection, worker_ids: list[str], stamp: str) -> None:
    """Remove dead workers and give their items back: unclaimed, and `pending` where they were in progress."""
    execute_in(conn, _RELEASE_MANY, "ids", worker_ids, {"stamp": stamp})
    execute_in(conn, _REMOVE_MANY, "ids", worker_ids)


def release(conn: Connection, worker_id: str, stamp: str) -> None:
    """Give back every item the worker holds (those in progress become `pending` again)."""
    reap(conn, [worker_id], stamp)


def reopen_unclaimed(conn: Connection, experiment_id: str, stamp: str) -> None:
    """Items left `in_progress` with no claim (a provider batch run's, an older release's) back to `pending`."""
    conn.execute(_REOPEN_UNCLAIMED, {"experiment": experiment_id, "stamp": stamp})


def lock_experiment(conn: Connection, experiment_id: str, lock: bool = True) -> str | None:
    """The experiment's `stop_reason`, read with the experiment row locked until the transaction ends (PostgreSQL;
    on SQLite the write transaction already excludes every other writer); `lock=False` only reads it."""
    row = conn.execute(text(_STOP_REASON + (_locking(conn, "FOR NO KEY UPDATE") if lock else "")), {"experiment": experiment_id}).first()
    return None if row is None else row.stop_reason


def claim_page(
    conn: Connection, experiment_id: str, worker_id: str, page: int, *, evaluates: bool, retry_before: str | None, stamp: str
) -> list[Row[Any]]:
    """Claim up to `page` unclaimed items that still have work, in position order; their rows
    (`id, status, source, result, evaluation`)."""
    params = {"experiment": experiment_id, "page": page, "evaluates": evaluates, "retry_before": retry_before}
    rows = list(conn.execute(text(_PAGE + _locking(conn, "FOR UPDATE OF i SKIP LOCKED")), params).all())
    if rows:
        execute_in(conn, _CLAIM, "ids", [r.id for r in rows], {"worker": worker_id, "stamp": stamp})
    return rows


def count_to_do(conn: Connection, experiment_id: str, *, evaluates: bool, retry_before: str | None) -> int:
    """How many items still have work (claimed or not), by the page query's rule."""
    params = {"experiment": experiment_id, "evaluates": evaluates, "retry_before": retry_before}
    return int(conn.execute(_COUNT_TO_DO, params).scalar_one())


def held_elsewhere(conn: Connection, experiment_id: str, worker_id: str, *, evaluates: bool, retry_before: str | None) -> int:
    """How many items with work left other workers hold."""
    params = {"experiment": experiment_id, "worker": worker_id, "evaluates": evaluates, "retry_before": retry_before}
    return int(conn.execute(_HELD_ELSEWHERE, params).scalar_one())


def held(conn: Connection, worker_id: str, item_ids: list[str]) -> set[str]:
    """The fence: which of `item_ids` the worker still holds (locked on PostgreSQL until the transaction ends)."""
    statement = expanding(_HELD + _locking(conn, "FOR UPDATE"), "ids")
    return {row.id for row in execute_in(conn, statement, "ids", list(dict.fromkeys(item_ids)), {"worker": worker_id})}


def open_experiments(conn: Connection, experiment_id: str | None = None) -> list[str]:
    """Experiments a worker may work on (oldest first): unfinished, not stopped, not run as provider batch jobs."""
    return list(conn.execute(_OPEN_EXPERIMENTS, {"experiment": experiment_id}).scalars())


def live_experiments(conn: Connection, fresh_after: float) -> set[str]:
    """Experiments with a worker that renewed its heartbeat at or after `fresh_after` (Unix seconds)."""
    return set(conn.execute(_LIVE_EXPERIMENTS, {"fresh_after": fresh_after}).scalars())
