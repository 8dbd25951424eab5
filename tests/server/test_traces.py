"""`POST /v1/traces` (issue 16): OTLP/HTTP JSON and protobuf, the token rule, a real OTel SDK exporter."""

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import FIXTURES
from factories import wait_until_serving
from fastapi.testclient import TestClient

from experiment_runner.ingest.conversations import load_conversation
from experiment_runner.server.app import create_app
from experiment_runner.store import Store

JSONL = FIXTURES / "openai-v2.otlp.jsonl"
PROTOBUF = FIXTURES / "openai-v2.otlp.pb"
EXPECTED_IDS = ["79c8c2926b94b5b5749882321e35049e", "3cf3bd58da60fb1ceb7a79959588532d", "conv-ada-0001"]


def lines() -> list[dict[str, Any]]:
    return [json.loads(line) for line in JSONL.read_text(encoding="utf-8").splitlines()]


def conversation_ids(db: Path) -> list[str]:
    conn = sqlite3.connect(db)
    try:
        return [row[0] for row in conn.execute("SELECT id FROM conversation WHERE type = 'source' ORDER BY id")]
    finally:
        conn.close()


@pytest.fixture
def client(store: Store) -> Iterator[TestClient]:
    with TestClient(create_app(store)) as test_client:
        yield test_client


def test_json_export_lands_conversations_and_answers_like_a_collector(client, db_path) -> None:
    first = client.post("/v1/traces", json=lines()[0])
    assert first.status_code == 200 and first.json() == {}  # one chat span, nothing skipped
    second = client.post("/v1/traces", json=lines()[1])
    assert second.status_code == 200
    assert second.json() == {"partialSuccess": {"errorMessage": "2 of 4 span(s) skipped: not inference spans; 1 conversation(s), 1 new"}}
    assert conversation_ids(db_path) == sorted(EXPECTED_IDS[:2])
    again = client.post("/v1/traces", json=lines()[1])  # the same trace again: nothing new
    assert again.status_code == 200 and "0 new" in again.json()["partialSuccess"]["errorMessage"]


def test_protobuf_export_matches_the_json_file(client, store: Store) -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

    response = client.post("/v1/traces", content=PROTOBUF.read_bytes(), headers={"Content-Type": "application/x-protobuf"})
    assert response.status_code == 200 and response.headers["content-type"] == "application/x-protobuf"
    answer = ExportTraceServiceResponse.FromString(response.content)
    assert "4 of 9 span(s) skipped" in answer.partial_success.error_message and answer.partial_success.rejected_spans == 0
    with store.read() as session:
        weather = load_conversation(session, EXPECTED_IDS[1])
    assert [m["role"] for m in weather["messages"]] == ["system", "user", "assistant", "tool", "assistant"]
    # The JSON file's conversations, imported again, are the same content: nothing new.
    assert client.post("/v1/traces", json={"resourceSpans": [r for line in lines() for r in line["resourceSpans"]]}).json()[
        "partialSuccess"]["errorMessage"].endswith("3 conversation(s), 0 new")


def test_gzip_bodies_are_accepted(client) -> None:
    import gzip

    body = gzip.compress(PROTOBUF.read_bytes())
    response = client.post("/v1/traces", content=body, headers={"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"})
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("body", "content_type", "status", "message"),
    [
        (b"\xff\x00 not protobuf", "application/x-protobuf", 400, "not a protobuf ExportTraceServiceRequest"),
        (b"{", "application/json", 400, "invalid JSON"),
        (b'{"messages": []}', "application/json", 400, "not an OTLP ExportTraceServiceRequest"),
        (b"x", "text/plain", 415, "unsupported Content-Type"),
    ],
)
def test_undecodable_bodies_answer_an_error_status(client, db_path, body: bytes, content_type: str, status: int, message: str) -> None:
    response = client.post("/v1/traces", content=body, headers={"Content-Type": content_type})
    assert response.status_code == status and message in response.json()["message"]
    assert conversation_ids(db_path) == []


def test_a_malformed_span_is_a_400_naming_the_span(client) -> None:
    request = lines()[0]
    request["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["attributes"].append({"key": "gen_ai.usage.input_tokens", "value": {"intValue": "x"}})
    response = client.post("/v1/traces", json=request)
    assert response.status_code == 400 and "body: span 4242aadbc8f429a4: attribute 'gen_ai.usage.input_tokens'" in response.json()["message"]


def test_the_token_rule_covers_traces(store: Store) -> None:
    with TestClient(create_app(store, token="s3cret")) as client:
        assert client.post("/v1/traces", json=lines()[0]).status_code == 401
        authorized = client.post("/v1/traces", json=lines()[0], headers={"Authorization": "Bearer s3cret"})
        assert authorized.status_code == 200


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """`experiment-runner serve --token s3cret` on a free port, as a real uvicorn process: (base URL, db)."""
    db, port = tmp_path / "served.db", free_port()
    env = {k: v for k, v in os.environ.items() if k != "EXPERIMENT_RUNNER_TOKEN"}
    server = subprocess.Popen(
        [sys.executable, "-m", "experiment_runner", "--db", str(db), "serve", "--port", str(port), "--token", "s3cret"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(server, f"{base}/openapi.json")
        yield base, db
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()


def sdk_spans() -> Any:
    """Spans made by the OpenTelemetry SDK as an instrumented app makes them: an agent, a chat, a tool."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("tests.sdk")
    history = [{"role": "user", "parts": [{"type": "text", "content": "Weather in Oslo?"}]}]
    reply = [{"role": "assistant", "parts": [{"type": "text", "content": "Rain."}], "finish_reason": "stop"}]
    with tracer.start_as_current_span("invoke_agent helper", attributes={"gen_ai.operation.name": "invoke_agent", "gen_ai.conversation.id": "sdk-conv-1"}):
        with tracer.start_as_current_span("execute_tool forecast", attributes={"gen_ai.operation.name": "execute_tool"}):
            pass
        with tracer.start_as_current_span("chat m", attributes={
            "gen_ai.operation.name": "chat", "gen_ai.request.model": "m", "gen_ai.provider.name": "openai",
            "gen_ai.input.messages": json.dumps(history), "gen_ai.output.messages": json.dumps(reply),
            "gen_ai.usage.input_tokens": 5, "gen_ai.usage.output_tokens": 1, "gen_ai.response.finish_reasons": ["stop"],
        }):
            pass
    provider.shutdown()
    return memory.get_finished_spans()


def test_a_real_otel_sdk_exporter_posting_to_serve(served) -> None:
    pytest.importorskip("opentelemetry.exporter.otlp.proto.http")
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import SpanExportResult

    base, db = served
    spans = sdk_spans()
    wrong = OTLPSpanExporter(endpoint=f"{base}/v1/traces", headers={"Authorization": "Bearer wrong"}, timeout=10)
    assert wrong.export(spans) == SpanExportResult.FAILURE
    exporter = OTLPSpanExporter(endpoint=f"{base}/v1/traces", headers={"Authorization": "Bearer s3cret"}, timeout=10)
    assert exporter.export(spans) == SpanExportResult.SUCCESS  # the SDK's default: protobuf over HTTP
    exporter.shutdown()
    assert conversation_ids(db) == ["sdk-conv-1"]
    conn = sqlite3.connect(db)
    try:
        stored = conn.execute("SELECT role, parts, generation FROM message WHERE conversation_id = 'sdk-conv-1' ORDER BY sequence_number").fetchall()
    finally:
        conn.close()
    assert [row[0] for row in stored] == ["user", "assistant"]
    assert json.loads(stored[1][1]) == [{"type": "text", "content": "Rain."}]
    generation = json.loads(stored[1][2])
    assert generation["model"] == "m" and generation["input_tokens"] == 5 and generation["finish_reasons"] == ["stop"]
