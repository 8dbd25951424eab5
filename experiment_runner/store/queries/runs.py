"""What a run reads to plan its work, and every statement its single writer executes.

The writer's functions take a batch of rows and run one `executemany` each, so a batch of events costs a
handful of statements; tests/factories.py builds finished experiments through them (via the writer).
"""

from typing import Any

from sqlalchemy import Connection, Row, text

from experiment_runner.store.queries.common import execute_in, expanding
from experiment_runner.store.queries.rows import AnnotationRow, EvaluationRow, ItemUpdate, StartRow

_WORK_ITEMS = text(
    """
    SELECT i.id, i.status, i.source_conversation_id AS source, i.result_conversation_id AS result,
           e.status AS evaluation
    FROM item i LEFT JOIN evaluation e ON e.item_id = i.id
    WHERE i.experiment_id = :experiment ORDER BY i.position
    """
)

_START_ITEMS = text("UPDATE item SET status = 'in_progress', error_message = NULL, updated_at = :stamp WHERE id = :item")

_UPDATE_ITEMS = text(
    """
    UPDATE item SET status = :status, error_message = :error,
                    result_conversation_id = coalesce(:result, result_conversation_id), updated_at = :stamp
    WHERE id = :item
    """
)

_DELETE_EVALUATIONS = expanding("DELETE FROM evaluation WHERE item_id IN :ids", "ids")
_RESULT_IDS = expanding("SELECT id, result_conversation_id AS result FROM item WHERE id IN :ids AND result_conversation_id IS NOT NULL", "ids")
_DELETE_UNREFERENCED = expanding(
    """
    DELETE FROM conversation WHERE id IN :ids AND type = 'result'
      AND NOT EXISTS (SELECT 1 FROM item i WHERE i.result_conversation_id = conversation.id)
    """,
    "ids",
)
_FINAL_MESSAGES = expanding(
    """
    SELECT i.id, (SELECT m.id FROM message m WHERE m.conversation_id = i.result_conversation_id
                  ORDER BY m.sequence_number DESC LIMIT 1) AS message_id
    FROM item i WHERE i.id IN :ids
    """,
    "ids",
)

_INSERT_EVALUATION = text(
    """
    INSERT INTO evaluation (id, item_id, message_id, status, model, input_tokens, output_tokens,
                            detection_duration_ms, total_duration_ms, error_message, created_at,
                            dropped, cost_usd, response_format, cached_calls, cost_saved_usd)
    VALUES (:id, :item_id, :message_id, :status, :model, :input_tokens, :output_tokens,
            :detection_duration_ms, :total_duration_ms, :error_message, :created_at,
            :dropped, :cost_usd, :response_format, :cached_calls, :cost_saved_usd)
    """
)

_INSERT_ANNOTATION = text(
    """
    INSERT INTO annotation (id, evaluation_id, position, label, text, explanation, message_part_index,
                            start_offset, end_offset, tool_name, parameter_name)
    VALUES (:id, :evaluation_id, :position, :label, :text, :explanation, :message_part_index,
            :start_offset, :end_offset, :tool_name, :parameter_name)
    """
)

_FINISH_EXPERIMENT = text(
    """
    UPDATE experiment SET completed_at = CASE WHEN EXISTS
        (SELECT 1 FROM item WHERE experiment_id = :experiment AND status IN ('pending', 'in_progress'))
      THEN NULL ELSE :stamp END
    WHERE id = :experiment
    """
)


def work_items(conn: Connection, experiment_id: str) -> list[Row[Any]]:
    """Each item with its status, `source` and `result` conversation ids and `evaluation` status, by position."""
    return list(conn.execute(_WORK_ITEMS, {"experiment": experiment_id}).all())


def start_items(conn: Connection, rows: list[StartRow]) -> None:
    """Mark items (`item`, `stamp`) in progress and clear their error."""
    if rows:
        conn.execute(_START_ITEMS, rows)


def update_items(conn: Connection, rows: list[ItemUpdate]) -> None:
    """Set items' `status`, `error` and `stamp`, and their `result` conversation when one is given."""
    if rows:
        conn.execute(_UPDATE_ITEMS, rows)


def delete_evaluations(conn: Connection, item_ids: list[str]) -> None:
    """Delete every evaluation (annotations cascade) of the named items."""
    execute_in(conn, _DELETE_EVALUATIONS, "ids", item_ids)


def result_ids(conn: Connection, item_ids: list[str]) -> dict[str, str]:
    """`{item id: result conversation id}` of the named items that have a result."""
    return {row.id: row.result for row in execute_in(conn, _RESULT_IDS, "ids", item_ids)}


def delete_unreferenced_results(conn: Connection, conversation_ids: list[str]) -> None:
    """Delete the named result conversations that no item points at (their messages cascade)."""
    execute_in(conn, _DELETE_UNREFERENCED, "ids", conversation_ids)


def final_message_ids(conn: Connection, item_ids: list[str]) -> dict[str, str | None]:
    """`{item id: id of the final message of its result conversation}` (None without a result)."""
    return {row.id: row.message_id for row in execute_in(conn, _FINAL_MESSAGES, "ids", item_ids)}


def insert_evaluations(conn: Connection, rows: list[EvaluationRow]) -> None:
    """Insert evaluations (every column of `_INSERT_EVALUATION`) in one executemany."""
    if rows:
        conn.execute(_INSERT_EVALUATION, rows)


def insert_annotations(conn: Connection, rows: list[AnnotationRow]) -> None:
    """Insert annotations (every column of `_INSERT_ANNOTATION`) in one executemany."""
    if rows:
        conn.execute(_INSERT_ANNOTATION, rows)


def finish_experiment(conn: Connection, experiment_id: str, stamp: str) -> None:
    """Set `completed_at` to `stamp` when no item is left pending or in progress (else clear it)."""
    conn.execute(_FINISH_EXPERIMENT, {"experiment": experiment_id, "stamp": stamp})
