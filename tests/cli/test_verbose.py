"""`-v/--verbose` (issue 22): retries, structured-output fallbacks and lease takeovers on stderr; nothing new without it."""

import logging
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from conftest import FIXTURES

from experiment_runner.engine.experiments import create_experiment
from experiment_runner.engine.spec import ExperimentSpec
from experiment_runner.ingest.importing import import_files
from experiment_runner.logconfig import StderrHandler

SAMPLE = FIXTURES / "ragtruth-sample.conversations.jsonl"
RETRY = re.compile(r"^\d\d:\d\d:\d\d INFO experiment_runner\.engine\.llm: openai/target: HTTP 429\b.*; retry 1 of 5 in [\d.]+ s$", re.M)


def first_items(tmp_path: Path, n: int) -> Path:
    path = tmp_path / "few.jsonl"
    path.write_text("\n".join(SAMPLE.read_text().splitlines()[:n]) + "\n")
    return path


def run_with_429s(run_cli, fake_llm, tmp_path, *before: str):
    fake_llm.configure(fail_rate=1.0, fail_by="prompt", fail_mode="429")  # every prompt's first attempt gets 429
    fake_llm.reset()
    return run_cli(*before, "run", "--name", "v", "--model", "openai/target", "--api-base", fake_llm.api_base,
                   "--input", first_items(tmp_path, 3), "--concurrency", "1", "--no-cache")  # every run calls: the test counts retries


def test_verbose_prints_each_retry_and_quiet_prints_none(run_cli, fake_llm, tmp_path) -> None:
    loud = run_with_429s(run_cli, fake_llm, tmp_path, "-v")
    assert loud.exit_code == 0, loud.stderr
    assert len(RETRY.findall(loud.stderr)) == 3, loud.stderr
    quiet = run_with_429s(run_cli, fake_llm, tmp_path)  # same process: -v of the last command does not linger
    assert quiet.exit_code == 0 and fake_llm.stats()["failed_injected"] == 3
    assert "retry 1 of" not in quiet.stderr and " INFO " not in quiet.stderr
    assert "; 3 retries" in quiet.stderr  # the run's summary counts them as before
    assert sum(isinstance(h, StderrHandler) for h in logging.getLogger("experiment_runner").handlers) == 0


def test_the_environment_variable_turns_it_on(run_cli, fake_llm, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("EXPERIMENT_RUNNER_VERBOSE", "1")
    result = run_with_429s(run_cli, fake_llm, tmp_path)
    assert len(RETRY.findall(result.stderr)) == 3, result.stderr
    monkeypatch.setenv("EXPERIMENT_RUNNER_VERBOSE", "0")
    assert not RETRY.findall(run_with_429s(run_cli, fake_llm, tmp_path).stderr)


def test_a_structured_output_fallback_is_logged(run_cli, fake_llm, tmp_path) -> None:
    run_cli("import", first_items(tmp_path, 2))
    fake_llm.configure(imitate="llama-cpp-python")  # rejects json_schema with HTTP 500
    result = run_cli("-v", "run", "--name", "f", "--model", "openai/target", "--pass-through", "--all",
                     "--evaluator-model", "openai/judge", "--evaluator-api-base", fake_llm.api_base)
    assert result.exit_code == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if "experiment_runner.engine.structured" in line]
    assert len(lines) == 1, result.stderr
    assert "rejected response format json_schema" in lines[0] and lines[0].endswith("; trying json_object")


def test_a_lease_takeover_names_the_old_holder(run_cli, fake_llm, tmp_path, store) -> None:
    ids = import_files(store, [str(first_items(tmp_path, 2))]).ids
    experiment_id = create_experiment(store, ExperimentSpec(name="l", model="openai/target", conversation_ids=ids, api_base=fake_llm.api_base))
    with store.write() as session:  # a runner on another host that died a minute ago, before running anything
        session.connection().exec_driver_sql(
            "INSERT INTO worker VALUES ('other', ?, 'elsewhere', 4242, '2026-01-01T00:00:00.000000Z', ?, 0)", (experiment_id, time.time() - 60)
        )
    result = run_cli("-v", "resume", experiment_id)
    assert result.exit_code == 0, result.stderr
    assert re.search(rf"INFO experiment_runner\.engine\.lease: experiment {experiment_id}: took over the stale lease of "
                     r"pid 4242 on elsewhere \(last renewed \d+ s ago\)", result.stderr), result.stderr


def test_the_installed_command_logs_to_its_stderr(fake_llm, tmp_path) -> None:
    fake_llm.configure(fail_rate=1.0, fail_by="prompt", fail_mode="429")
    command = [sys.executable, "-m", "experiment_runner", "-v", "--db", str(tmp_path / "s.db"), "run", "--name", "p",
               "--model", "openai/target", "--api-base", fake_llm.api_base, "--input", str(first_items(tmp_path, 2))]
    done = subprocess.run(command, capture_output=True, text=True, env=os.environ, timeout=120)
    assert done.returncode == 0, done.stderr
    assert len(RETRY.findall(done.stderr)) == 2 and not RETRY.findall(done.stdout), done.stderr
