"""What a run shows (issue 20): progress without a terminal, retries, the closing summary, Ctrl-C, the budget line."""

import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import FIXTURES, dump

from experiment_runner.cli.progress import ProgressPrinter, interval_seconds, progress_line
from experiment_runner.engine.progress import Progress

SAMPLE = FIXTURES / "ragtruth-sample.conversations.jsonl"
LINE = re.compile(r"^progress: (\d+)/(\d+) done, (\d+) failed · [\d.]+ items/s(, ETA \d+s)? · (\d+) retr(y|ies)$")


def first_items(tmp_path: Path, n: int) -> Path:
    path = tmp_path / "few.jsonl"
    path.write_text("\n".join(SAMPLE.read_text().splitlines()[:n]) + "\n")
    return path


def test_without_a_terminal_a_progress_line_comes_every_interval(run_cli, fake_llm, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("EXPERIMENT_RUNNER_PROGRESS_INTERVAL", "0.05")
    fake_llm.configure(latency_ms=150)  # 4 items one at a time: the run lasts over 0.6 s, many intervals
    result = run_cli("run", "--name", "p", "--model", "openai/target", "--api-base", fake_llm.api_base,
                     "--input", first_items(tmp_path, 4), "--concurrency", "1")
    assert result.exit_code == 0, result.stderr
    lines = [m for m in map(LINE.match, result.stderr.splitlines()) if m]
    assert len(lines) >= 3, result.stderr
    done = [int(m.group(1)) for m in lines]
    assert done == sorted(done) and all(int(m.group(2)) == 4 for m in lines)
    assert "\r" not in result.stderr  # no terminal: no self-overwriting line


def test_the_default_interval_is_ten_seconds_and_the_env_var_sets_it(monkeypatch) -> None:
    monkeypatch.delenv("EXPERIMENT_RUNNER_PROGRESS_INTERVAL", raising=False)
    assert interval_seconds() == 10.0
    for bad in ("nan", "-1", "soon"):
        monkeypatch.setenv("EXPERIMENT_RUNNER_PROGRESS_INTERVAL", bad)
        assert interval_seconds() == 10.0
    monkeypatch.setenv("EXPERIMENT_RUNNER_PROGRESS_INTERVAL", "2.5")
    assert interval_seconds() == 2.5 and ProgressPrinter(terminal=False).tick_seconds == 2.5


def test_a_terminal_gets_one_line_redrawn_and_the_first_stop_is_told_at_once(capsys) -> None:
    printer = ProgressPrinter(terminal=True)
    progress = Progress(total=10, completed=3, failed=1, retries=1)
    printer(progress)
    printer(progress)
    progress.stop_requested, progress.in_flight = True, 2
    printer(progress)
    printer(progress)  # told once; the line goes on below it while the calls finish
    err = capsys.readouterr().err
    assert err.count("\r4/10 done, 1 failed") == 3 and "1 retry" in err
    assert err.count("stopping") == 1 and "   \nstopping: finishing 2 calls (Ctrl-C again to stop now)\n\r4/10" in err
    assert progress_line(Progress(total=1, retries=2)).endswith("· 2 retries")


def test_retries_are_counted_logged_and_shown(run_cli, fake_llm, tmp_path, caplog) -> None:
    fake_llm.configure(fail_rate=1.0, fail_by="prompt", fail_mode="429")  # every prompt's first attempt gets 429
    with caplog.at_level(logging.INFO, logger="experiment_runner.engine.llm"):
        result = run_cli("run", "--name", "r", "--model", "openai/target", "--api-base", fake_llm.api_base,
                         "--input", first_items(tmp_path, 3), "--concurrency", "1")
    assert result.exit_code == 0, result.stderr
    assert fake_llm.stats()["failed_injected"] == 3
    assert "; 3 retries" in result.stderr
    retries = [r for r in caplog.records if r.name == "experiment_runner.engine.llm" and "retry 1 of 5" in r.getMessage()]
    assert len(retries) == 3 and all("HTTP 429" in r.getMessage() and r.levelno == logging.INFO for r in retries)


def test_the_end_of_a_run_gives_issue_rate_cost_and_next_commands(run_cli, fake_llm, tmp_path) -> None:
    result = run_cli("run", "--name", "s", "--model", "openai/gpt-4o-mini", "--api-base", fake_llm.api_base,
                     "--evaluator-model", "openai/gpt-4o-mini", "--evaluator-api-base", fake_llm.api_base,
                     "--input", first_items(tmp_path, 2))
    assert result.exit_code == 0, result.stderr
    experiment_id = result.stdout.strip().splitlines()[-1]
    err = result.stderr
    assert f"Experiment {experiment_id}: 2 items run: 2 completed, 0 failed." in err
    assert re.search(r"issue rate \d+\.\d% of 2 evaluated replies; this run cost \$0\.\d{4}; 0 retries", err), err
    assert f"next: experiment-runner show {experiment_id}   experiment-runner report {experiment_id}" in err


def test_an_unpriced_run_costs_unknown_not_zero(run_cli, fake_llm, tmp_path) -> None:
    result = run_cli("run", "--name", "u", "--model", "openai/target", "--api-base", fake_llm.api_base, "--input", first_items(tmp_path, 1))
    assert result.exit_code == 0, result.stderr
    assert "1 item run: 1 completed" in result.stderr
    assert "this run cost unknown (no price for 1 call)" in result.stderr and "$0.0000" not in result.stderr


@pytest.mark.parametrize("command", ["run", "resume", "reevaluate"])
@pytest.mark.parametrize("amount", ["nan", "inf", "-inf", "-1", "0"])
def test_a_cap_that_is_not_a_finite_amount_above_zero_is_refused(run_cli, db_path, tmp_path, command, amount) -> None:
    run_cli("import", first_items(tmp_path, 1))
    before = dump(db_path)
    args = {"run": ["run", "--name", "n", "--model", "openai/gpt-4o-mini", "--all"],
            "resume": ["resume", "some-id"], "reevaluate": ["reevaluate", "some-id", "--evaluator-model", "openai/gpt-4o"]}[command]
    result = run_cli(*args, f"--max-cost={amount}")
    assert result.exit_code == 2
    assert f"Error: Invalid value for '--max-cost': must be a finite amount of USD above 0, got {amount}" in result.stderr
    assert dump(db_path) == before


def test_the_budget_line_names_the_command_and_counts_items_right(run_cli, fake_llm, tmp_path) -> None:
    result = run_cli("run", "--name", "b", "--model", "openai/gpt-4o-mini", "--api-base", fake_llm.api_base,
                     "--input", first_items(tmp_path, 3), "--max-cost", "0.0000001", "--concurrency", "1")
    assert result.exit_code == 1
    experiment_id = result.stdout.strip().splitlines()[-1]
    error = result.stderr.strip().splitlines()[-1]
    assert re.fullmatch(rf"Error: budget of \$1e-07 reached after 1 item \(\$0\.\d{{4}} spent\); "
                        rf"to go on: experiment-runner resume {experiment_id} --max-cost AMOUNT", error), error


def test_the_first_ctrl_c_says_at_once_what_is_still_finishing(run_cli, fake_llm, db_path, tmp_path) -> None:
    run_cli("import", first_items(tmp_path, 12))
    fake_llm.configure(latency_ms=2500)
    proc = subprocess.Popen(
        [sys.executable, "-m", "experiment_runner", "run", "--name", "c", "--model", "openai/target",
         "--api-base", fake_llm.api_base, "--all", "--concurrency", "2"],
        env={**os.environ, "EXPERIMENT_RUNNER_DB": str(db_path)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert proc.stderr is not None
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stderr.readline, "")), daemon=True)  # type: ignore[union-attr]
    reader.start()
    deadline = time.monotonic() + 60
    while fake_llm.stats()["in_flight"] < 2:  # both workers are waiting on a reply
        assert time.monotonic() < deadline and proc.poll() is None, "".join(lines)
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    while not any(line.startswith("stopping:") for line in lines):
        assert time.monotonic() < deadline, "".join(lines)
        time.sleep(0.02)
    still_running = proc.poll() is None and fake_llm.stats()["in_flight"] > 0  # told before the calls under way ended
    proc.communicate(timeout=30)
    reader.join(timeout=5)
    assert still_running
    assert "stopping: finishing 2 calls (Ctrl-C again to stop now)\n" in lines
    assert proc.returncode == 130
