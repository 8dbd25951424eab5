"""The reads behind the export, the metrics, `compare` and gold scoring (one experiment's stored results).

Every listing has a total order (item position, sequence number, annotation position, ids), so an
experiment reads back the same way every time. Pages are keysets: `after` a position (and an id).
"""

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Row, text

from experiment_runner.store.queries.common import FINAL_ASSISTANT_MESSAGE, LATEST_EVALUATION, PerDialect, decode_json, execute_in, expanding

_FACTS = text(
    f"""
    SELECT i.position, i.status, e.id AS evaluation_id, e.status AS evaluation_status, m.generation
    FROM item i
    LEFT JOIN evaluation e ON e.id = {LATEST_EVALUATION}
    LEFT JOIN message m ON m.id = {FINAL_ASSISTANT_MESSAGE}
    WHERE i.experiment_id = :experiment AND i.position > :after
    ORDER BY i.position LIMIT :limit
    """
)

_FACT_ANNOTATIONS = expanding(
    "SELECT evaluation_id, label, tool_name, parameter_name FROM annotation"
    " WHERE evaluation_id IN :ids ORDER BY evaluation_id, position, id",
    "ids",
)

_STATUS_COUNTS = text(
    """
    SELECT status, count(*) AS n, coalesce(sum(evaluations_expected), 0) AS expected
    FROM item WHERE experiment_id = :experiment GROUP BY status ORDER BY status
    """
)

_RECEIVED = text(
    """
    SELECT count(*) FROM evaluation e JOIN item i ON i.id = e.item_id
    WHERE i.experiment_id = :experiment AND e.status = 'completed'
    """
)

# `list`'s figures of a page of experiments, per experiment and item status, without reading any item into
# Python: items, completed evaluations received, items whose latest evaluation completed (and of those, with
# an annotation), and the summed `cost_usd` of the final replies that report a number (and how many do not).
# Counted as `compute_metrics` and `PriceCoverage` count them (a JSON true is not a number).
_OVERVIEW = PerDialect(
    lambda d: expanding(
        f"""
    SELECT i.experiment_id, i.status, count(*) AS n,
           sum((SELECT count(*) FROM evaluation r WHERE r.item_id = i.id AND r.status = 'completed')) AS received,
           sum(CASE WHEN e.status = 'completed' THEN 1 ELSE 0 END) AS evaluated,
           sum(CASE WHEN e.status = 'completed' AND EXISTS (SELECT 1 FROM annotation a WHERE a.evaluation_id = e.id)
               THEN 1 ELSE 0 END) AS with_issues,
           {d.total(f"CASE WHEN {d.json_is_number('m.generation', 'cost_usd')} THEN {d.json_number('m.generation', 'cost_usd')} END")} AS cost_usd,
           sum(CASE WHEN {d.json_is_number('m.generation', 'cost_usd')} THEN 0 ELSE 1 END) AS unpriced
    FROM item i
    LEFT JOIN evaluation e ON e.id = {LATEST_EVALUATION}
    LEFT JOIN message m ON m.id = {FINAL_ASSISTANT_MESSAGE}
    WHERE i.experiment_id IN :ids
    GROUP BY i.experiment_id, i.status
    ORDER BY i.experiment_id, i.status
    """,
        "ids",
    )
)

_ITEMS = text(
    """
    SELECT i.id, i.position, i.status, i.error_message, i.evaluations_expected, i.created_at, i.updated_at,
           i.source_conversation_id, i.result_conversation_id,
           (SELECT count(*) FROM evaluation e WHERE e.item_id = i.id AND e.status = 'completed') AS received
    FROM item i WHERE i.experiment_id = :experiment AND i.position > :after
    ORDER BY i.position LIMIT :limit
    """
)

_EVALUATIONS = text(
    """
    SELECT e.id, e.message_id, e.status, e.model, e.input_tokens, e.output_tokens, e.detection_duration_ms,
           e.total_duration_ms, e.error_message, i.position
    FROM evaluation e JOIN item i ON i.id = e.item_id
    WHERE i.experiment_id = :experiment AND (i.position > :after OR (i.position = :after AND e.id > :after_id))
    ORDER BY i.position, e.id LIMIT :limit
    """
)

_ANNOTATIONS = expanding(
    """
    SELECT evaluation_id, id, label, text, explanation, message_part_index, start_offset, end_offset,
           tool_name, parameter_name
    FROM annotation WHERE evaluation_id IN :ids ORDER BY evaluation_id, position, id
    """,
    "ids",
)

_ITEM_LABELS = text(
    f"""
    SELECT i.source_conversation_id AS source, e.status AS evaluation_status, a.label
    FROM item i
    LEFT JOIN evaluation e ON e.id = {LATEST_EVALUATION}
    LEFT JOIN annotation a ON a.evaluation_id = e.id
    WHERE i.experiment_id = :experiment ORDER BY i.position, a.position, a.id
    """
)

_REPLY_ITEMS = text(
    f"""
    SELECT i.id, i.source_conversation_id AS source, m.id AS message_id, m.parts AS reply_parts
    FROM item i
    LEFT JOIN message m ON m.id = {FINAL_ASSISTANT_MESSAGE}
    WHERE i.experiment_id = :experiment
    ORDER BY i.position
    """
)

_GOLD_ITEMS = expanding(
    f"""
    SELECT i.id, i.source_conversation_id AS source, m.id AS message_id, m.parts AS reply_parts
    FROM item i
    LEFT JOIN message m ON m.id = {FINAL_ASSISTANT_MESSAGE}
    WHERE i.experiment_id = :experiment AND i.source_conversation_id IN :sources
    ORDER BY i.position
    """,
    "sources",
)

_MESSAGE_PARTS = expanding(
    "SELECT conversation_id, sequence_number, parts FROM message WHERE conversation_id IN :sources", "sources"
)

_PREDICTIONS = expanding(
    """
    SELECT e.item_id, e.message_id, a.label, a.start_offset, a.end_offset, a.message_part_index
    FROM evaluation e LEFT JOIN annotation a ON a.evaluation_id = e.id
    WHERE e.item_id IN :items AND e.status = 'completed'
    ORDER BY e.item_id, a.position
    """,
    "items",
)


def fact_rows(conn: Connection, experiment_id: str, after: int, limit: int) -> list[Row[Any]]:
    """Items after position `after`: status, latest evaluation (id, status), final reply's `generation` JSON."""
    return list(conn.execute(_FACTS, {"experiment": experiment_id, "after": after, "limit": limit}).all())


def fact_annotations(conn: Connection, evaluation_ids: Sequence[str]) -> list[Row[Any]]:
    """`evaluation_id, label, tool_name, parameter_name` of the evaluations' annotations, in order."""
    return execute_in(conn, _FACT_ANNOTATIONS, "ids", evaluation_ids)


def status_counts(conn: Connection, experiment_id: str) -> list[Row[Any]]:
    """Per item status: `n` items and the evaluations they `expected`."""
    return list(conn.execute(_STATUS_COUNTS, {"experiment": experiment_id}).all())


def evaluations_received(conn: Connection, experiment_id: str) -> int:
    """How many completed evaluations the experiment's items have."""
    return int(conn.execute(_RECEIVED, {"experiment": experiment_id}).scalar_one())


def overview_rows(conn: Connection, experiment_ids: Sequence[str]) -> list[Row[Any]]:
    """Per experiment and item status: `n` items, completed evaluations `received`, items `evaluated` (latest
    evaluation completed) and those `with_issues`, the replies' summed `cost_usd` and the `unpriced` ones."""
    return execute_in(conn, _OVERVIEW.on(conn), "ids", experiment_ids)


def item_rows(conn: Connection, experiment_id: str, after: int, limit: int) -> list[Row[Any]]:
    """Up to `limit` items after position `after`, with their completed evaluations count (`received`)."""
    return list(conn.execute(_ITEMS, {"experiment": experiment_id, "after": after, "limit": limit}).all())


def evaluation_rows(conn: Connection, experiment_id: str, after: tuple[int, str], limit: int) -> list[Row[Any]]:
    """Up to `limit` evaluations after the `(item position, evaluation id)` key, in that order."""
    params = {"experiment": experiment_id, "after": after[0], "after_id": after[1], "limit": limit}
    return list(conn.execute(_EVALUATIONS, params).all())


def annotation_rows(conn: Connection, evaluation_ids: Sequence[str]) -> list[Row[Any]]:
    """Every column the export shows of the evaluations' annotations, by evaluation then position."""
    return execute_in(conn, _ANNOTATIONS, "ids", evaluation_ids)


def item_labels(conn: Connection, experiment_id: str) -> list[Row[Any]]:
    """Per item (by position) and annotation: `source`, latest evaluation's status, the annotation's `label`
    (one row with a NULL label for an item without annotations)."""
    return list(conn.execute(_ITEM_LABELS, {"experiment": experiment_id}).all())


def reply_items(conn: Connection, experiment_id: str) -> list[Row[Any]]:
    """Every item: `id, source`, and its final reply's `message_id` and `reply_parts` JSON (NULL without one)."""
    return list(conn.execute(_REPLY_ITEMS, {"experiment": experiment_id}).all())


def gold_items(conn: Connection, experiment_id: str, sources: Sequence[str]) -> list[Row[Any]]:
    """Items on the named sources: `id, source`, and the final reply's `message_id` and `reply_parts` JSON."""
    return execute_in(conn, _GOLD_ITEMS, "sources", sources, {"experiment": experiment_id})


def message_parts(conn: Connection, conversation_ids: Sequence[str]) -> list[Row[Any]]:
    """`conversation_id, sequence_number, parts` (JSON) of every message of the named conversations."""
    return execute_in(conn, _MESSAGE_PARTS, "sources", conversation_ids)


def predictions(conn: Connection, item_ids: Sequence[str]) -> list[Row[Any]]:
    """The items' completed evaluations with their annotations' spans (a NULL label: no annotation)."""
    return execute_in(conn, _PREDICTIONS, "items", item_ids)


_EVALUATION_TOTALS = text(
    """
    SELECT e.status, count(*) AS n, coalesce(sum(e.input_tokens), 0) AS input_tokens,
           coalesce(sum(e.output_tokens), 0) AS output_tokens, sum(e.cost_usd) AS cost_usd
    FROM evaluation e JOIN item i ON i.id = e.item_id
    WHERE i.experiment_id = :experiment GROUP BY e.status ORDER BY e.status
    """
)

_DROPPED = text(
    """
    SELECT e.dropped FROM evaluation e JOIN item i ON i.id = e.item_id
    WHERE i.experiment_id = :experiment AND e.dropped IS NOT NULL
    """
)

_FAILED_EVALUATIONS = text(
    """
    SELECT i.id AS item_id, i.position, e.error_message FROM evaluation e JOIN item i ON i.id = e.item_id
    WHERE i.experiment_id = :experiment AND e.status = 'failed'
    ORDER BY e.created_at DESC, i.position DESC LIMIT :limit
    """
)

_RESPONSE_FORMATS = text(
    """
    SELECT e.response_format, count(*) AS n FROM evaluation e JOIN item i ON i.id = e.item_id
    WHERE i.experiment_id = :experiment AND e.response_format IS NOT NULL GROUP BY e.response_format
    """
)


def evaluation_totals(conn: Connection, experiment_id: str) -> list[Row[Any]]:
    """Per evaluation status: count, evaluator input/output tokens and cost (None when no call was priced)."""
    return list(conn.execute(_EVALUATION_TOTALS, {"experiment": experiment_id}).all())


def dropped_counts(conn: Connection, experiment_id: str) -> dict[str, int]:
    """Annotations the evaluator returned that were dropped, summed by reason, over the experiment."""
    totals: dict[str, int] = {}
    for (raw,) in conn.execute(_DROPPED, {"experiment": experiment_id}):
        for reason, n in (decode_json(raw) or {}).items():
            totals[reason] = totals.get(reason, 0) + int(n)
    return dict(sorted(totals.items()))


def failed_evaluations(conn: Connection, experiment_id: str, limit: int) -> list[Row[Any]]:
    """The latest failed evaluations (`item_id, position, error_message`), newest first."""
    return list(conn.execute(_FAILED_EVALUATIONS, {"experiment": experiment_id, "limit": limit}).all())


def evaluation_formats(conn: Connection, experiment_id: str) -> dict[str, int]:
    """How many evaluations used each structured-output mode."""
    return {r.response_format: r.n for r in conn.execute(_RESPONSE_FORMATS, {"experiment": experiment_id})}
