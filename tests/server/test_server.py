"""The REST API (issue 7): the seeds' paths and shapes, background runs, resume at startup, a real uvicorn."""

import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import FIXTURES
from factories import wait_until_serving
from fastapi.testclient import TestClient
from jsonschema import Draft202012Validator, FormatChecker

from experiment_runner.engine.experiments import create_experiment
from experiment_runner.engine.spec import ExperimentSpec
from experiment_runner.fixtures.fakellm import FakeLLM
from experiment_runner.ingest.importing import import_files
from experiment_runner.results.export import load_export_schema
from experiment_runner.server.app import create_app
from experiment_runner.store import Store

SAMPLE = FIXTURES / "ragtruth-sample.conversations.jsonl"
UNKNOWN = "00000000-0000-4000-8000-000000000000"
EXPERIMENT_PATHS = ["/v1/experiments/{}", "/v1/experiments/{}/items", "/v1/experiments/{}/export"]


def sample_objects() -> list[dict[str, Any]]:
    return [json.loads(line) for line in SAMPLE.read_text(encoding="utf-8").splitlines() if line.strip()]


def seed_body(fake_llm: FakeLLM, conversation_ids: list[str], **extra: Any) -> dict[str, Any]:
    """The seed's request body, plus where the (fake) target and evaluator models live."""
    return {
        "name": "baseline",
        "model": "openai/target",
        "conversation_ids": conversation_ids,
        "api_base": fake_llm.api_base,
        "evaluator_model": "openai/judge",
        "evaluator_api_base": fake_llm.api_base,
        **extra,
    }


def wait_done(client: Any, experiment_id: str, timeout: float = 30, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """Poll GET /v1/experiments/ID until every item is completed and the run has finished."""
    deadline = time.monotonic() + timeout
    while True:
        response = client.get(f"/v1/experiments/{experiment_id}", headers=headers or {})
        assert response.status_code == 200, response.text
        experiment = response.json()
        summary = experiment["status_summary"]
        if summary["completed"] == summary["total"] and experiment["completed_at"]:
            return experiment
        assert summary["failed"] == 0, experiment
        assert time.monotonic() < deadline, f"experiment did not finish: {summary}"
        time.sleep(0.05)


def check_export(document: dict[str, Any]) -> None:
    errors = list(Draft202012Validator(load_export_schema(), format_checker=FormatChecker()).iter_errors(document))
    assert not errors, [e.message for e in errors[:3]]


def rows(db: Path, sql: str, *args: object) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


@pytest.fixture
def ids(store: Store) -> list[str]:
    return import_files(store, [str(SAMPLE)]).ids


@pytest.fixture
def client(store: Store) -> Iterator[TestClient]:
    with TestClient(create_app(store)) as test_client:  # the context manager runs the lifespan
        yield test_client


# --- happy paths --------------------------------------------------------------------------------


def test_create_runs_in_the_background_and_the_export_validates(client, fake_llm, db_path) -> None:
    imported = client.post("/v1/conversations", json=sample_objects()[:6])
    assert imported.status_code == 201
    assert imported.json() == {"ids": [o["id"] for o in sample_objects()[:6]], "new": 6, "unchanged": 0, "duplicates": 0}
    conversation_ids = imported.json()["ids"]

    created = client.post("/v1/experiments", json=seed_body(fake_llm, conversation_ids))
    assert created.status_code == 201, created.text
    experiment = created.json()
    assert created.headers["location"] == f"/v1/experiments/{experiment['id']}"
    assert experiment["name"] == "baseline" and experiment["model"] == "openai/target"
    assert experiment["conversation_ids"] == conversation_ids and experiment["pass_through"] is False
    assert experiment["total_items_count"] == 6 and experiment["evaluations_expected"] == 6
    assert set(experiment["metrics"]) >= {"issue_rate", "total_issues", "parameter_issues"}
    client.portal.call(client.app.state.runs.start, experiment["id"])  # already running: not a second engine

    done = wait_done(client, experiment["id"])
    assert done["completed_items_count"] == 6 and done["evaluations_received"] == 6
    assert fake_llm.request_count == 12  # one target and one evaluator call per item, no more

    export = client.get(f"/v1/experiments/{experiment['id']}/export")
    assert export.status_code == 200 and export.headers["content-type"] == "application/json"
    document = export.json()
    check_export(document)
    assert document["experiment"]["id"] == experiment["id"] and len(document["items"]) == 6
    assert len(document["evaluations"]) == 6
    assert client.app.state.runs.running() == []


def test_list_and_items_are_pages_in_the_seed_shape(client, ids) -> None:
    made = []
    for n in range(3):
        body = {"name": f"copy {n}", "model": "openai/target", "pass_through": True, "conversation_ids": ids[:5]}
        made.append(client.post("/v1/experiments", json=body).json()["id"])
    for experiment_id in made:
        wait_done(client, experiment_id)

    first = client.get("/v1/experiments", params={"limit": 2}).json()
    assert set(first) == {"next_page_cursor", "query", "has_more", "items"}
    assert first["has_more"] is True and first["query"] == {"limit": 2, "cursor": None}
    second = client.get("/v1/experiments", params={"limit": 2, "cursor": first["next_page_cursor"]}).json()
    assert second["has_more"] is False and second["next_page_cursor"] is None
    assert [e["id"] for e in first["items"] + second["items"]] == made[::-1]  # newest first
    assert client.get("/v1/experiments").json()["query"] == {"limit": 50, "cursor": None}

    seen, cursor = [], None
    while True:
        params: dict[str, Any] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = client.get(f"/v1/experiments/{made[0]}/items", params=params).json()
        seen += page["items"]
        cursor = page["next_page_cursor"]
        if not page["has_more"]:
            break
    assert [i["source_conversation"]["id"] for i in seen] == ids[:5]
    assert all(i["status"] == "completed" and i["result_conversation"]["messages"] for i in seen)


def test_get_and_delete(client, ids, db_path) -> None:
    experiment_id = client.post(
        "/v1/experiments", json={"name": "x", "model": "m", "pass_through": True, "conversation_ids": ids[:2]}
    ).json()["id"]
    wait_done(client, experiment_id)
    got = client.get(f"/v1/experiments/{experiment_id.upper()}")  # any spelling of the UUID
    assert got.status_code == 200 and got.json()["id"] == experiment_id

    deleted = client.delete(f"/v1/experiments/{experiment_id}")
    assert deleted.status_code == 204 and deleted.content == b""
    for path in EXPERIMENT_PATHS:
        assert client.get(path.format(experiment_id)).status_code == 404
    assert client.delete(f"/v1/experiments/{experiment_id}").status_code == 404
    assert rows(db_path, "SELECT count(*) FROM conversation WHERE type = 'source'") == [(40,)]  # sources stay
    assert rows(db_path, "SELECT count(*) FROM conversation WHERE type = 'result'") == [(0,)]


def test_delete_stops_a_running_experiment(client, fake_llm, ids, db_path) -> None:
    fake_llm.configure(latency_ms=60_000)  # the first calls never finish on their own: no call can follow them
    experiment_id = client.post("/v1/experiments", json=seed_body(fake_llm, ids[:20])).json()["id"]
    deadline = time.monotonic() + 20
    while fake_llm.stats()["in_flight"] < 8:  # the first calls (8 at once, the default concurrency) are under way
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert client.delete(f"/v1/experiments/{experiment_id}").status_code == 204
    assert client.app.state.runs.running() == []  # stop() waited for the run's end: it makes no call after this
    assert fake_llm.request_count == 8
    assert rows(db_path, "SELECT count(*) FROM item") == [(0,)]
    assert rows(db_path, "SELECT count(*) FROM conversation WHERE type = 'result'") == [(0,)]


def test_import_conversations_follows_the_cli_rules(client, db_path) -> None:
    one = {"id": "c1", "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}
    response = client.post("/v1/conversations", json=one)  # one object
    assert response.status_code == 201 and response.json() == {"ids": ["c1"], "new": 1, "unchanged": 0, "duplicates": 0}
    anonymous = {"messages": [{"role": "user", "parts": [{"type": "text", "content": "Hey"}]}]}
    again = client.post("/v1/conversations", json=[one, anonymous]).json()
    assert again["ids"][0] == "c1" and again["new"] == 1 and again["unchanged"] == 1

    bad = client.post("/v1/conversations", json=[{"id": "c2", "messages": [{"role": "user", "content": "x"}]}, {"messages": []}])
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"] == ["body", 1] and "body[1]" in bad.json()["detail"][0]["msg"]
    changed = client.post("/v1/conversations", json={"id": "c1", "messages": [{"role": "user", "content": "Other"}]})
    assert changed.status_code == 422 and "different content" in changed.json()["detail"][0]["msg"]
    assert client.post("/v1/conversations", json="text").status_code == 422
    stored = {r[0] for r in rows(db_path, "SELECT id FROM conversation")}
    assert stored == {"c1", again["ids"][1]}  # nothing from the bad bodies


# --- invalid input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "loc", "needle"),
    [
        ({"name": ""}, ["body", "name"], "at least 1"),
        ({"name": "n" * 256}, ["body", "name"], "at most 255"),
        ({"model": ""}, ["body", "model"], "at least 1"),
        ({"model": "  "}, ["body", "model"], "model"),
        ({"conversation_ids": []}, ["body", "conversation_ids"], "at least 1"),
        ({"conversation_ids": [f"c{i}" for i in range(101)]}, ["body", "conversation_ids"], "at most 100"),
        ({"conversation_ids": ["ragtruth-15175", "no-such-conversation"]}, ["body", "conversation_ids"], "'no-such-conversation'"),
        ({"reasoning_config": {"effort": "extreme"}}, ["body", "reasoning_config"], "effort"),
        ({"output_schema": [{"name": "a", "type": "date"}]}, ["body", "output_schema", 0], "type must be one of"),
        ({"evaluator_model": None, "evaluator_api_base": "http://x"}, ["body", "evaluator_model"], "evaluator"),
        ({"labels": {"labels": [{"name": "A", "description": "a"}, {"name": "a", "description": "b"}]}}, ["body", "labels"], "twice"),
        ({"evaluator_modle": "openai/judge"}, ["body", "evaluator_modle"], "not permitted"),
        ({"pass_through": "maybe"}, ["body", "pass_through"], "boolean"),
    ],
)
def test_create_with_bad_input_is_422_naming_the_field(client, ids, fake_llm, db_path, change, loc, needle) -> None:
    body = seed_body(fake_llm, ids[:2]) | change
    response = client.post("/v1/experiments", json=body)
    assert response.status_code == 422, response.text
    errors = response.json()["detail"]
    assert any(e["loc"] == loc and needle in e["msg"] and e["type"] for e in errors), errors
    assert rows(db_path, "SELECT count(*) FROM experiment") == [(0,)]


@pytest.mark.parametrize("path", ["/v1/experiments", f"/v1/experiments/{UNKNOWN}/items"])
@pytest.mark.parametrize(
    ("params", "loc"),
    [({"limit": 0}, ["query", "limit"]), ({"limit": 101}, ["query", "limit"]), ({"limit": "ten"}, ["query", "limit"]),
     ({"cursor": "not-a-cursor"}, ["query", "cursor"])],
)
def test_bad_paging_is_422(client, store, ids, path, params, loc) -> None:
    if "items" in path:  # an existing experiment, so the cursor is what is wrong
        experiment_id = create_experiment(store, ExperimentSpec(name="x", model="m", conversation_ids=ids[:1]), check_models=False)
        path = path.replace(UNKNOWN, experiment_id)
    response = client.get(path, params=params)
    assert response.status_code == 422
    assert [e["loc"] for e in response.json()["detail"]] == [loc]


@pytest.mark.parametrize("template", EXPERIMENT_PATHS + ["DELETE /v1/experiments/{}"])
def test_malformed_and_unknown_ids_are_404(client, template) -> None:
    """The README promises 404 for an id that names no experiment, well-formed or not (not FastAPI's 422)."""
    method, _, path = template.rpartition(" ")
    method = method or "GET"
    for malformed in ("nope", "not-a-uuid"):
        response = client.request(method, path.format(malformed))
        assert response.status_code == 404 and response.json() == {"detail": f"no experiment with id '{malformed}'"}
    unknown = client.request(method, path.format(UNKNOWN))
    assert unknown.status_code == 404 and unknown.json() == {"detail": f"no experiment with id '{UNKNOWN}'"}


@pytest.mark.parametrize("path", ["/v1/experiments", "/v1/conversations"])
def test_body_that_is_not_json_is_422(client, path) -> None:
    response = client.post(path, content=b'{"name": ', headers={"Content-Type": "application/json"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == "json_invalid"


def test_bearer_token_is_required_when_set(store, ids) -> None:
    with TestClient(create_app(store, token="s3cret")) as client:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret"}):
            response = client.get("/v1/experiments", headers=headers)
            assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
            assert isinstance(response.json()["detail"], str)
        bad_json = client.post("/v1/experiments", content=b"{", headers={"Content-Type": "application/json"})
        assert bad_json.status_code == 401  # authentication comes before anything about the input
        assert client.get(f"/v1/experiments/{UNKNOWN}").status_code == 401

        auth = {"Authorization": "Bearer s3cret"}
        assert client.get("/v1/experiments", headers=auth).status_code == 200
        body = {"name": "x", "model": "m", "pass_through": True, "conversation_ids": ids[:1]}
        created = client.post("/v1/experiments", json=body, headers=auth)
        assert created.status_code == 201
        wait_done(client, created.json()["id"], headers=auth)

        docs = client.get("/openapi.json")  # the docs stay public; they show the bearer scheme
        assert docs.status_code == 200 and docs.json()["security"] == [{"bearer": []}]
        assert client.get("/docs").status_code == 200


def test_openapi_documents_every_endpoint_with_the_seed_fields(client) -> None:
    schema = client.get("/openapi.json").json()
    assert schema["info"]["title"] == "experiment-runner" and schema["info"]["version"]
    operations = {(m.upper(), p) for p, ops in schema["paths"].items() for m in ops}
    assert operations == {
        ("POST", "/v1/experiments"), ("GET", "/v1/experiments"), ("GET", "/v1/experiments/{experiment_id}"),
        ("GET", "/v1/experiments/{experiment_id}/items"), ("GET", "/v1/experiments/{experiment_id}/export"),
        ("DELETE", "/v1/experiments/{experiment_id}"), ("POST", "/v1/conversations"), ("POST", "/v1/traces"),
    }
    body = schema["components"]["schemas"]["CreateExperiment"]
    assert body["required"] == ["name", "model", "conversation_ids"]
    fields = body["properties"]
    assert fields["name"]["description"] == "Name of the experiment" and fields["name"]["maxLength"] == 255
    assert fields["model"]["description"] == "Target model to run inference with"
    assert fields["conversation_ids"]["description"] == "Conversation IDs to include"
    assert fields["conversation_ids"]["maxItems"] == 100
    assert fields["pass_through"]["description"].startswith("If true, copy existing responses instead of running inference.")
    assert fields["system_prompt_override"]["description"] == (
        "Optional system prompt to replace the original in all copied conversations"
    )
    assert fields["output_schema"]["description"] == "Optional structured output schema for the model response"
    assert fields["reasoning_config"]["description"] == "Optional reasoning/thinking configuration for the model"
    limit = next(p for p in schema["paths"]["/v1/experiments"]["get"]["parameters"] if p["name"] == "limit")
    assert limit["schema"]["maximum"] == 100 and limit["description"] == "Maximum number of experiments to return"
    export = schema["paths"]["/v1/experiments/{experiment_id}/export"]["get"]["responses"]["200"]
    assert export["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ExperimentExport"}
    assert "ExperimentExport" in schema["components"]["schemas"]


# --- restarts, a real server, a shared database ------------------------------------------------


def test_startup_resumes_what_a_server_left_unfinished_and_nothing_else(store, ids, fake_llm) -> None:
    ours = create_experiment(store, ExperimentSpec(**seed_body(fake_llm, ids[:4])), runner="server")  # its server died
    theirs = create_experiment(store, ExperimentSpec(**seed_body(fake_llm, ids[4:6])))  # a CLI's, never run
    with TestClient(create_app(store)) as client:
        done = wait_done(client, ours)
        assert client.get(f"/v1/experiments/{theirs}").json()["status_summary"]["pending"] == 2
    assert done["completed_items_count"] == 4 and done["evaluations_received"] == 4
    assert fake_llm.request_count == 8  # 4 replies and 4 evaluations: the CLI's experiment was not run


def test_shutdown_mid_run_leaves_it_resumable_and_the_next_start_finishes_it(store, ids, fake_llm, db_path) -> None:
    fake_llm.configure(latency_ms=200)
    with TestClient(create_app(store, concurrency=2)) as client:
        experiment_id = client.post("/v1/experiments", json=seed_body(fake_llm, ids[:8])).json()["id"]
        deadline = time.monotonic() + 20
        while not rows(db_path, "SELECT 1 FROM item WHERE status = 'completed'"):
            assert time.monotonic() < deadline
            time.sleep(0.02)
    left = rows(db_path, "SELECT count(*) FROM item WHERE status != 'completed'")[0][0]
    assert left > 0  # the shutdown cancelled the run part-way
    fake_llm.configure(latency_ms=0)
    with TestClient(create_app(store)) as client:
        done = wait_done(client, experiment_id)
    assert done["completed_items_count"] == 8 and done["evaluations_received"] == 8
    assert rows(db_path, "SELECT count(*) FROM evaluation") == [(8,)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_real_uvicorn_server(tmp_path, fake_llm) -> None:
    db = tmp_path / "served.db"
    fake_llm.configure(fail_rate=1.0, fail_by="prompt", fail_mode="429")  # each prompt's first attempt: the log shows the retries
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "EXPERIMENT_RUNNER_TOKEN"}
    server = subprocess.Popen(
        [sys.executable, "-m", "experiment_runner", "--db", str(db), "serve", "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            wait_until_serving(server, f"http://127.0.0.1:{port}/v1/experiments", timeout=30)
            imported = http.post("/v1/conversations", json=sample_objects()[:3])
            assert imported.status_code == 201
            created = http.post(
                "/v1/experiments",
                headers={"Content-Type": "application/json"},
                content=json.dumps(seed_body(fake_llm, imported.json()["ids"])),
            )
            assert created.status_code == 201, created.text
            experiment_id = created.json()["id"]
            wait_done(http, experiment_id)
            with http.stream("GET", f"/v1/experiments/{experiment_id}/export") as response:
                assert response.status_code == 200
                document = json.loads(b"".join(response.iter_bytes()))
            check_export(document)
            assert len(document["items"]) == 3 and len(document["evaluations"]) == 3
    finally:
        server.send_signal(signal.SIGINT)
        try:
            _, stderr = server.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            raise
    assert server.returncode == 0, stderr
    assert f"experiment {experiment_id}: 3 items run: 3 completed, 0 failed" in stderr  # the CLI's words (RunOutcome)
    assert len(re.findall(r"^INFO: +openai/\S+: HTTP 429\b.*; retry 1 of 5 in [\d.]+ s$", stderr, re.M)) == 6, stderr  # target and judge
    assert "Traceback" not in stderr


def test_cli_and_server_share_one_database_and_lose_nothing(store, ids, fake_llm, db_path, monkeypatch) -> None:
    monkeypatch.setenv("EXPERIMENT_RUNNER_NO_CACHE", "1")  # counts calls per item: the cache would answer repeated questions
    fake_llm.configure(latency_ms=60)
    server_ids, cli_ids = ids[:20], ids[20:40]
    with TestClient(create_app(store, concurrency=2)) as client:
        cli = subprocess.Popen(
            [sys.executable, "-m", "experiment_runner", "--db", str(db_path), "run", "--name", "from the cli",
             "--model", "openai/target", "--api-base", fake_llm.api_base, "--evaluator-model", "openai/judge",
             "--evaluator-api-base", fake_llm.api_base, "--concurrency", "1",
             *[arg for cid in cli_ids for arg in ("--conversation", cid)]],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        deadline = time.monotonic() + 30
        while fake_llm.request_count == 0:  # the CLI's run is under way (about 2.4 s of calls, one at a time)
            assert cli.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
        served = client.post("/v1/experiments", json=seed_body(fake_llm, server_ids)).json()["id"]
        stdout, stderr = cli.communicate(timeout=60)
        assert cli.returncode == 0, stderr
        from_cli = stdout.strip().splitlines()[-1]
        wait_done(client, served)
        cli_done = client.get(f"/v1/experiments/{from_cli}").json()

    assert cli_done["completed_items_count"] == 20 and cli_done["evaluations_received"] == 20
    for experiment_id in (served, from_cli):
        assert rows(db_path, "SELECT status, count(*) FROM item WHERE experiment_id = ? GROUP BY status", experiment_id) == [("completed", 20)]
    assert rows(db_path, "SELECT count(*) FROM evaluation") == [(40,)]
    assert rows(db_path, "SELECT count(*) FROM conversation WHERE type = 'result'") == [(40,)]
    source_messages = rows(db_path, "SELECT count(*) FROM message m JOIN item i ON i.source_conversation_id = m.conversation_id")
    result_messages = rows(db_path, "SELECT count(*) FROM message m JOIN item i ON i.result_conversation_id = m.conversation_id")
    assert source_messages == result_messages  # each result is its source's history plus one new reply
    assert fake_llm.request_count == 80
    # the two runs really overlapped in time
    spans = {e: rows(db_path, "SELECT min(updated_at), max(updated_at) FROM item WHERE experiment_id = ?", e)[0] for e in (served, from_cli)}
    assert max(s[0] for s in spans.values()) < min(s[1] for s in spans.values()), spans
