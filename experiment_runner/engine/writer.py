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
from experiment_runner.store.queries import conversations, runs
from experiment_runner.store.timeutil import now


@dataclass(frozen=True)
class Started:
    """A worker took the item."""

    item_id: str


@dataclass(frozen=True)
class Failed:
    """The item failed (no result stored)."""

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
    """The evaluator's outcome for the item's final message; the item is complete."""

    item_id: str
    message_id: str
    outcome: EvaluationOutcome


Event = Started | Failed | Replayed | Evaluated


@dataclass
class Counts:
    """How many items and evaluations a batch finished."""

    completed: int = 0
    failed: int = 0
    evaluations_failed: int = 0


@dataclass
class _Rows:
    """A batch's rows, grouped by statement, in event order."""

    started: list[dict[str, Any]] = field(default_factory=list)
    conversations: list[dict[str, Any]] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    items: list[dict[str, Any]] = field(default_factory=list)
    discarded: list[tuple[str, str]] = field(default_factory=list)  # (item id, old result conversation id)
    evaluations: list[dict[str, Any]] = field(default_factory=list)
    annotations: list[dict[str, Any]] = field(default_factory=list)


def _item(item_id: str, status: str, stamp: str, error: str | None = None, result: str | None = None) -> dict[str, Any]:
    return {"item": item_id, "status": status, "error": error, "result": result, "stamp": stamp}


def apply_events(store: Store, experiment_id: str, events: list[Event]) -> Counts:
    """Apply a batch of events, in order, in one transaction."""
    counts, rows, stamp = Counts(), _Rows(), now()
    for event in events:
        if isinstance(event, Started):
            rows.started.append({"item": event.item_id, "stamp": stamp})
        elif isinstance(event, Failed):
            rows.items.append(_item(event.item_id, "failed", stamp, error=event.error))
            counts.failed += 1
        elif isinstance(event, Replayed):
            _add_result(rows, event, stamp)
            counts.failed += event.problem is not None
            counts.completed += event.problem is None and event.finished
        elif isinstance(event, Evaluated):
            _add_evaluation(rows, event, stamp)
            counts.completed += 1
            counts.evaluations_failed += event.outcome.status == "failed"
    with store.write() as session:
        _execute(session.connection(), rows)
    return counts


def _add_result(rows: _Rows, event: Replayed, stamp: str) -> None:
    conversation_id = new_id()
    rows.conversations.append(
        {"id": conversation_id, "type": "result", "content_hash": content_hash(event.messages), "created_at": stamp}
    )
    rows.messages.extend(
        {key: m[key] for key in ("id", "sequence_number", "role", "parts", "generation")} | {"conversation_id": conversation_id}
        for m in event.messages
    )
    status = "failed" if event.problem else ("completed" if event.finished else "in_progress")
    rows.items.append(_item(event.item_id, status, stamp, error=event.problem, result=conversation_id))
    if event.discard_result_id:
        rows.discarded.append((event.item_id, event.discard_result_id))


def _add_evaluation(rows: _Rows, event: Evaluated, stamp: str) -> None:
    o, evaluation_id = event.outcome, new_id()
    rows.evaluations.append(
        {"id": evaluation_id, "item_id": event.item_id, "message_id": event.message_id, "status": o.status,
         "model": o.model, "input_tokens": o.input_tokens, "output_tokens": o.output_tokens,
         "detection_duration_ms": o.detection_duration_ms, "total_duration_ms": o.total_duration_ms,
         "error_message": o.error_message, "created_at": stamp,
         "dropped": json.dumps(o.dropped) if o.dropped else None, "cost_usd": o.cost_usd, "response_format": o.response_format}
    )
    rows.annotations.extend(
        {"id": new_id(), "evaluation_id": evaluation_id, "position": position, "label": s.label, "text": s.text,
         "explanation": s.explanation, "message_part_index": s.message_part_index, "start_offset": s.start_offset,
         "end_offset": s.end_offset, "tool_name": s.tool_name, "parameter_name": s.parameter_name}
        for position, s in enumerate(o.spans)
    )
    rows.items.append(_item(event.item_id, "completed", stamp))


def _execute(conn: Connection, rows: _Rows) -> None:
    """Run the batch's statements in an order that satisfies the foreign keys."""
    runs.start_items(conn, rows.started)
    conversations.insert_conversations(conn, rows.conversations)
    conversations.insert_messages(conn, rows.messages)
    runs.update_items(conn, rows.items)
    for item_id, old_conversation in rows.discarded:  # a retried item's earlier result
        runs.delete_evaluations(conn, [item_id])
        runs.delete_conversation(conn, old_conversation)
    if rows.evaluations:
        runs.delete_evaluations(conn, [e["item_id"] for e in rows.evaluations])  # retried evaluations
        runs.insert_evaluations(conn, rows.evaluations)
    runs.insert_annotations(conn, rows.annotations)


def finish_experiment(store: Store, experiment_id: str) -> None:
    """Set `completed_at` when no item is left pending or in progress (else clear it)."""
    with store.write() as session:
        runs.finish_experiment(session.connection(), experiment_id, now())
