"""Tests for the local OpenAI-compatible server (experiment_runner.fixtures.fakellm).

Everything goes over real HTTP: raw protocol checks with httpx, and end-to-end calls through litellm
exactly as the runner makes them. No mocks.
"""

from __future__ import annotations

import asyncio
import json
import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import litellm
import pytest

import experiment_runner  # noqa: F401  (sets litellm's offline env vars before litellm is imported)
from experiment_runner.fixtures.fakellm import FakeLLM
from experiment_runner.fixtures.fakellm_schema import example_instance

litellm.suppress_debug_info = True

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def chat(server: FakeLLM, content: str = "Hello", *, client: httpx.Client | None = None,
         path: str = "/v1/chat/completions", **body: Any) -> httpx.Response:
    """POST one raw chat request."""
    payload = {"model": "fake-target", "messages": [{"role": "user", "content": content}], **body}
    return (client or httpx).post(server.url + path, json=payload, timeout=10)


async def ask(server: FakeLLM, content: str = "Hello", *, model: str = "openai/fake-target", **kwargs: Any) -> Any:
    """One litellm call against the server, as the runner makes it."""
    kwargs.setdefault("messages", [{"role": "user", "content": content}])
    return await litellm.acompletion(model=model, api_base=server.api_base, api_key="sk-test",
                                     num_retries=0, timeout=10, **kwargs)


# --- raw protocol ------------------------------------------------------------------------------------


def test_default_reply_and_deterministic_usage(fake_llm: FakeLLM) -> None:
    messages = [{"role": "system", "content": "You are terse."},
                {"role": "user", "content": [{"type": "text", "text": "Hello   there\n world"}]}]
    r = httpx.post(fake_llm.api_base + "/chat/completions", json={"model": "fake-target", "messages": messages})
    assert r.status_code == 200
    assert r.headers["content-length"] == str(len(r.content))
    data = r.json()
    assert data["object"] == "chat.completion" and data["model"] == "fake-target"
    assert data["choices"][0]["message"] == {"role": "assistant", "content": "Simulated reply to: Hello there world"}
    assert data["choices"][0]["finish_reason"] == "stop"
    # tokens are word runs and punctuation marks: prompt "You are terse." 4 + "Hello there world" 3 + 1 per
    # message; completion "Simulated reply to: Hello there world" = 7
    assert data["usage"] == {"prompt_tokens": 9, "completion_tokens": 7, "total_tokens": 16}

    long_text = "word " * 40
    reply = chat(fake_llm, long_text, path="/chat/completions").json()["choices"][0]["message"]["content"]
    assert reply == "Simulated reply to: " + " ".join(long_text.split())[:80]

    fake_llm.configure(default_reply="fixed answer")
    assert chat(fake_llm).json()["choices"][0]["message"]["content"] == "fixed answer"


def test_malformed_unknown_models_and_keepalive(fake_llm: FakeLLM) -> None:
    with httpx.Client(base_url=fake_llm.url) as client:
        bad = client.post("/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
        assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error"
        assert client.post("/v1/chat/completions", json={"model": "m"}).status_code == 400
        missing = client.get("/nope")
        assert missing.status_code == 404 and "error" in missing.json()
        assert "fake-target" in [m["id"] for m in client.get("/v1/models").json()["data"]]
        for _ in range(3):
            assert chat(fake_llm, client=client).status_code == 200
        stats = client.get("/_control/stats").json()
    assert stats["requests"] == 3  # malformed bodies are answered 400 but not recorded
    assert stats["connections"] == 1  # HTTP/1.1 keep-alive: one TCP connection for everything


def test_control_endpoints(fake_llm: FakeLLM) -> None:
    base = fake_llm.url
    cfg = {"scripts": [{"match": "ping", "reply": {"content": "pong"}}], "latency_ms": 0, "fail_rate": 0}
    assert httpx.post(base + "/_control/config", json=cfg).json() == {"ok": True}
    assert httpx.post(base + "/_control/config", json={"bogus": 1}).status_code == 400
    assert chat(fake_llm, "ping?").json()["choices"][0]["message"]["content"] == "pong"
    recorded = httpx.get(base + "/_control/requests").json()["requests"]
    assert [{k: r[k] for k in ("body", "status")} for r in recorded] == [
        {"body": {"model": "fake-target", "messages": [{"role": "user", "content": "ping?"}]}, "status": 200}]
    assert 0 < recorded[0]["arrived"] <= recorded[0]["answered"]  # when it came and when it was answered (epoch s)
    assert httpx.post(base + "/_control/reset").status_code == 200
    assert httpx.get(base + "/_control/stats").json()["requests"] == 0
    assert fake_llm.request_count == 0 and fake_llm.requests() == []
    assert chat(fake_llm, "ping").json()["choices"][0]["message"]["content"] == "pong"  # config kept


def test_scripts_first_match_by_substring_and_model(fake_llm: FakeLLM) -> None:
    fake_llm.configure(scripts=[
        {"match": "capital", "model": "fake-evaluator", "reply": {"content": "EVAL"}},
        {"match": "capital", "reply": {"content": "Paris", "usage": {"completion_tokens": 42}}},
        {"model": "fake-evaluator", "reply": {"content": "{not json", "finish_reason": "length"}},
    ])
    target = chat(fake_llm, "What is the capital of France?").json()
    assert target["choices"][0]["message"]["content"] == "Paris"
    assert target["usage"]["completion_tokens"] == 42 and target["usage"]["total_tokens"] == 8 + 42
    assert chat(fake_llm, "capital?", model="fake-evaluator").json()["choices"][0]["message"]["content"] == "EVAL"
    other = chat(fake_llm, "anything", model="fake-evaluator").json()["choices"][0]
    assert other["message"]["content"] == "{not json" and other["finish_reason"] == "length"
    # tool results and tool-call arguments are searchable too
    fake_llm.configure(scripts=[{"match": "sunny-42", "reply": {"content": "saw tool result"}}])
    messages = [{"role": "user", "content": "weather?"},
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": "c1", "type": "function",
                     "function": {"name": "get_weather", "arguments": "{\"city\": \"Oslo\"}"}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "sunny-42"}]
    r = httpx.post(fake_llm.api_base + "/chat/completions", json={"model": "fake-target", "messages": messages}).json()
    assert r["choices"][0]["message"]["content"] == "saw tool result"
    assert r["usage"]["prompt_tokens"] == 2 + 9 + 3 + 3  # "weather?", the arguments' JSON, "sunny-42", one per message


def test_example_instance_generator() -> None:
    schema = {
        "type": "object",
        "properties": {
            "label": {"type": "string", "enum": ["bad", "good"]},
            "score": {"type": "integer", "minimum": 1, "maximum": 5},
            "ratio": {"type": "number"},
            "ok": {"type": "boolean"},
            "tags": {"type": "array", "items": {"type": "string", "minLength": 10}, "minItems": 2},
            "note": {"type": ["null", "string"]},
            "span": {"anyOf": [{"type": "null"}, {"$ref": "#/$defs/Span"}]},
            "unused": {"type": "string"},
        },
        "required": ["label", "score", "ratio", "ok", "tags", "note", "span"],
        "$defs": {"Span": {"type": "object", "properties": {"start": {"type": "integer"}, "end": {"type": "integer"}}}},
    }
    value = example_instance(schema)
    assert value == {"label": "bad", "score": 1, "ratio": 0, "ok": False, "tags": ["examplexxx", "examplexxx"],
                     "note": "example", "span": {"start": 0, "end": 0}}
    jsonschema.validate(value, schema)
    assert example_instance({"type": "null"}) is None


def test_json_object_response_format(fake_llm: FakeLLM) -> None:
    r = chat(fake_llm, response_format={"type": "json_object"}).json()
    assert r["choices"][0]["message"]["content"] == "{}"


def test_injected_failures_are_deterministic(fake_llm: FakeLLM) -> None:
    fake_llm.configure(fail_rate=0.3, fail_mode="429", retry_after=2)
    with httpx.Client() as client:
        responses = [chat(fake_llm, f"request {i}", client=client) for i in range(1, 11)]
    failed = [i for i, r in enumerate(responses, start=1) if r.status_code != 200]
    assert failed == [4, 7, 10]
    assert all(responses[i - 1].status_code == 429 and responses[i - 1].headers["retry-after"] == "2" for i in failed)
    assert responses[3].json()["error"]["type"] == "rate_limit_error"
    assert fake_llm.stats()["failed_injected"] == 3
    assert [r["status"] for r in httpx.get(fake_llm.url + "/_control/requests").json()["requests"]] == \
        [200, 200, 200, 429, 200, 200, 429, 200, 200, 429]

    fake_llm.reset()
    fake_llm.configure(fail_rate=0.5, fail_mode="mixed")
    assert [chat(fake_llm).status_code for _ in range(6)] == [200, 429, 200, 500, 200, 429]


def test_fail_by_prompt_fails_a_prompt_at_most_once(fake_llm: FakeLLM) -> None:
    fake_llm.configure(fail_rate=0.5, fail_mode="429", fail_by="prompt")
    first = {f"p{i}": chat(fake_llm, f"p{i}").status_code for i in range(40)}
    assert 5 <= list(first.values()).count(429) <= 35  # about half the prompts are chosen ...
    assert all(chat(fake_llm, p).status_code == 200 for p in first)  # ... and each fails only its first attempt
    fake_llm.reset()
    assert {p: chat(fake_llm, p).status_code for p in first} == first  # the same prompts, every time


def test_timeout_mode_hangs_then_answers(fake_llm: FakeLLM) -> None:
    fake_llm.configure(fail_rate=1.0, fail_mode="timeout", hang_ms=300)
    start = time.monotonic()
    r = chat(fake_llm)
    assert r.status_code == 200 and time.monotonic() - start >= 0.3
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(fake_llm.api_base + "/chat/completions", timeout=0.1,
                   json={"model": "m", "messages": [{"role": "user", "content": "x"}]})


def test_status_rule_fails_every_time_and_beats_injection(fake_llm: FakeLLM) -> None:
    fake_llm.configure(scripts=[{"match": "doomed", "reply": {"status": 503}}], fail_rate=1.0, fail_mode="429")
    for _ in range(2):
        r = chat(fake_llm, "doomed")
        assert r.status_code == 503 and r.json()["error"]["type"] == "server_error"
    assert fake_llm.stats()["failed_injected"] == 0
    assert chat(fake_llm, "fine").status_code == 429


def test_fifty_concurrent_slow_requests(fake_llm: FakeLLM) -> None:
    fake_llm.configure(latency_ms=200)

    async def burst() -> list[int]:
        limits = httpx.Limits(max_connections=100)
        async with httpx.AsyncClient(limits=limits, timeout=10) as client:
            payload = {"model": "fake-target", "messages": [{"role": "user", "content": "hi"}]}
            rs = await asyncio.gather(*(client.post(fake_llm.api_base + "/chat/completions", json=payload)
                                        for _ in range(50)))
            return [r.status_code for r in rs]

    start = time.monotonic()
    statuses = asyncio.run(burst())
    assert statuses == [200] * 50
    assert time.monotonic() - start >= 0.2
    assert fake_llm.stats()["peak_in_flight"] == 50  # all 50 slept at once: served concurrently, not in turn


# --- through litellm ---------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_litellm_default_reply_usage_and_latency(fake_llm: FakeLLM) -> None:
    fake_llm.configure(latency_ms=200)
    start = time.monotonic()
    r = await ask(fake_llm, "Say hi")
    assert time.monotonic() - start >= 0.2
    assert r.choices[0].message.content == "Simulated reply to: Say hi"
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (3, 6, 9)
    assert fake_llm.requests()[0]["model"] == "fake-target"  # litellm strips the "openai/" prefix

    fake_llm.configure(scripts=[{"match": "quick", "reply": {"content": "fast", "latency_ms": 0}}])
    assert (await ask(fake_llm, "quick one")).choices[0].message.content == "fast"  # the rule (and its latency_ms) applied


@pytest.mark.anyio
async def test_litellm_scripted_by_model(fake_llm: FakeLLM) -> None:
    fake_llm.configure(scripts=[{"model": "fake-evaluator", "reply": {"content": "judged"}}])
    assert (await ask(fake_llm, model="openai/fake-evaluator")).choices[0].message.content == "judged"
    assert (await ask(fake_llm)).choices[0].message.content == "Simulated reply to: Hello"


@pytest.mark.anyio
async def test_litellm_tool_calls_and_recorded_request(fake_llm: FakeLLM) -> None:
    fake_llm.configure(scripts=[{"match": "weather", "reply": {"tool_calls": [
        {"name": "get_weather", "arguments": {"city": "Paris"}},
        {"id": "call_x", "name": "get_weather", "arguments": "{\"city\": \"Rome\"}"}]}}])
    messages = [{"role": "system", "content": "Use tools."}, {"role": "user", "content": "What's the weather?"}]
    # litellm 1.106 imports its MCP gateway whenever `tools` is passed: this also checks that the
    # `litellm[mcp]` dependency is installed.
    r = await ask(fake_llm, messages=messages, tools=[WEATHER_TOOL])
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    calls = choice.message.tool_calls
    assert [(c.id, c.function.name, json.loads(c.function.arguments)) for c in calls] == [
        ("call_1", "get_weather", {"city": "Paris"}), ("call_x", "get_weather", {"city": "Rome"})]
    body = fake_llm.requests()[0]
    assert body["messages"] == messages and body["tools"] == [WEATHER_TOOL]


@pytest.mark.anyio
async def test_litellm_reasoning_content(fake_llm: FakeLLM) -> None:
    fake_llm.configure(scripts=[{"reply": {"content": "42", "reasoning_content": "6 times 7"}}])
    r = await ask(fake_llm, "What is 6*7?", reasoning_effort="low")
    assert r.choices[0].message.content == "42"
    assert r.choices[0].message.reasoning_content == "6 times 7"
    assert fake_llm.requests()[0]["reasoning_effort"] == "low"


@pytest.mark.anyio
async def test_litellm_json_schema_reply_is_valid(fake_llm: FakeLLM) -> None:
    schema = {"type": "object", "additionalProperties": False,
              "properties": {"spans": {"type": "array", "minItems": 1, "items": {
                  "type": "object", "additionalProperties": False, "required": ["start", "end", "label"],
                  "properties": {"start": {"type": "integer", "minimum": 0}, "end": {"type": "integer", "minimum": 1},
                                 "label": {"type": "string", "enum": ["hallucination", "refusal"]}}}},
                             "summary": {"type": ["string", "null"]}},
              "required": ["spans", "summary"]}
    fmt = {"type": "json_schema", "json_schema": {"name": "annotations", "schema": schema, "strict": True}}
    r = await ask(fake_llm, "Annotate this.", response_format=fmt)
    value = json.loads(r.choices[0].message.content)
    jsonschema.validate(value, schema)
    assert value == {"spans": [{"start": 0, "end": 1, "label": "hallucination"}], "summary": "example"}
    assert fake_llm.requests()[0]["response_format"]["json_schema"]["schema"] == schema


@pytest.mark.anyio
@pytest.mark.parametrize("status, exc_type", [(500, litellm.InternalServerError), (429, litellm.RateLimitError),
                                              (400, litellm.BadRequestError)])
async def test_litellm_status_rules_map_to_exceptions(fake_llm: FakeLLM, status: int, exc_type: type[Any]) -> None:
    fake_llm.configure(scripts=[{"reply": {"status": status}}], retry_after=7)
    with pytest.raises(exc_type) as info:
        await ask(fake_llm)
    assert info.value.status_code == status
    assert fake_llm.request_count == 1  # num_retries=0: neither litellm nor the OpenAI SDK retried
    if status == 429:
        # litellm rebuilds exc.response without headers; the real ones are on litellm_response_headers
        assert info.value.litellm_response_headers["retry-after"] == "7"


@pytest.mark.anyio
async def test_litellm_ten_concurrent_calls(fake_llm: FakeLLM) -> None:
    fake_llm.configure(latency_ms=200)
    results = await asyncio.gather(*(ask(fake_llm, f"call {i}") for i in range(10)))
    contents = sorted(r.choices[0].message.content for r in results)
    assert contents == sorted(f"Simulated reply to: call {i}" for i in range(10))
    assert fake_llm.stats()["peak_in_flight"] == 10


# --- CLI ---------------------------------------------------------------------------------------------


def _read_line(proc: subprocess.Popen[str], timeout: float = 10) -> str:
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)  # type: ignore[arg-type]
        if not sel.select(timeout):
            proc.kill()
            pytest.fail("fakellm CLI did not print its URL in time")
    return proc.stdout.readline().strip()  # type: ignore[union-attr]


def test_cli_serves_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    config = tmp_path / "fake.json"
    config.write_text(json.dumps({"scripts": [{"match": "cli", "reply": {"content": "from config"}}],
                                  "latency_ms": 500}))
    # this checkout's fixtures package (an editable install may map experiment_runner.fixtures to another tree)
    checkout_env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "fixtures.fakellm", "--port", "0",
                             "--latency-ms", "0", "--config", str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=checkout_env)
    try:
        api_base = _read_line(proc)
        assert api_base.startswith("http://127.0.0.1:") and api_base.endswith("/v1")
        r = httpx.post(api_base + "/chat/completions",
                       json={"model": "fake-target", "messages": [{"role": "user", "content": "cli test"}]})
        assert r.json()["choices"][0]["message"]["content"] == "from config"
        assert httpx.get(api_base.removesuffix("/v1") + "/_control/config").json()["latency_ms"] == 0  # --latency-ms beats the file
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    assert out == "" and "Traceback" not in err and err == ""
