"""Building finished experiments from real rows, the way the engine stores them (no model calls)."""

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import insert, update
from sqlmodel import select

from experiment_runner.engine.experiments import ExperimentSpec, create_experiment
from experiment_runner.ingest.importing import import_files
from experiment_runner.store import Store
from experiment_runner.store.tables import Annotation, Conversation, Evaluation, Experiment, Item, Message
from experiment_runner.store.timeutil import now

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
RAGTRUTH = FIXTURES / "ragtruth-sample.conversations.jsonl"
RAGTRUTH_GOLD = FIXTURES / "ragtruth-sample.gold.jsonl"
NATIVE = FIXTURES / "handwritten.native.jsonl"


@dataclass(frozen=True)
class SpanSpec:
    """An annotation to store: `parts[part]`'s text (or a tool argument's value) [start:end]."""

    label: str
    start: int
    end: int
    part: int = 0
    tool_name: str | None = None
    parameter_name: str | None = None


def import_fixture(store: Store, path: Path = RAGTRUTH) -> list[str]:
    """Import a fixture file; its conversation ids in file order."""
    return import_files(store, [str(path)]).ids


def new_experiment(
    store: Store, ids: Sequence[str], *, name: str = "exp", evaluator: str | None = "judge-model", **spec: Any
) -> str:
    """A pending pass-through experiment over `ids`."""
    spec.setdefault("pass_through", True)
    return create_experiment(
        store,
        ExperimentSpec(name=name, model="openai/target", conversation_ids=list(ids), evaluator_model=evaluator, **spec),
        check_models=False,
    )


def _span_text(parts: list[dict[str, Any]], span: SpanSpec) -> str:
    part = parts[span.part]
    if part["type"] == "tool_call":
        value = part["arguments"][span.parameter_name]
        target = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    else:
        target = part["content"]
    return target[span.start : span.end]


def finish_experiment(
    store: Store,
    experiment_id: str,
    *,
    failed: Mapping[str, str] | None = None,
    failed_evaluations: Sequence[str] = (),
    spans: Mapping[str, Sequence[SpanSpec]] | None = None,
    replies: Mapping[str, str] | None = None,
    unfinished: Sequence[str] = (),
) -> None:
    """Complete every item as a pass-through run would, keyed by source conversation id.

    `failed`: items that fail with that message (no result); `unfinished`: items left pending;
    `replies`: a replaced final reply text (as a replay would give); `failed_evaluations`: evaluations
    that fail; `spans`: annotations of the final reply. Items that already have a result (a
    re-evaluation) are only evaluated.
    """
    failed, spans, replies = failed or {}, spans or {}, replies or {}
    stamp = now()
    with store.write() as session:
        experiment = session.get(Experiment, experiment_id)
        assert experiment is not None
        items = session.exec(select(Item).where(Item.experiment_id == experiment_id).order_by(Item.position)).all()
        for item in items:
            source = item.source_conversation_id
            if source in unfinished:
                continue
            if source in failed:
                session.execute(
                    update(Item)
                    .where(Item.id == item.id)
                    .values(status="failed", error_message=failed[source], updated_at=stamp)
                )
                continue
            result_id = item.result_conversation_id or _copy_result(session, source, replies.get(source), stamp)
            final = session.exec(
                select(Message).where(Message.conversation_id == result_id).order_by(Message.sequence_number.desc())  # type: ignore[attr-defined]
            ).first()
            assert final is not None
            if item.evaluations_expected:
                _evaluate(
                    session,
                    item.id,
                    final,
                    experiment.evaluator_model or "judge",
                    source in failed_evaluations,
                    spans.get(source, ()),
                    stamp,
                )
            session.execute(
                update(Item)
                .where(Item.id == item.id)
                .values(status="completed", result_conversation_id=result_id, updated_at=stamp)
            )
        if not unfinished:
            session.execute(update(Experiment).where(Experiment.id == experiment_id).values(completed_at=now()))


def _copy_result(session: Any, source_id: str, reply: str | None, stamp: str) -> str:
    rows = session.exec(
        select(Message).where(Message.conversation_id == source_id).order_by(Message.sequence_number)
    ).all()
    result_id = str(uuid.uuid4())
    session.execute(
        insert(Conversation), [{"id": result_id, "type": "result", "content_hash": "x", "created_at": stamp}]
    )
    messages = [
        {
            "id": str(uuid.uuid4()),
            "conversation_id": result_id,
            "sequence_number": m.sequence_number,
            "role": m.role,
            "parts": m.parts,
            "generation": m.generation,
        }
        for m in rows
    ]
    if reply is not None:
        messages[-1]["parts"] = [{"type": "text", "content": reply}]
    session.execute(insert(Message), messages)
    return result_id


def _evaluate(
    session: Any, item_id: str, message: Message, model: str, fails: bool, spans: Sequence[SpanSpec], stamp: str
) -> None:
    evaluation_id = str(uuid.uuid4())
    session.execute(
        insert(Evaluation),
        [
            {
                "id": evaluation_id,
                "item_id": item_id,
                "message_id": message.id,
                "status": "failed" if fails else "completed",
                "model": model,
                "input_tokens": 500,
                "output_tokens": 40,
                "detection_duration_ms": 900.5,
                "total_duration_ms": 1000.0,
                "error_message": "evaluator reply was not JSON" if fails else None,
                "created_at": stamp,
            }
        ],
    )
    if spans and not fails:
        session.execute(
            insert(Annotation),
            [
                {
                    "id": str(uuid.uuid4()),
                    "evaluation_id": evaluation_id,
                    "position": i,
                    "label": s.label,
                    "text": _span_text(message.parts, s),
                    "explanation": f"because {i}",
                    "message_part_index": s.part,
                    "start_offset": s.start,
                    "end_offset": s.end,
                    "tool_name": s.tool_name,
                    "parameter_name": s.parameter_name,
                }
                for i, s in enumerate(spans)
            ],
        )


BOOKING_SPANS = [
    SpanSpec("Fabrication", 0, 1, part=1, tool_name="book_table", parameter_name="party_size"),
    SpanSpec("Fabrication", 0, 15, part=0),
]
WEATHER_REPLY = "Yes: there is a 70% chance of rain in Lisbon tomorrow, with a high of 17 °C. Take an umbrella ☔."
REFUSAL_REPLY = "I'm sorry, but I can't give medical advice. Please ask your doctor."


def build_finished(store: Store) -> str:
    """Six items: 5 completed (one evaluation failed, one issue-free) and 1 failed. See test_export."""
    native = import_fixture(store, NATIVE)  # weather, booking, math, refusal
    rag = import_fixture(store, RAGTRUTH)[:2]
    experiment_id = new_experiment(store, native + rag, name="pass-through ☔")
    start = WEATHER_REPLY.index("70%")
    finish_experiment(
        store,
        experiment_id,
        failed={rag[0]: "model call failed: HTTP 500"},
        failed_evaluations=["hw-reasoning-math"],
        spans={
            "hw-weather-tools": [SpanSpec("Fabrication", start, start + 3)],
            "hw-booking-args": BOOKING_SPANS,
            "hw-refusal": [SpanSpec("Incorrect Refusal", 0, len(REFUSAL_REPLY))],
        },
    )
    return experiment_id


def table_counts(store: Store) -> dict[str, int]:
    """Rows per table."""
    with store.read() as session:
        conn = session.connection()
        return {
            t: conn.exec_driver_sql(f"SELECT count(*) FROM {t}").scalar_one()
            for t in ("conversation", "message", "experiment", "item", "evaluation", "annotation")
        }
