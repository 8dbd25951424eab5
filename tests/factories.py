"""Building finished experiments from real rows, the way the engine stores them (no model calls)."""

import json
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text

from experiment_runner.conversation import Message, Part
from experiment_runner.engine import writer
from experiment_runner.engine.experiments import create_experiment
from experiment_runner.engine.spec import ExperimentSpec
from experiment_runner.evaluation.evaluator import EvaluationOutcome
from experiment_runner.evaluation.spans import Span
from experiment_runner.ingest.importing import import_files
from experiment_runner.store import Store
from experiment_runner.store.ids import new_id
from experiment_runner.store.queries import conversations, experiments
from experiment_runner.store.queries.experiments import require_experiment

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


def many_conversations(tmp_path: Path, count: int) -> Path:
    """A JSONL file of `count` conversations, each with a prompt of its own (so the fake server's log counts each
    item's calls)."""
    path = tmp_path / "many.jsonl"
    path.write_text("".join(json.dumps({"id": f"c{i}", "messages": [
        {"role": "user", "content": f"Question number {i}: what is {i} plus one?"},
        {"role": "assistant", "content": "An answer."}]}) + "\n" for i in range(count)))
    return path


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


def _span_text(parts: list[Part], span: SpanSpec) -> str:
    part = parts[span.part]
    if part["type"] == "tool_call":
        assert span.parameter_name is not None, "a span in a tool call names its parameter here"
        value = part["arguments"][span.parameter_name]
        target = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    else:
        assert part["type"] in ("text", "reasoning"), "only a tool call, a text or a reasoning part is annotated"
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
    re-evaluation) are only evaluated. The rows are written by the engine's writer, from the events
    its workers would send.
    """
    failed, spans, replies = failed or {}, spans or {}, replies or {}
    with store.read() as session:
        model = require_experiment(session, experiment_id).evaluator_model or "judge"
        conn = session.connection()
        items = experiments.items(conn, experiment_id)
        stored = conversations.messages_by_conversation(
            conn, [i.result_conversation_id or i.source_conversation_id for i in items]
        )
    events: list[writer.Event] = []
    for item in items:
        source = item.source_conversation_id
        if source in unfinished:
            continue
        events.append(writer.Started(item.id))
        if source in failed:
            events.append(writer.Failed(item.id, failed[source]))
            continue
        if item.result_conversation_id:
            assert item.evaluations_expected, "an item with a result and no evaluator is not a state the engine makes"
            messages = stored[item.result_conversation_id]
        else:
            messages = _copy_result(stored[source], replies.get(source))
            events.append(writer.Replayed(item.id, messages, None, finished=not item.evaluations_expected))
        if item.evaluations_expected:
            outcome = _outcome(messages[-1], model, source in failed_evaluations, spans.get(source, ()))
            events.append(writer.Evaluated(item.id, messages[-1]["id"], outcome))
    writer.apply_events(store, experiment_id, events)
    writer.finish_experiment(store, experiment_id)


def _copy_result(source: list[Message], reply: str | None) -> list[Message]:
    """The source's messages with new ids (a pass-through result), the final one's text replaced by `reply`."""
    messages: list[Message] = [{**m, "id": new_id()} for m in source]
    if reply is not None:
        messages[-1]["parts"] = [{"type": "text", "content": reply}]
    return messages


def _outcome(message: Message, model: str, fails: bool, spans: Sequence[SpanSpec]) -> EvaluationOutcome:
    """What the evaluator would report about `message`: fixed usage, and `spans` unless it fails."""
    return EvaluationOutcome(
        status="failed" if fails else "completed",
        model=model,
        input_tokens=500,
        output_tokens=40,
        detection_duration_ms=900.5,
        total_duration_ms=1000.0,
        error_message="evaluator reply was not JSON" if fails else None,
        spans=[] if fails else [
            Span(
                label=s.label,
                text=_span_text(message["parts"], s),
                explanation=f"because {i}",
                message_part_index=s.part,
                start_offset=s.start,
                end_offset=s.end,
                tool_name=s.tool_name,
                parameter_name=s.parameter_name,
            )
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
            t: conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one()
            for t in ("conversation", "message", "experiment", "item", "evaluation", "annotation")
        }


def priced_and_unpriced_runs(run_cli, fake_llm, tmp_path: Path, items: int) -> tuple[str, str]:
    """(an experiment on a model litellm cannot price, one on a priced model) over the sample's first `items`
    conversations, both replayed over real HTTP."""
    sample = tmp_path / "sample.jsonl"
    sample.write_text("\n".join(RAGTRUTH.read_text(encoding="utf-8").splitlines()[:items]) + "\n", encoding="utf-8")
    assert run_cli("import", sample).exit_code == 0
    ids = []
    for model in ("openai/local-thing", "openai/gpt-4o-mini"):
        result = run_cli("run", "--name", model, "--model", model, "--api-base", fake_llm.api_base, "--all")
        assert result.exit_code == 0, result.stderr
        ids.append(result.stdout.split()[-1])
    return ids[0], ids[1]



def refused_import(run_cli, db_path: Path, tmp_path: Path, text: str, line: int) -> str:
    """Import `text` into a store holding the hand-written sample and return the one `Error:` line, after
    checking what every refused import must do: exit 2, name FILE:LINE, and leave the store as it was."""
    from conftest import dump

    run_cli("import", NATIVE)
    before = dump(db_path)
    path = tmp_path / "input.json"
    path.write_text(text, encoding="utf-8")
    result = run_cli("import", path)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"Error: {path}:{line}: ") and result.stderr.count("\n") == 1, result.stderr
    assert dump(db_path) == before
    return str(result.stderr)


def wait_until_serving(server: "subprocess.Popen[str]", url: str, timeout: float = 60) -> None:
    """Poll `url` until a `serve` process answers 200; fail (with its stderr) if it exits or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert server.poll() is None and time.monotonic() < deadline, server.stderr.read() if server.stderr else ""
        time.sleep(0.1)

