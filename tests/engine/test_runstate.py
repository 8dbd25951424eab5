"""A stopped experiment stays stopped (issue 20 item 1, 6, 7, 13; issue 21 item 3): why a run stopped, who
runs it, the budget stored with the experiment, and what `resume` may change. End to end from the CLI."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from conftest import FIXTURES, dump, store_exists
from conftest import query as rows
from fastapi.testclient import TestClient

from experiment_runner.engine.experiments import create_experiment
from experiment_runner.engine.spec import ExperimentSpec
from experiment_runner.fixtures.fakellm import FakeLLM
from experiment_runner.ingest.importing import import_files
from experiment_runner.server.app import create_app
from experiment_runner.store import Store

SAMPLE = FIXTURES / "ragtruth-sample.conversations.jsonl"
TOOLS = FIXTURES / "handwritten.native.jsonl"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_state(db: Path, experiment_id: str) -> dict[str, Any]:
    (row,) = rows(db, "SELECT stop_reason, runner, completed_at, max_cost_usd, api_base, evaluator_api_base, setting_changes "
                      "FROM experiment WHERE id = ?", experiment_id)
    keys = ("stop_reason", "runner", "completed_at", "max_cost_usd", "api_base", "evaluator_api_base", "setting_changes")
    state = dict(zip(keys, row, strict=True))
    state["setting_changes"] = json.loads(str(state["setting_changes"])) if state["setting_changes"] else []
    return state


def statuses(db: Path, experiment_id: str) -> dict[str, int]:
    return dict(rows(db, "SELECT status, count(*) FROM item WHERE experiment_id = ? GROUP BY status", experiment_id))


def server_starts(store: Store) -> list[str]:
    """What a server starting on this store runs by itself (its startup resumes happen before any request)."""
    app = create_app(store)
    with TestClient(app):
        return sorted(app.state.runs.running())


def last_id(result) -> str:
    return result.stdout.strip().splitlines()[-1]


def test_a_systematic_stop_leaves_items_pending_no_server_resumes_it_and_resume_api_base_fixes_it(run_cli, fake_llm, store, db_path) -> None:
    run_cli("import", TOOLS)
    wrong = f"http://127.0.0.1:{closed_port()}/v1"
    result = run_cli("run", "--name", "x", "--all", "--model", "openai/t", "--api-base", wrong, "--concurrency", "2")
    assert result.exit_code == 1
    experiment_id = last_id(result)
    assert result.stderr.strip().splitlines()[-1].endswith(
        f"fix it, then `experiment-runner resume {experiment_id}` (with --api-base or --evaluator-api-base URL to change an endpoint)"
    )
    assert statuses(db_path, experiment_id) == {"pending": 4}  # none left in_progress
    state = run_state(db_path, experiment_id)
    assert (state["stop_reason"], state["runner"], state["completed_at"]) == ("systematic", "cli", None)
    shown = run_cli("show", experiment_id).stdout
    assert "stopped on a systematic failure at " in shown and "connection refused" in shown
    assert server_starts(store) == []  # a failing experiment is not retried at every serve start
    assert fake_llm.request_count == 0

    fixed = run_cli("resume", experiment_id, "--api-base", fake_llm.api_base, "--concurrency", "1")
    assert fixed.exit_code == 0, fixed.stderr
    assert statuses(db_path, experiment_id) == {"completed": 4} and fake_llm.request_count == 4
    state = run_state(db_path, experiment_id)
    assert state["stop_reason"] is None and state["completed_at"] and state["api_base"] == fake_llm.api_base
    (change,) = state["setting_changes"]
    assert (change["field"], change["from"], change["to"]) == ("api_base", wrong, fake_llm.api_base)
    assert f"api_base {wrong} -> {fake_llm.api_base}" in run_cli("show", experiment_id).stdout


def test_an_unreachable_evaluator_is_fixed_with_resume_evaluator_api_base_and_only_evaluations_run(run_cli, fake_llm, db_path) -> None:
    run_cli("import", TOOLS)
    result = run_cli("run", "--name", "x", "--all", "--model", "openai/t", "--api-base", fake_llm.api_base,
                     "--evaluator-model", "openai/judge", "--evaluator-api-base", "http://nonexistent.invalid:9/v1", "--concurrency", "1")
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines()[-1].startswith(
        "Error: stopped: evaluator model openai/judge: cannot reach nonexistent.invalid:9: the host name does not resolve; "
        "the items not run stay pending"
    )
    experiment_id = last_id(result)
    assert set(statuses(db_path, experiment_id)) == {"pending"}
    replied = fake_llm.request_count
    assert 1 <= replied <= 2  # the reply the evaluator could not judge (and at most one more under way)
    fake_llm.reset()
    fixed = run_cli("resume", experiment_id, "--evaluator-api-base", fake_llm.api_base)
    assert fixed.exit_code == 0, fixed.stderr
    models = [r["model"] for r in fake_llm.requests()]
    assert models.count("judge") == 4 and models.count("t") == 4 - replied  # stored replies were only evaluated
    assert statuses(db_path, experiment_id) == {"completed": 4}
    assert run_state(db_path, experiment_id)["evaluator_api_base"] == fake_llm.api_base


def test_a_stop_clears_completed_at_and_puts_retried_items_back_to_pending(run_cli, fake_llm, db_path) -> None:
    run_cli("import", TOOLS)
    fake_llm.configure(scripts=[{"match": "umbrella", "reply": {"status": 400}}])
    first = run_cli("run", "--name", "x", "--all", "--model", "openai/t", "--api-base", fake_llm.api_base)
    experiment_id = last_id(first)
    assert statuses(db_path, experiment_id) == {"completed": 3, "failed": 1} and run_state(db_path, experiment_id)["completed_at"]
    stopped = run_cli("resume", experiment_id, "--retry-failed", "--api-base", f"http://127.0.0.1:{closed_port()}/v1")
    assert stopped.exit_code == 1
    assert statuses(db_path, experiment_id) == {"completed": 3, "pending": 1}
    state = run_state(db_path, experiment_id)
    assert state["completed_at"] is None and state["stop_reason"] == "systematic"


def test_resume_refuses_bad_setting_changes_and_stores_nothing(run_cli, fake_llm, db_path) -> None:
    run_cli("import", TOOLS)
    wrong = f"http://127.0.0.1:{closed_port()}/v1"
    experiment_id = last_id(run_cli("run", "--name", "x", "--all", "--model", "openai/local-thing", "--api-base", wrong))
    before = dump(db_path)
    no_evaluator = run_cli("resume", experiment_id, "--evaluator-api-base", fake_llm.api_base)
    assert no_evaluator.exit_code == 2
    assert no_evaluator.stderr == "Error: --evaluator-api-base: this experiment has no evaluator\n"
    unpriced = run_cli("resume", experiment_id, "--api-base", fake_llm.api_base, "--max-cost", "1")
    assert unpriced.exit_code == 2 and "litellm has no price for openai/local-thing" in unpriced.stderr
    assert dump(db_path) == before and fake_llm.request_count == 0


def test_a_budget_is_stored_with_the_experiment_and_every_resume_keeps_it_until_raised(run_cli, fake_llm, store, db_path, monkeypatch) -> None:
    monkeypatch.setenv("EXPERIMENT_RUNNER_NO_CACHE", "1")  # counts calls per item: the cache would answer repeated questions
    run_cli("import", SAMPLE)
    capped = run_cli("run", "--name", "b", "--model", "openai/gpt-4o-mini", "--api-base", fake_llm.api_base, "--all",
                     "--concurrency", "1", "--max-cost", "0.000001")
    assert capped.exit_code == 1 and "budget of $1e-06 reached" in capped.stderr
    experiment_id = last_id(capped)
    counts = statuses(db_path, experiment_id)
    assert counts.get("completed", 0) <= 1 and counts["pending"] == 40 - counts.get("completed", 0)
    state = run_state(db_path, experiment_id)
    assert (state["stop_reason"], state["max_cost_usd"], state["completed_at"]) == ("budget", 1e-06, None)
    assert "stopped by its budget" in run_cli("show", experiment_id).stdout
    assert server_starts(store) == []  # a server does not finish it uncapped (nor capped)

    fake_llm.reset()
    again = run_cli("resume", experiment_id)  # the stored budget holds: nothing more is spent
    last = again.stderr.strip().splitlines()[-1]
    assert again.exit_code == 1 and last.startswith("Error: ") and "$1e-06" in last and "--max-cost" in last
    if counts.get("completed"):  # it spent its budget: resume says so before it starts anything
        assert last.startswith(f"Error: the budget of experiment {experiment_id} is spent ($1e-06, $")
        assert last.endswith(f" spent); raise it to go on: experiment-runner resume {experiment_id} --max-cost USD")
    assert fake_llm.request_count == 0 and statuses(db_path, experiment_id) == counts

    raised = run_cli("resume", experiment_id, "--max-cost", "5")
    assert raised.exit_code == 0, raised.stderr
    assert statuses(db_path, experiment_id) == {"completed": 40} and fake_llm.request_count == 40 - counts.get("completed", 0)
    state = run_state(db_path, experiment_id)
    assert state["max_cost_usd"] == 5 and [(c["field"], c["from"], c["to"]) for c in state["setting_changes"]] == [("max_cost_usd", 1e-06, 5)]


def test_a_server_restart_keeps_the_stored_budget_of_an_api_experiment(store, fake_llm, db_path) -> None:
    ids = import_files(store, [str(SAMPLE)]).ids
    spec = ExperimentSpec(name="api", model="openai/gpt-4o-mini", conversation_ids=ids, api_base=fake_llm.api_base, max_cost_usd=0.000001)
    experiment_id = create_experiment(store, spec, runner="server")  # created through a server that then went down
    with TestClient(create_app(store, concurrency=1)):
        deadline = time.monotonic() + 30
        while run_state(db_path, experiment_id)["stop_reason"] is None:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    assert run_state(db_path, experiment_id)["stop_reason"] == "budget"
    assert statuses(db_path, experiment_id).get("completed", 0) <= 1 and fake_llm.request_count <= 1
    assert server_starts(store) == []  # and the next restart leaves it stopped


def test_the_api_stores_max_cost_usd(store, fake_llm, db_path) -> None:
    ids = import_files(store, [str(TOOLS)]).ids
    with TestClient(create_app(store)) as client:
        body = {"name": "b", "model": "openai/gpt-4o-mini", "conversation_ids": ids, "api_base": fake_llm.api_base, "max_cost_usd": 3}
        experiment_id = client.post("/v1/experiments", json=body).json()["id"]
    assert run_state(db_path, experiment_id)["max_cost_usd"] == 3 and run_state(db_path, experiment_id)["runner"] == "server"


def _cli(db: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "EXPERIMENT_RUNNER_DB": str(db)}
    return subprocess.Popen([sys.executable, "-m", "experiment_runner", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_completed(db: Path, count: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while not (store_exists(db) and rows(db, "SELECT count(*) FROM item WHERE status = 'completed'")[0][0] >= count):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.stderr else ""
        time.sleep(0.05)


def test_ctrl_c_is_recorded_and_a_server_leaves_it_alone_until_resume(run_cli, fake_llm, store, db_path) -> None:
    run_cli("import", SAMPLE)
    fake_llm.configure(latency_ms=200)
    proc = _cli(db_path, "run", "--name", "long", "--model", "openai/t", "--api-base", fake_llm.api_base, "--all", "--concurrency", "2")
    _wait_completed(db_path, 2, proc)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    experiment_id = out.strip().splitlines()[-1]
    counts = statuses(db_path, experiment_id)
    assert "in_progress" not in counts and counts["pending"] >= 1
    state = run_state(db_path, experiment_id)
    assert (state["stop_reason"], state["runner"], state["completed_at"]) == ("interrupted", "cli", None)
    assert "stopped by the user at " in run_cli("show", experiment_id).stdout
    assert server_starts(store) == []
    fake_llm.configure(latency_ms=0)
    assert run_cli("resume", experiment_id).exit_code == 0
    assert statuses(db_path, experiment_id) == {"completed": 40} and run_state(db_path, experiment_id)["stop_reason"] is None


def test_a_crashed_cli_run_shows_as_crashed_and_is_not_taken_by_a_server(run_cli, fake_llm, store, db_path) -> None:
    run_cli("import", SAMPLE)
    fake_llm.configure(latency_ms=200)
    proc = _cli(db_path, "run", "--name", "long", "--model", "openai/t", "--api-base", fake_llm.api_base, "--all", "--concurrency", "2")
    _wait_completed(db_path, 2, proc)
    proc.kill()
    proc.wait()
    (experiment_id,) = rows(db_path, "SELECT id FROM experiment")[0]
    assert run_state(db_path, experiment_id)["stop_reason"] is None  # a killed process records nothing...
    assert "crashed: its runner died holding the lease" in run_cli("show", experiment_id).stdout  # ...its lease tells
    assert server_starts(store) == []


def test_a_server_shutdown_is_recorded_and_the_next_start_resumes_it(store, fake_llm: FakeLLM, db_path) -> None:
    ids = import_files(store, [str(SAMPLE)]).ids[:8]
    fake_llm.configure(latency_ms=200)
    with TestClient(create_app(store, concurrency=2)) as client:
        body = {"name": "s", "model": "openai/t", "conversation_ids": ids, "api_base": fake_llm.api_base}
        experiment_id = client.post("/v1/experiments", json=body).json()["id"]
        deadline = time.monotonic() + 30
        while not statuses(db_path, experiment_id).get("completed"):
            assert time.monotonic() < deadline
            time.sleep(0.02)
    counts = statuses(db_path, experiment_id)
    assert "in_progress" not in counts and counts["pending"] >= 1
    state = run_state(db_path, experiment_id)
    assert (state["stop_reason"], state["runner"], state["completed_at"]) == ("shutdown", "server", None)
    fake_llm.configure(latency_ms=0)
    app = create_app(store)
    with TestClient(app) as client:
        assert app.state.runs.running() == [experiment_id]
        deadline = time.monotonic() + 30
        while not client.get(f"/v1/experiments/{experiment_id}").json()["completed_at"]:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    assert run_state(db_path, experiment_id)["stop_reason"] is None
