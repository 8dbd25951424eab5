"""Limits on input at `import` (issue 21 items 8 and 9): every JSON parsed, strings inside strings included,
is refused past a limit with `Error: FILE:LINE: ...`, exit 2, and nothing stored."""

import json
from pathlib import Path

import pytest
from conftest import FIXTURES
from factories import refused_import

from experiment_runner.jsonlimits import MAX_DEPTH

DEEP = f"nested deeper than {MAX_DEPTH} levels"
BIG_INT = "is out of range (integers must fit in 64 bits)"
NAN = "is not allowed (NaN and Infinity are not JSON numbers)"


def deep_json(depth: int) -> str:
    """A JSON object `depth` levels deep: {"k": {"k": ... 1}}."""
    return '{"k": ' * depth + "1" + "}" * depth


def with_arguments(arguments: str) -> dict:
    """An OpenAI chat conversation whose tool call carries `arguments` as its JSON string."""
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": arguments}}
    return {"messages": [{"role": "user", "content": "go"}, {"role": "assistant", "content": None, "tool_calls": [call]}]}


def otlp_line(input_messages: str, output_messages: str) -> dict:
    """One OTLP/JSON request with one chat span carrying these `gen_ai.input/output.messages` strings."""
    attrs = [{"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}},
             {"key": "gen_ai.input.messages", "value": {"stringValue": input_messages}},
             {"key": "gen_ai.output.messages", "value": {"stringValue": output_messages}}]
    span = {"traceId": "0123456789abcdef0123456789abcdef", "spanId": "0123456789abcdef", "name": "chat", "attributes": attrs}
    return {"resourceSpans": [{"resource": {}, "scopeSpans": [{"scope": {}, "spans": [span]}]}]}


USER_IN = json.dumps([{"role": "user", "parts": [{"type": "text", "content": "hi"}]}])

CASES = {
    # tool-call arguments: a JSON string inside the JSON
    "arguments 2000 deep": (json.dumps(with_arguments(deep_json(2000))), 1, f"message 1 tool_calls[0]: 'arguments': {DEEP}"),
    "arguments 900 deep": (json.dumps(with_arguments(deep_json(900))), 1, f"'arguments': {DEEP}"),
    "arguments deep only with the conversation": (json.dumps(with_arguments(deep_json(60))), 1, DEEP),
    "arguments with a 5000-digit integer": (json.dumps(with_arguments('{"n": ' + "7" * 5000 + "}")), 1, BIG_INT),
    "arguments with NaN": (json.dumps(with_arguments('{"n": NaN}')), 1, f"'arguments': NaN {NAN}"),
    # the file's own JSON
    "5000-digit integer": ('{"messages": [{"role": "user", "content": "x"}], "n": ' + "9" * 5000 + "}", 1, BIG_INT),
    "5000-digit integer in an array": ('[\n{"messages": [{"role": "user", "content": "x"}], "n": ' + "9" * 5000 + "}\n]", 2, BIG_INT),
    "NaN in JSONL": ('{"messages": [{"role": "user", "content": "x"}]}\n{"messages": [{"role": "assistant", "content": "y",'
                     ' "generation": {"model": "m", "cost_usd": NaN}}]}', 2, f"NaN {NAN}"),
    "Infinity in an array": ('[\n{"messages": [{"role": "assistant", "content": "y",\n "generation": {"model": "m", "latency_ms": Infinity}}]}\n]',
                             3, f"Infinity {NAN}"),
    "overflowing float": ('{"messages": [{"role": "assistant", "content": "y", "generation": {"model": "m", "cost_usd": 1e999}}]}', 1,
                          "is too large (numbers must be finite)"),
    "pretty-printed, deep on line 4": ('{\n  "messages": [],\n  "x":\n' + "[" * 100 + "]" * 100 + "\n}", 4, DEEP),
    # OTLP attribute values holding JSON
    "OTLP output messages 2000 deep": (json.dumps(otlp_line(USER_IN, "[" * 2000 + "]" * 2000)), 1,
                                       f"span 0123456789abcdef: gen_ai.output.messages: {DEEP}"),
    "OTLP arguments 900 deep": (json.dumps(otlp_line(USER_IN, json.dumps(
        [{"role": "assistant", "parts": [{"type": "tool_call", "name": "f", "arguments": deep_json(900)}]}]))), 1, DEEP),
    "OTLP 5000-digit intValue": ('{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "0123456789abcdef0123456789abcdef",'
                                 ' "spanId": "0123456789abcdef", "attributes": [{"key": "n", "value": {"intValue": "' + "1" * 5000
                                 + '"}}]}]}]}]}', 1, f"attribute 'n': intValue: integer 111111111111111111111111111111111111111… (5000 characters) {BIG_INT}"),
    "OTLP 5000-digit start time": ('{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "0123456789abcdef0123456789abcdef",'
                                   ' "spanId": "0123456789abcdef", "startTimeUnixNano": "' + "1" * 5000 + '"}]}]}]}', 1, BIG_INT),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_past_a_limit_exits_2_naming_file_and_line(case: str, run_cli, db_path: Path, tmp_path: Path) -> None:
    text, line, message = CASES[case]
    stderr = refused_import(run_cli, db_path, tmp_path, text, line)
    assert message in stderr and "internal error" not in stderr
    assert len(stderr) < 400  # a 5000-digit number is not echoed back whole


def test_within_the_limits_imports(run_cli, tmp_path: Path) -> None:
    path = tmp_path / "ok.jsonl"
    big = {"messages": [{"role": "assistant", "content": "y", "generation": {"model": "m", "input_tokens": 2**63 - 1, "cost_usd": 1e300}}]}
    path.write_text(json.dumps(with_arguments(deep_json(MAX_DEPTH - 7))) + "\n" + json.dumps(big) + "\n", encoding="utf-8")
    result = run_cli("import", path)
    assert result.exit_code == 0, result.stderr


def test_a_protobuf_file_nested_past_the_limit_is_refused(run_cli, tmp_path: Path) -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue
    from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

    value = AnyValue(string_value="x")
    for _ in range(30):  # protobuf allows it; as JSON it is ~100 levels deep
        value = AnyValue(array_value=ArrayValue(values=[value]))
    span = Span(trace_id=bytes(range(16)), span_id=bytes(range(8)), attributes=[KeyValue(key="deep", value=value)])
    request = ExportTraceServiceRequest(resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=[span])])])
    path = tmp_path / "deep.pb"
    path.write_bytes(request.SerializeToString())
    result = run_cli("import", path)
    assert result.exit_code == 2 and result.stderr == f"Error: {path}:1: {DEEP}\n"


def test_labels_and_gold_files_have_the_same_limits(run_cli, tmp_path: Path) -> None:
    run_cli("import", FIXTURES / "handwritten.native.jsonl")
    labels = tmp_path / "labels.json"
    labels.write_text('{"labels": [{"name": "X", "description": "x"}], "n": NaN}')
    result = run_cli("run", "--name", "x", "--model", "openai/x", "--pass-through", "--all", "--labels", labels,
                     "--evaluator-model", "openai/judge", "--evaluator-api-base", "http://127.0.0.1:9/v1")
    assert result.exit_code == 2 and f"{labels}:1: NaN {NAN}" in result.stderr
