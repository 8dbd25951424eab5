"""Provider batch jobs: the job rows, the request-to-item mapping, and what is still open.

A job and its requests are inserted in one transaction as soon as the provider has answered the create
call, so a later process (`resume`) finds them and collects instead of submitting again.
"""

from typing import Any

from sqlalchemy import Connection, Row, text

from experiment_runner.store.queries.rows import BatchJobRow, BatchRequestRow, RequestOutcome

_INSERT_JOB = text(
    """
    INSERT INTO batch_job (id, experiment_id, role, model, api_base, provider, provider_batch_id, input_file_id,
                           status, request_count, created_at, updated_at)
    VALUES (:id, :experiment_id, :role, :model, :api_base, :provider, :provider_batch_id, :input_file_id,
            :status, :request_count, :created_at, :updated_at)
    """
)

_INSERT_REQUEST = text(
    """
    INSERT INTO batch_request (batch_id, custom_id, item_id, mode, cache_key, body, status)
    VALUES (:batch_id, :custom_id, :item_id, :mode, :cache_key, :body, 'submitted')
    """
)

_OPEN_JOBS = text(
    """
    SELECT id, role, model, api_base, provider, provider_batch_id, status, request_count, created_at
    FROM batch_job WHERE experiment_id = :experiment AND collected_at IS NULL ORDER BY created_at, id
    """
)

_JOBS = text(
    """
    SELECT id, role, model, provider, provider_batch_id, status, request_count, created_at, updated_at, collected_at, error_message
    FROM batch_job WHERE experiment_id = :experiment ORDER BY created_at, id
    """
)

_HAS_JOBS = text("SELECT 1 FROM batch_job WHERE experiment_id = :experiment LIMIT 1")

_REQUESTS = text("SELECT custom_id, item_id, mode, cache_key, status FROM batch_request WHERE batch_id = :batch ORDER BY custom_id")

_OPEN_ITEMS = text(
    """
    SELECT r.item_id FROM batch_request r JOIN batch_job j ON j.id = r.batch_id
    WHERE j.experiment_id = :experiment AND j.collected_at IS NULL AND r.status = 'submitted'
    """
)

_SET_STATUS = text("UPDATE batch_job SET status = :status, updated_at = :stamp, error_message = coalesce(:error, error_message) WHERE id = :id")

_COLLECTED = text("UPDATE batch_job SET status = :status, updated_at = :stamp, collected_at = :stamp, error_message = :error WHERE id = :id")

_SET_REQUESTS = text("UPDATE batch_request SET status = :status WHERE batch_id = :batch AND custom_id = :custom_id")


def insert_job(conn: Connection, job: BatchJobRow, requests: list[BatchRequestRow]) -> None:
    """Store a submitted job and its requests (`custom_id, item_id, mode, cache_key, body` encoded)."""
    conn.execute(_INSERT_JOB, job)
    if requests:
        conn.execute(_INSERT_REQUEST, [{**r, "batch_id": job["id"]} for r in requests])


def open_jobs(conn: Connection, experiment_id: str) -> list[Row[Any]]:
    """The experiment's jobs not collected yet, oldest first."""
    return list(conn.execute(_OPEN_JOBS, {"experiment": experiment_id}).all())


def jobs(conn: Connection, experiment_id: str) -> list[Row[Any]]:
    """Every job of the experiment, oldest first (for `show`)."""
    return list(conn.execute(_JOBS, {"experiment": experiment_id}).all())


def has_jobs(conn: Connection, experiment_id: str) -> bool:
    """Whether the experiment was ever run with batch jobs."""
    return conn.execute(_HAS_JOBS, {"experiment": experiment_id}).first() is not None


def requests(conn: Connection, batch_id: str) -> list[Row[Any]]:
    """A job's requests: `custom_id, item_id, mode, cache_key, status`."""
    return list(conn.execute(_REQUESTS, {"batch": batch_id}).all())


def open_item_ids(conn: Connection, experiment_id: str) -> set[str]:
    """Items with a request in a job that is not collected yet (they must not be submitted again)."""
    return {row.item_id for row in conn.execute(_OPEN_ITEMS, {"experiment": experiment_id})}


def set_status(conn: Connection, job_id: str, status: str, stamp: str, error: str | None = None) -> None:
    """Record the provider's latest status of a job."""
    conn.execute(_SET_STATUS, {"id": job_id, "status": status, "stamp": stamp, "error": error})


def mark_collected(conn: Connection, job_id: str, status: str, stamp: str, error: str | None, outcomes: list[RequestOutcome]) -> None:
    """A job is collected: its final status, and each request's outcome (`custom_id`, `status`: done|failed|resubmitted)."""
    conn.execute(_COLLECTED, {"id": job_id, "status": status, "stamp": stamp, "error": error})
    if outcomes:
        conn.execute(_SET_REQUESTS, [{**o, "batch": job_id} for o in outcomes])
