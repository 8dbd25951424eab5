"""`run --input FILE` (issue 16): from a trace file to a result in one command, against the fake server."""

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import FIXTURES, query

OPENAI_V2 = FIXTURES / "openai-v2.otlp.jsonl"
SCRIPTS = FIXTURES / "otel" / "fakellm_scripts.json"  # the replies the trace was recorded with
WEATHER_TRACE = "3cf3bd58da60fb1ceb7a79959588532d"
TRACE_IDS = ["79c8c2926b94b5b5749882321e35049e", WEATHER_TRACE, "conv-ada-0001"]


def recorded_requests() -> dict[str, list[dict[str, Any]]]:
    """What the instrumented app sent for each conversation's last call, from the trace, in OpenAI chat form."""
    out = {}
    for line in OPENAI_V2.read_text(encoding="utf-8").splitlines():
        for resource in json.loads(line)["resourceSpans"]:
            for scope in resource["scopeSpans"]:
                for span in scope["spans"]:
                    attributes = {a["key"]: a["value"] for a in span["attributes"]}
                    if "gen_ai.input.messages" in attributes:
                        messages = json.loads(attributes["gen_ai.input.messages"]["stringValue"])
                        out[span["spanId"]] = [_openai(m) for m in messages]
    return out


def _openai(message: dict[str, Any]) -> dict[str, Any]:
    part = message["parts"][0]
    if part["type"] == "tool_call_response":
        return {"role": "tool", "tool_call_id": part["id"], "content": part["response"]}
    if part["type"] == "tool_call":
        return {"role": message["role"], "tool_calls": [(part["id"], part["name"], part["arguments"])]}
    return {"role": message["role"], "content": part["content"]}


def sent(body: dict[str, Any]) -> list[dict[str, Any]]:
    """A chat request's messages in the same reduced form."""
    out = []
    for m in body["messages"]:
        if m["role"] == "tool":
            out.append({"role": "tool", "tool_call_id": m["tool_call_id"], "content": m["content"]})
        elif m.get("tool_calls"):
            calls = [(c["id"], c["function"]["name"], json.loads(c["function"]["arguments"])) for c in m["tool_calls"]]
            out.append({"role": m["role"], "tool_calls": calls})
        else:
            out.append({"role": m["role"], "content": m["content"]})
    return out


def run_id(result: Any) -> str:
    assert result.exit_code == 0, result.output
    return str(result.stdout.split()[-1])


def test_replaying_a_real_trace_sends_the_messages_the_app_sent(run_cli, fake_llm, db_path: Path) -> None:
    fake_llm.configure(scripts=json.loads(SCRIPTS.read_text())["scripts"])
    result = run_cli("run", "--name", "replay", "--model", "openai/fake-target", "--api-base", fake_llm.api_base, "--input", OPENAI_V2, "--concurrency", "1")
    experiment_id = run_id(result)
    assert "3 new, 0 already stored; 4 of 9 trace span(s) skipped" in result.stderr
    recorded = recorded_requests()
    bodies = [sent(body) for body in fake_llm.requests()]
    last_calls = ("4242aadbc8f429a4", "da1b195060c40eb7", "b4a3165de1ab3e01")  # each conversation's last chat span
    assert bodies == [recorded[span_id] for span_id in last_calls]
    assert [row[0] for row in query(db_path, "SELECT status FROM item WHERE experiment_id = ?", experiment_id)] == ["completed"] * 3
    document = json.loads(run_cli("export", experiment_id).stdout)
    replies = [item["result_conversation"]["messages"][-1]["parts"] for item in document["items"]]
    assert replies[1] == [{"type": "text", "content": "It is 18 °C and partly cloudy in Paris right now."}]  # the recorded reply again


def test_pass_through_export_shows_the_traces_tool_calls_and_generation(run_cli, fake_llm) -> None:
    result = run_cli("run", "--name", "pt", "--model", "openai/x", "--pass-through", "--input", OPENAI_V2,
                     "--evaluator-model", "openai/judge", "--evaluator-api-base", fake_llm.api_base)
    document = json.loads(run_cli("export", run_id(result)).stdout)
    items = {item["source_conversation"]["id"]: item for item in document["items"]}
    assert sorted(items) == sorted(TRACE_IDS)
    weather = items[WEATHER_TRACE]["result_conversation"]["messages"]
    assert weather[2]["parts"] == [{"type": "tool_call", "id": "call_weather_1", "name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}]
    assert weather[3]["parts"][0]["type"] == "tool_call_response" and weather[3]["parts"][0]["id"] == "call_weather_1"
    generation = weather[-1]["generation"]
    assert (generation["model"], generation["provider"], generation["input_tokens"], generation["output_tokens"]) == ("fake-target", "openai", 28, 11)
    assert generation["finish_reasons"] == ["stop"] and generation["latency_ms"] > 0
    assert len(document["evaluations"]) == 3 and all(e["status"] == "completed" for e in document["evaluations"].values())
    assert document["experiment"]["metrics"]["total_input_tokens"] == 14 + 28 + 27


def test_run_input_is_idempotent_and_runs_only_the_files_conversations(run_cli, fake_llm, db_path: Path) -> None:
    run_cli("import", FIXTURES / "handwritten.native.jsonl")
    first = run_id(run_cli("run", "--name", "a", "--model", "openai/x", "--pass-through", "--input", OPENAI_V2))
    again = run_cli("run", "--name", "b", "--model", "openai/x", "--pass-through", "--input", OPENAI_V2, "--input", OPENAI_V2)
    second = run_id(again)
    assert "0 new, 3 already stored" in again.stderr
    for experiment_id in (first, second):
        rows = query(db_path, "SELECT source_conversation_id FROM item WHERE experiment_id = ? ORDER BY position", experiment_id)
        assert [r[0] for r in rows] == TRACE_IDS


@pytest.mark.parametrize("extra", [["--all"], ["--conversation", "c1"]])
def test_run_input_with_other_selections_is_a_usage_error(run_cli, extra: list[str]) -> None:
    result = run_cli("run", "--name", "x", "--model", "openai/x", "--pass-through", "--input", OPENAI_V2, *extra)
    assert result.exit_code == 2 and "--input FILE (repeatable) or --conversation/--all, not both" in result.stderr
