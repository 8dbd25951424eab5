"""Runners of one experiment (issue 14, issue 23): worker rows, kill -9 costs only calls in flight, racing runners join."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from conftest import FIXTURES, store_exists
from conftest import query as rows
from sqlalchemy import text

from experiment_runner.engine import writer as w
from experiment_runner.engine.experiments import create_experiment
from experiment_runner.engine.lease import LeaseTimings, acquire, leased_experiments
from experiment_runner.engine.spec import ExperimentSpec
from experiment_runner.errors import ExperimentBusyError, LeaseLostError
from experiment_runner.fixtures.fakellm import FakeLLM
from experiment_runner.ingest.importing import import_files
from experiment_runner.store import Store
from experiment_runner.store.queries import claims

SAMPLE = FIXTURES / "ragtruth-sample.conversations.jsonl"
FAST = {"EXPERIMENT_RUNNER_LEASE_HEARTBEAT": "0.2", "EXPERIMENT_RUNNER_LEASE_TIMEOUT": "2"}


def _experiment(store: Store, fake_llm: FakeLLM, evaluator: bool = False, runner: str | None = None) -> str:
    ids = import_files(store, [str(SAMPLE)]).ids
    judge = {"evaluator_model": "openai/judge", "evaluator_api_base": fake_llm.api_base} if evaluator else {}
    return create_experiment(store, ExperimentSpec(name="t", model="openai/target", conversation_ids=ids, api_base=fake_llm.api_base, **judge), runner=runner)


def _plant(store: Store, experiment_id: str, *, host: str, pid: int, age: float, claim: int = 0) -> None:
    """A worker row as another runner would have left it, holding the first `claim` items."""
    with store.write() as session:
        conn = session.connection()
        conn.execute(text("DELETE FROM worker WHERE id = 'other'"))
        claims.register(conn, {"id": "other", "experiment": experiment_id, "host": host, "pid": pid,
                               "started_at": "2026-01-01T00:00:00.000000Z", "heartbeat": time.time() - age})
        conn.execute(text("UPDATE item SET claimed_by = 'other' WHERE id IN (SELECT id FROM item ORDER BY position LIMIT :n)"),
                     {"n": claim})


def test_a_second_runner_joins_and_a_batch_run_stays_single(store, fake_llm, run_cli, monkeypatch) -> None:
    monkeypatch.setenv("EXPERIMENT_RUNNER_LEASE_TIMEOUT", "1")
    monkeypatch.setenv("EXPERIMENT_RUNNER_NO_CACHE", "1")  # counts calls per item: the cache would answer repeated questions
    experiment_id = _experiment(store, fake_llm)
    _plant(store, experiment_id, host="elsewhere", pid=4242, age=0, claim=3)  # a live runner elsewhere holds 3 items
    with pytest.raises(ExperimentBusyError, match=f"experiment {experiment_id} is being run by 4242 on elsewhere"):
        acquire(store, experiment_id, exclusive=True)
    result = run_cli("resume", experiment_id)  # joins: the 37 free items at once, the 3 once that runner goes stale
    assert result.exit_code == 0, result.stderr
    assert fake_llm.request_count == 40 and rows(store, "SELECT count(*) FROM item WHERE status = 'completed'") == [(40,)]


def test_a_stale_lease_or_a_dead_local_process_is_taken_over(store, fake_llm, run_cli) -> None:
    experiment_id = _experiment(store, fake_llm)
    _plant(store, experiment_id, host="elsewhere", pid=4242, age=60)  # no heartbeat for a minute
    assert leased_experiments(store) == set()
    lease = acquire(store, experiment_id)
    lease.release()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _plant(store, experiment_id, host=socket.gethostname(), pid=dead.pid, age=0)  # fresh, but its process is gone
    assert run_cli("resume", experiment_id).exit_code == 0
    assert rows(store, "SELECT count(*) FROM worker") == [(0,)]  # released at the end


def test_a_runner_that_lost_its_lease_cannot_write(store, fake_llm) -> None:
    experiment_id = _experiment(store, fake_llm)
    lease = acquire(store, experiment_id, LeaseTimings(heartbeat=0.1, timeout=0.2))
    time.sleep(0.3)  # it stalls past its timeout, and the next runner removes its row
    acquire(store, experiment_id, LeaseTimings(heartbeat=0.1, timeout=0.2))
    (item,) = rows(store, "SELECT id FROM item ORDER BY position LIMIT 1")[0]
    with pytest.raises(LeaseLostError, match="another runner took the lease over"):
        w.apply_events(store, experiment_id, [w.Started(item)], lease)
    assert rows(store, "SELECT count(*) FROM item WHERE status != 'pending'") == [(0,)]


def _cli(db: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, **FAST, "EXPERIMENT_RUNNER_DB": str(db), "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.Popen([sys.executable, "-m", "experiment_runner", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _kill_mid_run(db: Path, fake_llm: FakeLLM, concurrency: int, *extra: str) -> str:
    """Start `run --all` at K=`concurrency`, kill -9 it once a few items are committed; the experiment id."""
    fake_llm.configure(latency_ms=150)
    proc = _cli(db, "run", "--name", "long", "--model", "openai/target", "--api-base", fake_llm.api_base,
                "--all", "--concurrency", str(concurrency), *extra)
    deadline = time.monotonic() + 60
    while not (store_exists(db) and _completed(db) >= 6):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.stderr else ""
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    fake_llm.configure(latency_ms=0)
    return rows(db, "SELECT id FROM experiment")[0][0]


def _completed(db: Path) -> int:
    try:
        return rows(db, "SELECT count(*) FROM item WHERE status = 'completed'")[0][0]
    except Exception:  # the file exists before its tables do
        return 0


def _extra_target_calls(db: Path, fake_llm: FakeLLM) -> tuple[int, Counter[str]]:
    """Target calls beyond one per item, per prompt (a prompt shared by N items may be asked N times)."""
    asked = Counter(b["messages"][-1]["content"] for b in fake_llm.requests() if b["model"] == "target")
    items = Counter(json.loads(r[0])[0]["content"] for r in rows(
        db, "SELECT m.parts FROM item i JOIN message m ON m.conversation_id = i.source_conversation_id WHERE m.role = 'user'"))
    extra = Counter({prompt: asked[prompt] - items[prompt] for prompt in asked if asked[prompt] > items[prompt]})
    return sum(extra.values()), asked


def _orphans(db: Path) -> int:
    return rows(db, """SELECT count(*) FROM conversation c WHERE c.type = 'result'
                       AND NOT EXISTS (SELECT 1 FROM item i WHERE i.result_conversation_id = c.id)""")[0][0]


def _crossed_evaluations(db: Path) -> int:
    return rows(db, """SELECT count(*) FROM evaluation e JOIN item i ON i.id = e.item_id WHERE e.message_id !=
                       (SELECT m.id FROM message m WHERE m.conversation_id = i.result_conversation_id
                        ORDER BY m.sequence_number DESC LIMIT 1)""")[0][0]


def test_kill_9_at_k4_then_resume_redoes_at_most_the_calls_in_flight(run_cli, fake_llm, db_path) -> None:
    run_cli("import", SAMPLE)
    experiment_id = _kill_mid_run(db_path, fake_llm, 4)
    assert run_cli("resume", experiment_id).exit_code == 0
    extra, asked = _extra_target_calls(db_path, fake_llm)
    assert sum(asked.values()) <= 40 + 4 and extra <= 4, extra
    print(f"kill -9 at K=4: {sum(asked.values())} target calls for 40 items, {extra} prompt(s) sent twice")
    assert rows(db_path, "SELECT status, count(*) FROM item GROUP BY status") == [("completed", 40)]
    assert _orphans(db_path) == 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_resumes_and_a_server_started_together_send_every_prompt_once(run_cli, fake_llm, db_path) -> None:
    run_cli("import", SAMPLE)
    judge = ("--evaluator-model", "openai/judge", "--evaluator-api-base", fake_llm.api_base)
    experiment_id = _kill_mid_run(db_path, fake_llm, 4, *judge)
    fake_llm.configure(latency_ms=20)
    port = _free_port()
    racers = [_cli(db_path, "resume", experiment_id, "--concurrency", "4") for _ in range(2)]
    server = _cli(db_path, "serve", "--port", str(port))
    try:
        outcomes = [p.communicate(timeout=120) for p in racers]
        codes = sorted(p.returncode for p in racers)
        assert codes in ([0, 0], [0, 1]), outcomes
        busy = [err for p, (_, err) in zip(racers, outcomes, strict=True) if p.returncode == 1]
        assert all(f"Error: experiment {experiment_id} is being run by " in err for err in busy), busy
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            deadline = time.monotonic() + 60
            while True:  # a resume finishes it (the server leaves a CLI's experiment alone) and the server reads it
                try:
                    if http.get(f"/v1/experiments/{experiment_id}").json()["completed_at"]:
                        break
                except httpx.TransportError:
                    pass
                assert server.poll() is None and time.monotonic() < deadline
                time.sleep(0.1)
    finally:
        server.send_signal(signal.SIGINT)
        _, server_err = server.communicate(timeout=30)
    assert "Traceback" not in server_err, server_err
    extra, _ = _extra_target_calls(db_path, fake_llm)
    assert extra <= 4, extra  # at most the calls in flight at the kill
    assert rows(db_path, "SELECT status, count(*) FROM item GROUP BY status") == [("completed", 40)]
    assert rows(db_path, "SELECT count(*) FROM evaluation") == [(40,)]
    assert _orphans(db_path) == 0 and _crossed_evaluations(db_path) == 0
    judged = sum(b["model"] == "judge" for b in fake_llm.requests())
    print(f"race: resume exit codes {codes}; {extra} prompt(s) sent twice; {judged} judge calls; 0 orphans, 0 crossed evaluations")


def test_the_server_joins_a_leased_experiment_and_takes_over_its_items_once_stale(store, fake_llm, monkeypatch) -> None:
    monkeypatch.setenv("EXPERIMENT_RUNNER_NO_CACHE", "1")  # counts calls per item: the cache would answer repeated questions
    from fastapi.testclient import TestClient

    from experiment_runner.server.app import create_app

    monkeypatch.setenv("EXPERIMENT_RUNNER_LEASE_HEARTBEAT", "0.1")
    monkeypatch.setenv("EXPERIMENT_RUNNER_LEASE_TIMEOUT", "1")
    experiment_id = _experiment(store, fake_llm, runner="server")  # created through the API of a server that went down
    _plant(store, experiment_id, host="elsewhere", pid=4242, age=0, claim=4)  # a live runner elsewhere; it stops renewing now
    with TestClient(create_app(store)) as client:
        deadline = time.monotonic() + 30
        while fake_llm.request_count < 36:  # run alongside: every item the other one does not hold
            assert time.monotonic() < deadline
            time.sleep(0.02)
        while not client.get(f"/v1/experiments/{experiment_id}").json()["completed_at"]:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    assert rows(store, "SELECT status, count(*) FROM item GROUP BY status") == [("completed", 40)]
    assert fake_llm.request_count == 40


def test_delete_refuses_while_a_live_runner_holds_the_lease(store, fake_llm, run_cli) -> None:
    from fastapi.testclient import TestClient

    from experiment_runner.server.app import create_app

    experiment_id = _experiment(store, fake_llm)
    _plant(store, experiment_id, host="elsewhere", pid=4242, age=0)
    busy = f"experiment {experiment_id} is being run by 4242 on elsewhere (since 2026-01-01T00:00:00.000000Z)"
    result = run_cli("delete", experiment_id)
    assert result.exit_code == 1 and result.stderr == f"Error: {busy}\n"
    with TestClient(create_app(store)) as client:
        response = client.delete(f"/v1/experiments/{experiment_id}")
    assert response.status_code == 409 and response.json() == {"detail": busy}
    assert rows(store, "SELECT count(*) FROM item WHERE experiment_id = ?", experiment_id) == [(40,)]
    _plant(store, experiment_id, host="elsewhere", pid=4242, age=60)  # that runner died: its stale lease goes too
    assert run_cli("delete", experiment_id).exit_code == 0
    assert rows(store, "SELECT count(*) FROM experiment") == [(0,)] and rows(store, "SELECT count(*) FROM worker") == [(0,)]


def test_delete_during_a_cli_run_is_refused_and_the_run_finishes(run_cli, fake_llm, db_path) -> None:
    run_cli("import", SAMPLE)
    fake_llm.configure(latency_ms=100)
    proc = _cli(db_path, "run", "--name", "long", "--model", "openai/target", "--api-base", fake_llm.api_base, "--all", "--concurrency", "2")
    deadline = time.monotonic() + 60
    while not (store_exists(db_path) and _completed(db_path) >= 1):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.stderr else ""
        time.sleep(0.02)
    (experiment_id,) = rows(db_path, "SELECT id FROM experiment")[0]
    result = run_cli("delete", experiment_id)
    assert result.exit_code == 1
    assert result.stderr.startswith(f"Error: experiment {experiment_id} is being run by {proc.pid} on {socket.gethostname()} (since ")
    fake_llm.configure(latency_ms=0)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err  # not "another runner took the lease over"
    assert rows(db_path, "SELECT status, count(*) FROM item GROUP BY status") == [("completed", 40)]
