"""Experiments and their items: add, look up, page through, list unfinished, run state, delete.

`Experiment` rows are read and added through the ORM on a `Session` (callers want the typed object with
its JSON columns decoded); everything else is `text()` on a `Connection`, as in the rest of `queries`.
"""

import json
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from sqlalchemy import Connection, Row, text
from sqlmodel import Session, col, select

from experiment_runner.conversation import JSONObject
from experiment_runner.errors import NotFoundError
from experiment_runner.store.queries.common import PerDialect, execute_in, expanding
from experiment_runner.store.queries.rows import ItemRow
from experiment_runner.store.tables import Experiment

_INSERT_ITEM = text(
    """
    INSERT INTO item (id, experiment_id, position, source_conversation_id, result_conversation_id, status,
                      evaluations_expected, created_at, updated_at)
    VALUES (:id, :experiment_id, :position, :source_conversation_id, :result_conversation_id, :status,
            :evaluations_expected, :created_at, :updated_at)
    """
)

_ITEMS = text(
    """
    SELECT id, position, source_conversation_id, result_conversation_id, status, evaluations_expected
    FROM item WHERE experiment_id = :experiment ORDER BY position
    """
)

_COMPLETED_PAIRS = text(
    """
    SELECT source_conversation_id AS source, result_conversation_id AS result FROM item
    WHERE experiment_id = :experiment AND status = 'completed' ORDER BY position
    """
)

_SERVER_RESUMABLE = text(
    """
    SELECT id FROM experiment
    WHERE runner = 'server' AND (stop_reason IS NULL OR stop_reason = 'shutdown')
      AND id IN (SELECT experiment_id FROM item WHERE status IN ('pending', 'in_progress'))
    ORDER BY created_at, id
    """
)

_START_RUN = text("UPDATE experiment SET runner = :runner, stop_reason = NULL, stop_detail = NULL, stopped_at = NULL WHERE id = :experiment")

_CLEAR_STOP = text("UPDATE experiment SET stop_reason = NULL, stop_detail = NULL, stopped_at = NULL WHERE id = :experiment")

_STOP_RUN = text(
    """
    UPDATE experiment SET stop_reason = :reason, stop_detail = :detail, stopped_at = :stamp
    WHERE id = :experiment AND EXISTS (SELECT 1 FROM item WHERE experiment_id = :experiment AND status IN ('pending', 'in_progress'))
    """
)

_SPENT = PerDialect(
    lambda d: text(
        f"""
    SELECT
      (SELECT coalesce(sum({d.json_number('m.generation', 'cost_usd')}), 0) FROM item i
       JOIN message m ON m.conversation_id = i.result_conversation_id
       WHERE i.experiment_id = :experiment AND :replayed AND m.sequence_number =
         (SELECT max(sequence_number) FROM message WHERE conversation_id = i.result_conversation_id))
      + (SELECT coalesce(sum(e.cost_usd), 0) FROM evaluation e JOIN item i ON i.id = e.item_id WHERE i.experiment_id = :experiment)
    """
    )
)

_RECENT_ERRORS = text(
    """
    SELECT id, position, error_message FROM item
    WHERE experiment_id = :experiment AND status = 'failed'
    ORDER BY updated_at DESC, position DESC LIMIT :limit
    """
)

_IDS_WITH_PREFIX = text("SELECT id FROM experiment WHERE substr(id, 1, length(:prefix)) = :prefix ORDER BY id LIMIT :limit")

_RESULT_IDS = text(
    "SELECT result_conversation_id FROM item WHERE experiment_id = :experiment AND result_conversation_id IS NOT NULL "
    "UNION SELECT id FROM conversation WHERE experiment_id = :experiment AND type = 'result' ORDER BY 1"
)
_ORPHANED_RESULTS = expanding(
    """
    SELECT c.id FROM conversation c
    WHERE c.id IN :ids AND c.type = 'result'
      AND NOT EXISTS (SELECT 1 FROM item i WHERE i.result_conversation_id = c.id)
    """,
    "ids",
)
_DELETE_ANNOTATIONS = text(
    "DELETE FROM annotation WHERE evaluation_id IN "
    "(SELECT e.id FROM evaluation e JOIN item i ON i.id = e.item_id WHERE i.experiment_id = :experiment)"
)
_DELETE_EVALUATIONS = text("DELETE FROM evaluation WHERE item_id IN (SELECT id FROM item WHERE experiment_id = :experiment)")
_DELETE_ITEMS = text("DELETE FROM item WHERE experiment_id = :experiment")
_DELETE_EXPERIMENT = text("DELETE FROM experiment WHERE id = :experiment")
_DELETE_MESSAGES = expanding("DELETE FROM message WHERE conversation_id IN :ids", "ids")
_DELETE_CONVERSATIONS = expanding("DELETE FROM conversation WHERE id IN :ids", "ids")


def get_experiment(session: Session, experiment_id: str) -> Experiment | None:
    """The experiment row (ORM), or None."""
    return session.get(Experiment, experiment_id)


def add_experiment(session: Session, experiment: Experiment) -> None:
    """Insert an experiment row (ORM) and flush it, so items can refer to it."""
    session.add(experiment)
    session.flush()


def experiment_page(session: Session, limit: int, before: tuple[str, str] | None = None) -> list[Experiment]:
    """Up to `limit` experiments newest first (created_at, then id), strictly before the `(created_at, id)` key."""
    query = select(Experiment).order_by(col(Experiment.created_at).desc(), col(Experiment.id).desc()).limit(limit)
    if before is not None:
        created_at, experiment_id = before
        query = query.where(
            (col(Experiment.created_at) < created_at)
            | ((col(Experiment.created_at) == created_at) & (col(Experiment.id) < experiment_id))
        )
    return list(session.exec(query).all())


def ids_with_prefix(conn: Connection, prefix: str, limit: int) -> list[str]:
    """Up to `limit` experiment ids that start with `prefix` (compared as text, so `%` and `_` are plain characters)."""
    return list(conn.execute(_IDS_WITH_PREFIX, {"prefix": prefix, "limit": limit}).scalars())


def insert_items(conn: Connection, rows: list[ItemRow]) -> None:
    """Insert items (every column of `_INSERT_ITEM`) in one executemany."""
    if rows:
        conn.execute(_INSERT_ITEM, rows)


def items(conn: Connection, experiment_id: str) -> list[Row[Any]]:
    """An experiment's items in position order: ids, position, conversations, status, evaluations expected."""
    return list(conn.execute(_ITEMS, {"experiment": experiment_id}).all())


def completed_pairs(conn: Connection, experiment_id: str) -> list[tuple[str, str | None]]:
    """`(source, result)` conversation ids of an experiment's completed items, in position order."""
    return [(r.source, r.result) for r in conn.execute(_COMPLETED_PAIRS, {"experiment": experiment_id})]


def server_resumable_ids(conn: Connection) -> list[str]:
    """Unfinished experiments a server was running when it went down (shut down or crashed), oldest first."""
    return list(conn.execute(_SERVER_RESUMABLE).scalars())


def start_run(conn: Connection, experiment_id: str, runner: str) -> None:
    """Record who runs the experiment now (`cli` or `server`) and clear the previous run's stop."""
    conn.execute(_START_RUN, {"experiment": experiment_id, "runner": runner})


def clear_stop(conn: Connection, experiment_id: str) -> None:
    """Clear the previous run's stop, keeping who runs it (a resume that joins other workers)."""
    conn.execute(_CLEAR_STOP, {"experiment": experiment_id})


def stop_run(conn: Connection, experiment_id: str, reason: str, detail: str, stamp: str) -> None:
    """Record why the run stopped early, if it left items unfinished."""
    conn.execute(_STOP_RUN, {"experiment": experiment_id, "reason": reason, "detail": detail, "stamp": stamp})


def spent_usd(conn: Connection, experiment_id: str, replayed: bool) -> float:
    """What the experiment's stored results cost: each result's final (replayed) reply, and every evaluation."""
    return float(conn.execute(_SPENT.on(conn), {"experiment": experiment_id, "replayed": replayed}).scalar_one())


_SET_SETTINGS = text(
    """
    UPDATE experiment SET api_base = :api_base, evaluator_api_base = :evaluator_api_base, max_cost_usd = :max_cost_usd,
                          setting_changes = :changes
    WHERE id = :experiment
    """
)


def set_settings(conn: Connection, experiment_id: str, values: Mapping[str, object], changes: Sequence[Mapping[str, object]]) -> None:
    """Store the endpoint and budget settings (`api_base`, `evaluator_api_base`, `max_cost_usd`) and the list of changes."""
    conn.execute(_SET_SETTINGS, {**values, "changes": json.dumps(changes), "experiment": experiment_id})


def recent_errors(conn: Connection, experiment_id: str, limit: int) -> list[Row[Any]]:
    """The latest failed items (`id, position, error_message`), most recently updated first."""
    return list(conn.execute(_RECENT_ERRORS, {"experiment": experiment_id, "limit": limit}).all())


class DeletedRows(NamedTuple):
    """How many rows of each kind `delete_experiment` removed."""

    annotations: int
    evaluations: int
    items: int
    result_conversations: int


def delete_experiment(conn: Connection, experiment_id: str) -> DeletedRows:
    """Delete an experiment's rows and every result conversation it created or uses that no other item points at (caller's transaction)."""
    params = {"experiment": experiment_id}
    results = list(conn.execute(_RESULT_IDS, params).scalars())
    counts = [conn.execute(statement, params).rowcount for statement in (_DELETE_ANNOTATIONS, _DELETE_EVALUATIONS, _DELETE_ITEMS)]
    conn.execute(_DELETE_EXPERIMENT, params)
    orphans = _orphaned_results(conn, results)
    execute_in(conn, _DELETE_MESSAGES, "ids", orphans)
    execute_in(conn, _DELETE_CONVERSATIONS, "ids", orphans)
    return DeletedRows(counts[0], counts[1], counts[2], len(orphans))


def _orphaned_results(conn: Connection, ids: Sequence[str]) -> list[str]:
    return [row.id for row in execute_in(conn, _ORPHANED_RESULTS, "ids", ids)]


_SET_STRUCTURED_OUTPUT = text("UPDATE experiment SET structured_output = :value WHERE id = :experiment")


def set_structured_output(conn: Connection, experiment_id: str, value: JSONObject) -> None:
    """Store the experiment's structured-output settings and the modes its models used."""
    conn.execute(_SET_STRUCTURED_OUTPUT, {"experiment": experiment_id, "value": json.dumps(value)})


def require_experiment(session: Session, experiment_id: str) -> Experiment:
    """The experiment row, or `NotFoundError` (the one place that says an id is unknown)."""
    experiment = get_experiment(session, experiment_id)
    if experiment is None:
        raise NotFoundError(f"no experiment with id {experiment_id!r}")
    return experiment
