"""Limits on input through the API (issue 21 items 8, 9 and 11): 400 past a JSON limit on `POST /v1/conversations`
and `POST /v1/traces`, NaN refused, nothing the API writes holds NaN, and an import summary that adds up."""

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import FIXTURES, dump
from fastapi.testclient import TestClient

from experiment_runner.server.app import create_app
from experiment_runner.store import Store

JSON = {"Content-Type": "application/json"}
SPAN = '{"traceId": "0123456789abcdef0123456789abcdef", "spanId": "0123456789abcdef", "attributes": [{"key": "k", "value": %s}]}'


def trace(value: str) -> bytes:
    return ('{"resourceSpans": [{"scopeSpans": [{"spans": [' + SPAN % value + "]}]}]}").encode()


def call_with_arguments(arguments: str) -> dict:
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": arguments}}
    return {"messages": [{"role": "user", "content": "go"}, {"role": "assistant", "content": None, "tool_calls": [call]}]}


@pytest.fixture
def client(store: Store) -> Iterator[TestClient]:
    with TestClient(create_app(store)) as test_client:
        yield test_client


CONVERSATION_BODIES = {
    "5000-deep arrays": (b'{"messages": [], "x": ' + b"[" * 5000 + b"]" * 5000 + b"}", "body:1: nested deeper than 64 levels"),
    "5000-digit integer": (b'{"messages": [], "x": ' + b"7" * 5000 + b"}", "(5000 characters) is out of range"),
    "NaN": (b'{"messages": [{"role": "assistant", "content": "y", "generation": {"model": "m", "cost_usd": NaN}}]}',
            "body:1: NaN is not allowed"),
    "arguments 2000 deep": (json.dumps([call_with_arguments("[" * 2000 + "]" * 2000)]).encode(),
                            "body[0]: message 1 tool_calls[0]: 'arguments': nested deeper than 64 levels"),
    "arguments 900 deep": (json.dumps(call_with_arguments('{"a": ' * 900 + "1" + "}" * 900)).encode(), "nested deeper than 64 levels"),
    "arguments with Infinity": (json.dumps(call_with_arguments('{"a": Infinity}')).encode(), "'arguments': Infinity is not allowed"),
}


@pytest.mark.parametrize("case", sorted(CONVERSATION_BODIES))
def test_conversations_past_a_limit_answer_400(client, db_path: Path, case: str) -> None:
    client.post("/v1/conversations", json={"id": "c0", "messages": [{"role": "user", "content": "hi"}]})
    before = dump(db_path)
    body, message = CONVERSATION_BODIES[case]
    response = client.post("/v1/conversations", content=body, headers=JSON)
    assert response.status_code == 400, response.text
    assert message in response.json()["detail"] and len(response.json()["detail"]) < 300
    assert dump(db_path) == before


TRACE_BODIES = {
    "5000-deep arrays": (trace('{"arrayValue": {"values": ' + "[" * 5000 + "]" * 5000 + "}}"), "body:1: nested deeper than 64 levels"),
    "5000-digit JSON integer": (trace('{"doubleValue": ' + "1" * 5000 + "}"), "is out of range (integers must fit in 64 bits)"),
    "5000-digit intValue": (trace('{"intValue": "' + "1" * 5000 + '"}'), "attribute 'k': intValue: integer 1111"),
    "NaN": (trace('{"doubleValue": NaN}'), "NaN is not allowed"),
    "output messages 2000 deep": (
        ('{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "0123456789abcdef0123456789abcdef", "spanId": "0123456789abcdef",'
         ' "attributes": [{"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}},'
         ' {"key": "gen_ai.output.messages", "value": {"stringValue": "' + "[" * 2000 + "]" * 2000 + '"}}]}]}]}]}').encode(),
        "span 0123456789abcdef: gen_ai.output.messages: nested deeper than 64 levels"),
}


@pytest.mark.parametrize("case", sorted(TRACE_BODIES))
def test_traces_past_a_limit_answer_400(client, db_path: Path, case: str) -> None:
    body, message = TRACE_BODIES[case]
    response = client.post("/v1/traces", content=body, headers=JSON)
    assert response.status_code == 400, response.text
    assert message in response.json()["message"] and len(response.json()["message"]) < 300
    assert response.json()["code"] == 3
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("SELECT count(*) FROM conversation").fetchone() == (0,)


def test_the_import_response_adds_up_with_duplicates(client) -> None:
    one = {"id": "c1", "messages": [{"role": "user", "content": "Hi"}]}
    anonymous = {"messages": [{"role": "user", "content": "Hey"}]}
    response = client.post("/v1/conversations", json=[one, one, anonymous, anonymous])
    assert response.status_code == 201
    answer = response.json()
    assert answer["new"] == 2 and answer["unchanged"] == 0 and answer["duplicates"] == 2 and len(answer["ids"]) == 4
    assert answer["ids"][2] == answer["ids"][3]  # the same content, the same id
    again = client.post("/v1/conversations", json=[anonymous, {**one, "tools": None}]).json()
    assert (again["new"], again["unchanged"], again["duplicates"]) == (0, 2, 0)


def test_a_nan_stored_by_an_older_release_never_reaches_the_output(run_cli, store: Store, db_path: Path) -> None:
    run_cli("import", FIXTURES / "handwritten.native.jsonl")
    with sqlite3.connect(db_path) as conn:  # what an older release stored from `"cost_usd": NaN`
        conn.execute("""UPDATE message SET generation = '{"model": "m", "provider": null, "input_tokens": 3, "output_tokens": 4,
                        "cost_usd": NaN, "latency_ms": Infinity, "finish_reasons": ["stop"]}' WHERE role = 'assistant'""")
    result = run_cli("run", "--name", "pt", "--model", "openai/x", "--pass-through", "--all")
    assert result.exit_code == 0, result.output
    experiment_id = result.stdout.split()[-1]
    exported = run_cli("export", experiment_id).stdout
    assert "NaN" not in exported and "Infinity" not in exported
    document = json.loads(exported, parse_constant=lambda word: pytest.fail(f"export holds {word}"))
    assert any(m["generation"] and m["generation"]["cost_usd"] is None for i in document["items"] for m in i["source_conversation"]["messages"])
    with TestClient(create_app(store)) as client:
        items = client.get(f"/v1/experiments/{experiment_id}/items")
        experiment = client.get(f"/v1/experiments/{experiment_id}")
    assert items.status_code == 200 and "NaN" not in items.text
    assert experiment.status_code == 200 and "NaN" not in experiment.text
