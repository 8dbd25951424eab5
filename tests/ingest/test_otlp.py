"""OTLP trace import (issue 16): real openai-v2 spans, older OpenLLMetry attributes, grouping, errors."""

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import FIXTURES, dump

from experiment_runner.conversation import Message
from experiment_runner.errors import BadInputError
from experiment_runner.ingest.conversations import load_conversation
from experiment_runner.ingest.importing import import_files, parse_text
from experiment_runner.ingest.otlp import any_value, conversations_from_requests
from experiment_runner.store import Store

OPENAI_V2 = FIXTURES / "openai-v2.otlp.jsonl"
OPENLLMETRY = FIXTURES / "otel-openllmetry.otlp.jsonl"
WEATHER_TRACE = "3cf3bd58da60fb1ceb7a79959588532d"
TRACE = "0123456789abcdef0123456789abcdef"


def kv(key: str, value: Any) -> dict[str, Any]:
    """One OTLP attribute, its value already in AnyValue form."""
    return {"key": key, "value": value}


def span(span_id: str, attributes: list[dict[str, Any]], *, parent: str | None = None, start: int = 1_000_000, end: int = 3_000_000) -> dict[str, Any]:
    raw = {"traceId": TRACE, "spanId": span_id, "name": "chat m", "kind": 3,
           "startTimeUnixNano": str(start), "endTimeUnixNano": str(end), "attributes": attributes}
    if parent:
        raw["parentSpanId"] = parent
    return raw


def request(*spans: dict[str, Any]) -> dict[str, Any]:
    return {"resourceSpans": [{"resource": {}, "scopeSpans": [{"scope": {"name": "test"}, "spans": list(spans)}]}]}


def chat(**extra: Any) -> list[dict[str, Any]]:
    """The attributes of a minimal current-convention chat span."""
    attributes = [
        kv("gen_ai.operation.name", {"stringValue": "chat"}),
        kv("gen_ai.request.model", {"stringValue": "m"}),
        kv("gen_ai.input.messages", {"stringValue": json.dumps([{"role": "user", "parts": [{"type": "text", "content": "hi"}]}])}),
        kv("gen_ai.output.messages", {"stringValue": json.dumps([{"role": "assistant", "parts": [{"type": "text", "content": "hello"}], "finish_reason": "stop"}])}),
    ]
    return [a for a in attributes if a["key"] not in extra] + [kv(k, v) for k, v in extra.items()]


def by_id(path: Path, **options: Any) -> dict[str, list[Message]]:
    return {c.id: c.messages for c in parse_text(path.read_text(encoding="utf-8"), str(path), **options).conversations}


def test_the_real_openai_v2_trace_becomes_three_conversations() -> None:
    source = parse_text(OPENAI_V2.read_text(encoding="utf-8"), "t.jsonl")
    assert [c.id for c in source.conversations] == ["79c8c2926b94b5b5749882321e35049e", WEATHER_TRACE, "conv-ada-0001"]
    assert (source.spans, source.skipped_spans) == (9, 4)  # weather_agent_loop, execute_tool, 2 x invoke_agent
    single = source.conversations[0].messages
    assert [(m["role"], m["parts"]) for m in single] == [
        ("system", [{"type": "text", "content": "You are a terse geography assistant."}]),
        ("user", [{"type": "text", "content": "What is the capital of France?"}]),
        ("assistant", [{"type": "text", "content": "The capital of France is Paris."}]),
    ]
    generation = single[-1]["generation"]
    assert generation is not None and generation["input_tokens"] == 14 and generation["output_tokens"] == 6


def test_the_agent_loop_keeps_tool_calls_results_and_generation() -> None:
    messages = by_id(OPENAI_V2)[WEATHER_TRACE]
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "tool", "assistant"]
    assert messages[2]["parts"] == [{"type": "tool_call", "id": "call_weather_1", "name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}]
    assert messages[3]["parts"] == [{"type": "tool_call_response", "id": "call_weather_1",
                                     "response": '{"city": "Paris", "temperature_c": 18, "conditions": "partly cloudy"}'}]
    assert messages[4]["parts"] == [{"type": "text", "content": "It is 18 °C and partly cloudy in Paris right now."}]
    assert all(m["generation"] is None for m in messages[:-1])
    generation = messages[-1]["generation"]
    raw = [json.loads(line) for line in OPENAI_V2.read_text().splitlines()][1]
    last = next(s for s in raw["resourceSpans"][0]["scopeSpans"][0]["spans"] if s["spanId"] == "da1b195060c40eb7")
    latency = (int(last["endTimeUnixNano"]) - int(last["startTimeUnixNano"])) / 1e6
    assert generation == {"model": "fake-target", "provider": "openai", "input_tokens": 28, "output_tokens": 11,
                          "cost_usd": None, "latency_ms": round(latency, 3), "finish_reasons": ["stop"]}


def test_a_conversation_id_on_an_ancestor_joins_two_traces() -> None:
    messages = by_id(OPENAI_V2)["conv-ada-0001"]  # the id is only on each trace's invoke_agent root
    assert [m["parts"][0] for m in messages] == [{"type": "text", "content": content} for content in (
        "You are a friendly assistant.", "Hi! My name is Ada.", "Nice to meet you, Ada! How can I help?", "What is my name?", "Your name is Ada.",
    )]
    generation = messages[-1]["generation"]
    assert generation is not None and generation["input_tokens"] == 27  # the later trace's chat span supplies it


def test_each_span_option_makes_one_conversation_per_inference_span() -> None:
    conversations = by_id(OPENAI_V2, each_span=True)
    assert len(conversations) == 5
    first_call = conversations[f"{WEATHER_TRACE}-f4b1b64633be40f5"]
    generation = first_call[-1]["generation"]
    assert first_call[-1]["parts"][0]["type"] == "tool_call" and generation is not None and generation["finish_reasons"] == ["tool_call"]


def test_older_openllmetry_attributes() -> None:
    source = parse_text(OPENLLMETRY.read_text(encoding="utf-8"), "o.jsonl")
    assert (source.spans, source.skipped_spans) == (4, 2)  # the HTTP root (parentSpanId "") and the database span
    (conv,) = source.conversations
    assert conv.id == "a1" * 16
    roles = [m["role"] for m in conv.messages]
    assert roles == ["system", "user", "assistant", "tool", "assistant"]
    assert conv.messages[2]["parts"] == [{"type": "tool_call", "id": "call_hb_1", "name": "search_handbook", "arguments": {"query": "vacation days", "limit": 2}}]
    assert conv.messages[3]["parts"] == [{"type": "tool_call_response", "id": "call_hb_1", "response": "Section 4.2: full-time staff get 25 vacation days a year."}]
    assert conv.messages[4]["generation"] == {"model": "gpt-4o-mini-2024-07-18", "provider": "OpenAI", "input_tokens": 95, "output_tokens": 16,
                                              "cost_usd": None, "latency_ms": 1450.0, "finish_reasons": ["stop"]}


def test_array_and_kvlist_valued_messages_and_unknown_parts() -> None:
    def text_part(content: str) -> dict[str, Any]:
        return {"kvlistValue": {"values": [kv("type", {"stringValue": "text"}), kv("content", {"stringValue": content})]}}

    blob = {"kvlistValue": {"values": [kv("type", {"stringValue": "blob"}), kv("mime_type", {"stringValue": "image/png"}), kv("size", {"intValue": "12"})]}}
    user = {"kvlistValue": {"values": [kv("role", {"stringValue": "user"}), kv("parts", {"arrayValue": {"values": [text_part("look"), blob]}})]}}
    reply = {"kvlistValue": {"values": [
        kv("role", {"stringValue": "assistant"}),
        kv("parts", {"arrayValue": {"values": [
            {"kvlistValue": {"values": [kv("type", {"stringValue": "reasoning"}), kv("content", {"stringValue": "hmm"})]}}, text_part("a cat")]}}),
        kv("finish_reason", {"stringValue": "length"}),
    ]}}
    attributes = chat(**{
        "gen_ai.system_instructions": {"arrayValue": {"values": [text_part("Be brief.")]}},
        "gen_ai.input.messages": {"arrayValue": {"values": [user]}},
        "gen_ai.output.messages": {"arrayValue": {"values": [reply]}},
        "gen_ai.usage.input_tokens": {"intValue": "7"},
    })
    found = conversations_from_requests([(request(span("00000000000000aa", attributes)), "x:1")])
    messages = found.conversations[0].conversation["messages"]
    assert messages[0] == {"role": "system", "parts": [{"type": "text", "content": "Be brief."}]}
    assert messages[1]["parts"][1] == {"type": "blob", "mime_type": "image/png", "size": 12}  # unknown part type kept
    assert messages[2]["parts"] == [{"type": "reasoning", "content": "hmm"}, {"type": "text", "content": "a cat"}]
    generation = messages[2]["generation"]
    assert generation is not None and generation["finish_reasons"] == ["length"] and generation["input_tokens"] == 7


def test_any_value_decodes_every_otlp_type() -> None:
    assert any_value({"intValue": "64"}) == 64 and any_value({"doubleValue": 0.5}) == 0.5 and any_value({"boolValue": True}) is True
    assert any_value({"arrayValue": {"values": [{"stringValue": "a"}, {"intValue": "1"}]}}) == ["a", 1]
    assert any_value({"kvlistValue": {"values": [kv("k", {"stringValue": "v"})]}}) == {"k": "v"}
    assert any_value({}) is None


def test_the_last_ending_span_wins_whatever_the_order() -> None:
    late_reply = {"stringValue": json.dumps([{"role": "assistant", "parts": [{"type": "text", "content": "late"}]}])}
    late = span("00000000000000b2", chat(**{"gen_ai.output.messages": late_reply}), end=9_000_000)
    early = span("00000000000000b1", chat(), end=5_000_000)
    found = conversations_from_requests([(request(late), "x:1"), (request(early), "x:2")])
    (conv,) = found.conversations
    assert conv.conversation["id"] == TRACE and conv.conversation["messages"][-1]["parts"][0] == {"type": "text", "content": "late"}
    assert conv.where == "x:1: span 00000000000000b2"


@pytest.mark.parametrize(
    ("bad_span", "message"),
    [
        (span("00000000000000c1", chat(**{"gen_ai.usage.input_tokens": {"intValue": "many"}})), "t.jsonl:2: span 00000000000000c1: attribute 'gen_ai.usage.input_tokens'"),
        (span("00000000000000c2", chat(**{"gen_ai.input.messages": {"stringValue": "[{"}})), "t.jsonl:2: span 00000000000000c2: gen_ai.input.messages is not valid JSON"),
        ({**span("00000000000000c3", chat()), "traceId": "xyz"}, "t.jsonl:2: span 00000000000000c3: 'traceId' must be 32 hex digits"),
        (span("00000000000000c4", chat(**{"gen_ai.input.messages": {"stringValue": '[{"role": "robot", "parts": []}]'}}), end=9_000_000),
         "t.jsonl:2: span 00000000000000c4: message 0: role must be"),
    ],
)
def test_a_malformed_span_names_file_line_and_span(bad_span: dict[str, Any], message: str) -> None:
    text = json.dumps(request(span("00000000000000c0", chat()))) + "\n" + json.dumps(request(bad_span)) + "\n"
    with pytest.raises(BadInputError) as caught:
        parse_text(text, "t.jsonl")
    assert str(caught.value).startswith(message), str(caught.value)


def test_one_pretty_printed_request_in_a_json_file(tmp_path: Path) -> None:
    path = tmp_path / "trace.json"
    path.write_text(json.dumps(request(span("00000000000000d1", chat())), indent=2))
    assert list(by_id(path)) == [TRACE]


def test_reimporting_a_trace_stores_nothing_new(store: Store, db_path: Path) -> None:
    first = import_files(store, [str(OPENAI_V2), str(OPENLLMETRY)])
    assert (first.new, first.spans, first.skipped_spans) == (4, 13, 6)
    before = dump(db_path)
    again = import_files(store, [str(OPENAI_V2)])
    assert (again.new, again.unchanged) == (0, 3) and dump(db_path) == before
    with store.read() as session:
        stored = load_conversation(session, WEATHER_TRACE)
    call = stored["messages"][2]["parts"][0]
    assert call["type"] == "tool_call" and call["name"] == "get_weather"


def test_import_command_detects_otlp_and_counts_skipped_spans(run_cli) -> None:
    result = run_cli("import", OPENAI_V2)
    assert result.exit_code == 0, result.output
    assert result.stdout.split() == ["79c8c2926b94b5b5749882321e35049e", WEATHER_TRACE, "conv-ada-0001"]
    assert "3 new, 0 already stored; 4 of 9 trace span(s) skipped (not inference spans)" in result.stderr
    again = run_cli("import", "--otlp-each-span", OPENAI_V2)
    assert len(again.stdout.split()) == 5 and "5 new" in again.stderr


def test_import_command_reports_a_malformed_span(run_cli, tmp_path: Path) -> None:
    path = tmp_path / "bad.otlp.jsonl"
    path.write_text(json.dumps(request(span("00000000000000e1", chat(**{"gen_ai.output.messages": {"stringValue": "{oops"}})))) + "\n")
    result = run_cli("import", path)
    assert result.exit_code == 2
    assert result.stderr.startswith(f"Error: {path}:1: span 00000000000000e1: gen_ai.output.messages is not valid JSON")


def test_a_broken_pretty_printed_file_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "trace.json"
    path.write_text('{\n  "resourceSpans": [\n    {"scopeSpans": [}\n  ]\n}\n')
    with pytest.raises(BadInputError, match=r"trace.json:3: invalid JSON"):
        by_id(path)
