"""The mistakes users make, answered at once in one line, before anything is stored (issue 13)."""

import socket
from pathlib import Path

import pytest
from conftest import FIXTURES, dump
from conftest import query as rows

from experiment_runner.fixtures.fakellm import FakeLLM

SAMPLE = FIXTURES / "ragtruth-sample.conversations.jsonl"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "nonexistent-model-xyz"], "--model 'nonexistent-model-xyz': litellm knows no provider for it"),
        (["--model", "openai/gpt-4o-mini"], "--model 'openai/gpt-4o-mini': OPENAI_API_KEY is not set"),
        (["--model", "openai/x", "--api-base", "http://127.0.0.1:9/v1", "--evaluator-model", "anthropic/claude-3-5-haiku-latest"],
         "--evaluator-model 'anthropic/claude-3-5-haiku-latest': ANTHROPIC_API_KEY is not set"),
    ],
)
def test_unknown_providers_and_missing_keys_exit_2_and_store_nothing(run_cli, db_path: Path, args: list[str], message: str) -> None:
    run_cli("import", SAMPLE)
    before = dump(db_path)
    result = run_cli("run", "--name", "x", "--all", *args)
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [f"Error: {message}" + result.stderr.split(message, 1)[1].rstrip("\n")]
    assert dump(db_path) == before


def test_pass_through_needs_no_key_for_the_target(run_cli, fake_llm) -> None:
    run_cli("import", SAMPLE)
    result = run_cli("run", "--name", "x", "--all", "--model", "openai/gpt-4o-mini", "--pass-through",
                     "--evaluator-model", "openai/judge", "--evaluator-api-base", fake_llm.api_base)
    assert result.exit_code == 0, result.stderr


def test_nothing_listening_stops_the_run_at_once_and_resume_finishes_it(run_cli, db_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("EXPERIMENT_RUNNER_NO_CACHE", "1")  # counts calls per item: the cache would answer repeated questions
    run_cli("import", SAMPLE)
    port = free_port()
    result = run_cli("run", "--name", "x", "--all", "--model", "openai/t", "--api-base", f"http://127.0.0.1:{port}/v1", "--concurrency", "2")
    assert result.exit_code == 1
    assert result.stderr.splitlines()[0].startswith("Experiment ")  # the id comes first, on stderr, for a resume
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith(f"Error: stopped: target model openai/t: cannot reach 127.0.0.1:{port}: connection refused")
    assert "resume" in error
    experiment_id = result.stdout.strip().splitlines()[-1]
    statuses = dict(rows(db_path, "SELECT status, count(*) FROM item WHERE experiment_id = ? GROUP BY status", experiment_id))
    assert statuses == {"pending": 40}  # the items tried when it stopped are pending again, not in progress
    with FakeLLM(port=port) as server:
        again = run_cli("resume", experiment_id)
        assert again.exit_code == 0, again.stderr
        assert server.request_count == 40
    assert rows(db_path, "SELECT status, count(*) FROM item GROUP BY status") == [("completed", 40)]


def test_a_401_stops_the_run_after_at_most_one_call_per_worker(run_cli, fake_llm, db_path: Path) -> None:
    run_cli("import", SAMPLE)
    fake_llm.configure(scripts=[{"reply": {"status": 401}}])
    result = run_cli("run", "--name", "x", "--all", "--model", "openai/t", "--api-base", fake_llm.api_base, "--concurrency", "3")
    assert result.exit_code == 1 and "HTTP 401" in result.stderr.strip().splitlines()[-1]
    assert fake_llm.request_count <= 3
    assert rows(db_path, "SELECT count(*) FROM item WHERE status = 'failed'") == [(0,)]


def test_assorted_failures_go_on_and_name_the_most_common_reason(run_cli, fake_llm) -> None:
    run_cli("import", SAMPLE)
    fake_llm.configure(scripts=[{"match": "forest fires", "reply": {"status": 400}}])
    result = run_cli("run", "--name", "x", "--all", "--model", "openai/t", "--api-base", fake_llm.api_base)
    assert result.exit_code == 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("2 item(s) failed, most often: HTTP 400: scripted failure (HTTP 400) (2x)")
