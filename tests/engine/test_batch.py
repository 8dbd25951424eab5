"""Provider batch jobs (issue 25): `run --batch` through the fake server's OpenAI Files and Batches endpoints."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import FIXTURES, dump, has_table
from conftest import query as rows

SAMPLE = FIXTURES / "ragtruth-sample.conversations.jsonl"
TOOLS = FIXTURES / "handwritten.native.jsonl"
TARGET, JUDGE = "openai/gpt-4o-mini", "openai/gpt-4o"


@pytest.fixture(autouse=True)
def quick_polls(monkeypatch) -> None:
    monkeypatch.setenv("EXPERIMENT_RUNNER_BATCH_POLL", "0.05")
    monkeypatch.setenv("EXPERIMENT_RUNNER_NO_CACHE", "1")  # these tests count requests per item; test_cache covers the cache


def batch_args(fake_llm, *extra: str) -> list[str]:
    return ["run", "--name", "b", "--model", TARGET, "--api-base", fake_llm.api_base, "--evaluator-model", JUDGE,
            "--evaluator-api-base", fake_llm.api_base, "--batch", *extra]


def statuses(db: Path) -> dict[str, int]:
    return dict(rows(db, "SELECT status, count(*) FROM item GROUP BY status"))


def test_run_batch_completes_the_sample_through_the_batch_endpoints(run_cli, fake_llm, db_path) -> None:
    run_cli("import", SAMPLE)
    result = run_cli(*batch_args(fake_llm, "--all"))
    assert result.exit_code == 0, result.stderr
    experiment_id = result.stdout.strip().splitlines()[-1]
    stats = fake_llm.stats()
    assert (stats["files_created"], stats["batches_created"]) == (2, 2)  # one job for the target, then one for the evaluator
    assert stats["requests"] == 80  # every request was a line of a batch: no live call
    assert statuses(db_path) == {"completed": 40}
    assert rows(db_path, "SELECT status, count(*) FROM evaluation GROUP BY status") == [("completed", 40)]
    generations = [json.loads(g) for (g,) in rows(db_path, """SELECT m.generation FROM message m JOIN item i ON i.result_conversation_id = m.conversation_id
                                                             WHERE m.role = 'assistant' AND CAST(m.generation AS TEXT) LIKE '%batch_id%'""")]
    assert len(generations) == 40
    assert all(g["cost_usd"] == pytest.approx(g["cost_unbatched_usd"] / 2) and g["cost_usd"] > 0 for g in generations)
    assert "Collected 80 answer(s) (0 failed request(s)) at $" in result.stderr and "at the normal price" in result.stderr
    shown = run_cli("show", experiment_id).stdout
    assert "Batch jobs:" in shown and shown.count("completed, collected, 40 requests, submitted") == 2
    assert " target " in shown and " evaluator " in shown


def test_killed_between_submit_and_collect_resume_collects_without_resubmitting(fake_llm, db_path) -> None:
    env = {**os.environ, "EXPERIMENT_RUNNER_DB": str(db_path)}
    subprocess.run([sys.executable, "-m", "experiment_runner", "import", str(SAMPLE)], env=env, check=True, capture_output=True)
    fake_llm.configure(batch_steps=1_000_000)  # the job stays in progress until the test lets it finish
    proc = subprocess.Popen([sys.executable, "-m", "experiment_runner", *batch_args(fake_llm, "--all")], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (has_table(db_path, "batch_job")
               and rows(db_path, "SELECT count(*) FROM batch_job")[0][0]):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.stderr else ""
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert fake_llm.stats()["batches_created"] == 1 and fake_llm.request_count == 0  # submitted, not answered yet
    (experiment_id,) = rows(db_path, "SELECT id FROM experiment")[0]
    assert statuses(db_path) == {"in_progress": 40}

    fake_llm.configure(batch_steps=1)
    resumed = subprocess.run([sys.executable, "-m", "experiment_runner", "resume", experiment_id], env=env, capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    stats = fake_llm.stats()
    assert stats["batches_created"] == 2 and stats["files_created"] == 2  # the target's job was collected, not sent again
    assert stats["requests"] == 80
    assert statuses(db_path) == {"completed": 40}
    assert rows(db_path, "SELECT count(*) FROM evaluation")[0][0] == 40


def test_detach_then_resume_collects(run_cli, fake_llm, db_path) -> None:
    run_cli("import", TOOLS)
    detached = run_cli(*batch_args(fake_llm, "--all", "--detach"))
    assert detached.exit_code == 0, detached.stderr
    experiment_id = detached.stdout.strip().splitlines()[-1]
    assert "Batch jobs still running at the provider: target batch_fake_" in detached.stderr
    assert f"Collect with: experiment-runner resume {experiment_id}" in detached.stderr
    assert fake_llm.request_count == 0 and statuses(db_path) == {"in_progress": 4}
    step = run_cli("resume", experiment_id, "--detach")  # one more look: the job is finalizing, nothing else happens
    assert step.exit_code == 0 and fake_llm.stats()["batches_created"] == 1
    finished = run_cli("resume", experiment_id)
    assert finished.exit_code == 0, finished.stderr
    assert statuses(db_path) == {"completed": 4} and fake_llm.stats()["batches_created"] == 2
    assert "completed, collected" in run_cli("show", experiment_id).stdout


def test_request_failures_become_item_failures_and_an_expired_job_is_resubmitted(run_cli, fake_llm, db_path) -> None:
    run_cli("import", SAMPLE)
    fake_llm.configure(batch_outcomes=["expired"], scripts=[{"match": "automotive technicians", "reply": {"status": 400}}])
    result = run_cli(*batch_args(fake_llm, "--all"))
    assert result.exit_code == 0, result.stderr
    stats = fake_llm.stats()
    assert stats["batches_created"] == 3  # the target's job expired half-done: its other 20 requests went out again
    assert "20 request(s) of expired or cancelled jobs were submitted again." in result.stderr
    assert statuses(db_path) == {"completed": 39, "failed": 1}
    (error,) = rows(db_path, "SELECT error_message FROM item WHERE status = 'failed'")[0]
    assert error == "batch request failed: HTTP 400: scripted failure (HTTP 400)"
    assert stats["requests"] == 20 + 20 + 39  # each target request answered once, then the 39 replies evaluated
    jobs = rows(db_path, "SELECT role, status, request_count FROM batch_job ORDER BY created_at")
    assert jobs == [("target", "expired", 40), ("target", "completed", 20), ("evaluator", "completed", 39)]


def test_a_failed_job_fails_its_items_with_the_reason(run_cli, fake_llm, db_path) -> None:
    run_cli("import", TOOLS)
    fake_llm.configure(batch_outcomes=["failed"])
    result = run_cli("run", "--name", "b", "--model", TARGET, "--api-base", fake_llm.api_base, "--batch", "--all")
    assert result.exit_code == 0, result.stderr
    assert statuses(db_path) == {"failed": 4}
    errors = {e for (e,) in rows(db_path, "SELECT error_message FROM item")}
    assert len(errors) == 1 and errors.pop().endswith("failed: injected batch failure")


def test_a_provider_litellm_cannot_batch_is_refused_before_anything_is_stored(run_cli, db_path) -> None:
    run_cli("import", TOOLS)
    before = dump(db_path)
    result = run_cli("run", "--name", "b", "--model", "anthropic/claude-3-5-sonnet-latest", "--batch", "--all")
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: --batch: litellm cannot run batch jobs for anthropic models")
    assert dump(db_path) == before


def test_dry_run_shows_the_batch_price(run_cli, fake_llm) -> None:
    run_cli("import", SAMPLE)
    normal = json.loads(run_cli(*[a for a in batch_args(fake_llm, "--all", "--dry-run", "--json") if a != "--batch"]).stdout)
    batch = json.loads(run_cli(*batch_args(fake_llm, "--all", "--dry-run", "--json")).stdout)
    assert batch["batch"] is True and normal["batch"] is False
    assert batch["estimated_cost_usd"] == pytest.approx(normal["estimated_cost_usd"] / 2, abs=2e-6)  # rounded to 6 places
    assert "as batch jobs: litellm's batch prices" in run_cli(*batch_args(fake_llm, "--all", "--dry-run")).stdout
    assert fake_llm.stats()["batches_created"] == 0


def test_reevaluate_with_batch_sends_only_evaluator_requests(run_cli, fake_llm, db_path) -> None:
    run_cli("import", TOOLS)
    first = run_cli("run", "--name", "t", "--model", TARGET, "--api-base", fake_llm.api_base, "--all").stdout.strip().splitlines()[-1]
    fake_llm.reset()
    result = run_cli("reevaluate", first, "--evaluator-model", JUDGE, "--evaluator-api-base", fake_llm.api_base, "--batch")
    assert result.exit_code == 0, result.stderr
    assert fake_llm.stats()["batches_created"] == 1 and {b["model"] for b in fake_llm.requests()} == {"gpt-4o"}
    new = result.stdout.strip().splitlines()[-1]
    assert rows(db_path, "SELECT count(*) FROM evaluation e JOIN item i ON i.id = e.item_id WHERE i.experiment_id = ?", new)[0][0] == 4
