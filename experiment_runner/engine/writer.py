"""The run's single writer: events from the workers, applied to the store one batch per transaction.

A batch is turned into a handful of `executemany` statements (all new conversations, all messages,
all item updates, ...) rather than a statement per row: the writer shares the interpreter with the
event loop that drives the model calls, so its CPU time is the engine's overhead.
"""

import json
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection

from experiment_runner.evaluation.evaluator import EvaluationOutcome
from experiment_runner.ingest.formats import content_hash
from experiment_runner.store import Store
from experiment_runner.store.ids import new_id
from experiment_runner.store.timeutil import now


@dataclass(frozen=True)
class Started:
    item_id: str


@dataclass(frozen=True)
class Failed:
    item_id: str
    error: str


@dataclass(frozen=True)
class Replayed:
    """The result conversation exists. `problem` fails the item (reply kept); `finished` ends it."""

    item_id: str
    messages: list[dict[str, Any]]
    discard_result_id: str | None
    problem: str | None
    finished: bool


@dataclass(frozen=True)
class Evaluated:
    item_id: str
    message_id: str
    outcome: EvaluationOutcome


@dataclass(frozen=True)
class Finished:
    """Nothing left to do for this item (a stored reply, no evaluator)."""

    item_id: str


Event = Started | Failed | Replayed | Evaluated | Finished


@dataclass
class Counts:
    """How many items and evaluations a batch finished."""

    completed: int = 0
    failed: int = 0
    evaluations_failed: int = 0


@dataclass
class _Rows:
    """A batch's rows, grouped by statement, in event order."""

    started: list[tuple[Any, ...]] = field(default_factory=list)
    conversations: list[tuple[Any, ...]] = field(default_factory=list)
    messages: list[tuple[Any, ...]] = field(default_factory=list)
    items: list[tuple[Any, ...]] = field(default_factory=list)
    discarded: list[tuple[str, str]] = field(default_factory=list)  # (item id, old result conversation id)
    evaluations: list[tuple[Any, ...]] = field(default_factory=list)
    annotations: list[tuple[Any, ...]] = field(default_factory=list)


_SQL = {
    "started": "UPDATE item SET status = 'in_progress', error_message = NULL, updated_at = ? WHERE id = ?",
    "conversations": "INSERT INTO conversation (id, type, content_hash, created_at) VALUES (?, 'result', ?, ?)",
    "messages": "INSERT INTO message (id, conversation_id, sequence_number, role, parts, generation) VALUES (?, ?, ?, ?, ?, ?)",
    "items": "UPDATE item SET status = ?, error_message = ?, result_conversation_id = coalesce(?, result_conversation_id), updated_at = ? WHERE id = ?",
    "evaluations": "INSERT INTO evaluation (id, item_id, message_id, status, model, input_tokens, output_tokens, "
    "detection_duration_ms, total_duration_ms, error_message, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    "annotations": "INSERT INTO annotation (id, evaluation_id, position, label, text, explanation, message_part_index, "
    "start_offset, end_offset, tool_name, parameter_name) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
}


def apply_events(store: Store, experiment_id: str, events: list[Event]) -> Counts:
    """Apply a batch of events, in order, in one transaction."""
    counts, rows, stamp = Counts(), _Rows(), now()
    for event in events:
        if isinstance(event, Started):
            rows.started.append((stamp, event.item_id))
        elif isinstance(event, Failed):
            rows.items.append(("failed", event.error, None, stamp, event.item_id))
            counts.failed += 1
        elif isinstance(event, Replayed):
            _add_result(rows, event, stamp)
            counts.failed += event.problem is not None
            counts.completed += event.problem is None and event.finished
        elif isinstance(event, Evaluated):
            _add_evaluation(rows, event, stamp)
            counts.completed += 1
            counts.evaluations_failed += event.outcome.status == "failed"
        elif isinstance(event, Finished):
            rows.items.append(("completed", None, None, stamp, event.item_id))
            counts.completed += 1
    with store.write() as session:
        _execute(session.connection(), rows)
    return counts


def _add_result(rows: _Rows, event: Replayed, stamp: str) -> None:
    conversation_id = new_id()
    rows.conversations.append((conversation_id, content_hash(event.messages), stamp))
    rows.messages.extend(
        (m["id"], conversation_id, m["sequence_number"], m["role"], _json(m["parts"]), _json(m["generation"]))
        for m in event.messages
    )
    status = "failed" if event.problem else ("completed" if event.finished else "in_progress")
    rows.items.append((status, event.problem, conversation_id, stamp, event.item_id))
    if event.discard_result_id:
        rows.discarded.append((event.item_id, event.discard_result_id))


def _add_evaluation(rows: _Rows, event: Evaluated, stamp: str) -> None:
    o, evaluation_id = event.outcome, new_id()
    rows.evaluations.append(
        (evaluation_id, event.item_id, event.message_id, o.status, o.model, o.input_tokens, o.output_tokens,
         o.detection_duration_ms, o.total_duration_ms, o.error_message, stamp)
    )
    rows.annotations.extend(
        (new_id(), evaluation_id, position, s.label, s.text, s.explanation, s.message_part_index,
         s.start_offset, s.end_offset, s.tool_name, s.parameter_name)
        for position, s in enumerate(o.spans)
    )
    rows.items.append(("completed", None, None, stamp, event.item_id))


def _execute(conn: Connection, rows: _Rows) -> None:
    """Run the batch's statements in an order that satisfies the foreign keys."""
    many = conn.exec_driver_sql
    for name in ("started", "conversations", "messages", "items"):
        if getattr(rows, name):
            many(_SQL[name], getattr(rows, name))
    for item_id, old_conversation in rows.discarded:  # a retried item's earlier result
        many("DELETE FROM evaluation WHERE item_id = ?", (item_id,))
        many("DELETE FROM conversation WHERE id = ?", (old_conversation,))
    if rows.evaluations:
        many("DELETE FROM evaluation WHERE item_id = ?", [(e[1],) for e in rows.evaluations])  # retried evaluations
        many(_SQL["evaluations"], rows.evaluations)
    if rows.annotations:
        many(_SQL["annotations"], rows.annotations)


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False)


def finish_experiment(store: Store, experiment_id: str) -> None:
    """Set `completed_at` when no item is left pending or in progress (else clear it)."""
    with store.write() as session:
        session.connection().exec_driver_sql(
            """UPDATE experiment SET completed_at = CASE WHEN EXISTS
                 (SELECT 1 FROM item WHERE experiment_id = ? AND status IN ('pending', 'in_progress'))
               THEN NULL ELSE ? END WHERE id = ?""",
            (experiment_id, now(), experiment_id),
        )
