"""The run's single writer: events from the workers, applied to the store one batch per transaction.

A batch is turned into a handful of `executemany` statements (all new conversations, all messages,
all item updates, ...) rather than a statement per row: the writer shares the interpreter with the
event loop that drives the model calls, so its CPU time is the engine's overhead.

Each batch also keeps the links whole: an item's earlier result conversation is deleted in the
transaction that gives it a new one, and an evaluation is stored only if it refers to the final message
of its own item's current result conversation (any other is skipped, and the item stays unevaluated).
With a lease, every batch first renews it, so a runner that lost its lease cannot write; a worker that claims
items writes only the rows of items it still holds (`_fenced`).
"""

import json
import logging
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from sqlalchemy import Connection

from experiment_runner.conversation import ItemStatus, Message, content_hash
from experiment_runner.engine.lease import Lease
from experiment_runner.evaluation.evaluator import EvaluationOutcome
from experiment_runner.store import Store
from experiment_runner.store.ids import new_id
from experiment_runner.store.queries import claims, conversations, runs
from experiment_runner.store.queries.rows import AnnotationRow, ConversationRow, EvaluationRow, ItemUpdate, MessageRow, StartRow
from experiment_runner.store.timeutil import now

log = logging.getLogger(__name__)


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
    messages: list[Message]
    problem: str | None
    finished: bool


@dataclass(frozen=True)
class Evaluated:
    """The evaluator's outcome for the item's final message; the item is complete."""

    item_id: str
    message_id: str
    outcome: EvaluationOutcome


@runtime_checkable
class ExtraWrites(Protocol):
    """Rows another engine module commits with a batch (the response cache's entries, batch jobs' state)."""

    def apply(self, conn: Connection) -> None: ...


Event = Started | Failed | Replayed | Evaluated | ExtraWrites


@dataclass
class Counts:
    """How many items and evaluations a batch finished."""

    completed: int = 0
    failed: int = 0
    evaluations_failed: int = 0
    evaluations_skipped: int = 0  # evaluations of a message that is not their item's final one


@dataclass
class _Rows:
    """A batch's rows, grouped by statement, in event order."""

    started: list[StartRow] = field(default_factory=list)
    conversations: list[ConversationRow] = field(default_factory=list)
    messages: list[MessageRow] = field(default_factory=list)
    items: list[ItemUpdate] = field(default_factory=list)
    evaluations: list[EvaluationRow] = field(default_factory=list)
    annotations: list[AnnotationRow] = field(default_factory=list)


def _item(item_id: str, status: ItemStatus, stamp: str, error: str | None = None, result: str | None = None) -> ItemUpdate:
    return {"item": item_id, "status": status, "error": error, "result": result, "stamp": stamp}


def apply_events(store: Store, experiment_id: str, events: list[Event], lease: Lease | None = None) -> Counts:
    """Apply a batch of events, in order, in one transaction (renewing `lease` first, if given).

    A lease that claims items fences every item's rows on its claim, in the same transaction: an event for
    an item this worker no longer holds (its claim went stale and another worker took it) writes nothing."""
    with store.write() as session:
        conn = session.connection()
        if lease is not None:
            lease.check(conn)
            if lease.claims:
                events = _fenced(conn, lease, events)
        counts, rows, stamp = _rows(events, experiment_id)
        kept = _execute(conn, rows, stamp)
        for writes in [event for event in events if isinstance(event, ExtraWrites)]:  # after the items' rows
            writes.apply(conn)  # (a batch job's collected mark commits with its results)
    counts.completed += len(kept)
    counts.evaluations_failed += sum(e["status"] == "failed" for e in kept)
    counts.evaluations_skipped += len(rows.evaluations) - len(kept)
    return counts


def _fenced(conn: Connection, lease: Lease, events: list[Event]) -> list[Event]:
    """The events whose item this worker still holds (and every non-item write)."""
    ids = [event.item_id for event in events if not isinstance(event, ExtraWrites)]
    holds = claims.held(conn, lease.owner, ids)
    if lost := set(ids) - holds:
        log.warning("experiment %s: %d item(s) were taken over by another worker; their results are dropped", lease.experiment_id, len(lost))
    return [event for event in events if isinstance(event, ExtraWrites) or event.item_id in holds]


def _rows(events: list[Event], experiment_id: str) -> tuple[Counts, "_Rows", str]:
    """The batch's rows grouped by statement, and the counts its item events finish."""
    counts, rows, stamp = Counts(), _Rows(), now()
    for event in events:
        if isinstance(event, Started):
            rows.started.append({"item": event.item_id, "stamp": stamp})
        elif isinstance(event, Failed):
            rows.items.append(_item(event.item_id, "failed", stamp, error=event.error))
            counts.failed += 1
        elif isinstance(event, Replayed):
            _add_result(rows, event, experiment_id, stamp)
            counts.failed += event.problem is not None
            counts.completed += event.problem is None and event.finished
        elif isinstance(event, Evaluated):
            _add_evaluation(rows, event, stamp)
    return counts, rows, stamp


def _add_result(rows: _Rows, event: Replayed, experiment_id: str, stamp: str) -> None:
    conversation_id = new_id()
    rows.conversations.append(
        {"id": conversation_id, "type": "result", "content_hash": content_hash(event.messages), "created_at": stamp,
         "experiment_id": experiment_id}
    )
    rows.messages.extend(
        {"id": m["id"], "sequence_number": m["sequence_number"], "role": m["role"], "parts": m["parts"], "generation": m["generation"],
         "conversation_id": conversation_id}
        for m in event.messages
    )
    status: ItemStatus = "failed" if event.problem else ("completed" if event.finished else "in_progress")
    rows.items.append(_item(event.item_id, status, stamp, error=event.problem, result=conversation_id))


def _add_evaluation(rows: _Rows, event: Evaluated, stamp: str) -> None:
    o, evaluation_id = event.outcome, new_id()
    rows.evaluations.append(
        {"id": evaluation_id, "item_id": event.item_id, "message_id": event.message_id, "status": o.status,
         "model": o.model, "input_tokens": o.input_tokens, "output_tokens": o.output_tokens,
         "detection_duration_ms": o.detection_duration_ms, "total_duration_ms": o.total_duration_ms,
         "error_message": o.error_message, "created_at": stamp,
         "dropped": json.dumps(o.dropped) if o.dropped else None, "cost_usd": o.cost_usd, "response_format": o.response_format,
         "cached_calls": o.cached_calls, "cost_saved_usd": o.cost_saved_usd}
    )
    rows.annotations.extend(
        {"id": new_id(), "evaluation_id": evaluation_id, "position": position, "label": s.label, "text": s.text,
         "explanation": s.explanation, "message_part_index": s.message_part_index, "start_offset": s.start_offset,
         "end_offset": s.end_offset, "tool_name": s.tool_name, "parameter_name": s.parameter_name}
        for position, s in enumerate(o.spans)
    )


def _execute(conn: Connection, rows: _Rows, stamp: str) -> list[EvaluationRow]:
    """Run the batch's statements in an order that satisfies the foreign keys; returns the evaluations stored."""
    runs.start_items(conn, rows.started)
    replaced = runs.result_ids(conn, [r["item"] for r in rows.items if r["result"]])
    conversations.insert_conversations(conn, rows.conversations)
    conversations.insert_messages(conn, rows.messages)
    runs.update_items(conn, rows.items)
    if replaced:  # a retried item's earlier result, with its evaluations
        runs.delete_evaluations(conn, list(replaced))
        runs.delete_unreferenced_results(conn, list(replaced.values()))
    finals = runs.final_message_ids(conn, [e["item_id"] for e in rows.evaluations])
    kept = [e for e in rows.evaluations if finals.get(e["item_id"]) == e["message_id"]]
    if kept:
        runs.delete_evaluations(conn, [e["item_id"] for e in kept])  # retried evaluations
        runs.insert_evaluations(conn, kept)
        ids = {e["id"] for e in kept}
        runs.insert_annotations(conn, [a for a in rows.annotations if a["evaluation_id"] in ids])
        runs.update_items(conn, [_item(e["item_id"], "completed", stamp) for e in kept])
    return kept


def finish_experiment(store: Store, experiment_id: str) -> None:
    """Set `completed_at` when no item is left pending or in progress (else clear it)."""
    with store.write() as session:
        runs.finish_experiment(session.connection(), experiment_id, now())
