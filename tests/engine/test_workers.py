"""Item claims, `worker` and `run --workers N` (issue 23): real processes against the fake server, on SQLite and PostgreSQL."""

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from conftest import FIXTURES, store_exists
from conftest import query as rows
from factories import many_conversations
from sqlalchemy import text

from experiment_runner.engine import writer as w
from experiment_runner.engine.experiments import create_experiment
from experiment_runner.engine.lease import LeaseTimings, acquire
from experiment_runner.engine.pool import split
from experiment_runner.engine.spec import ExperimentSpec
from experiment_runner.engine.workplan import claim_work
from experiment_runner.errors import LeaseLostError
from experiment_runner.fixtures.fakellm import FakeLLM
from experiment_runner.ingest.importing import import_files
from experiment_runner.store import Store
from experiment_runner.store.queries import claims

SAMPLE = FIXTURES / "ragtruth-sample.conversations.jsonl"
FAST = {"EXPERIMENT_RUNNER_LEASE_HEARTBEAT": "0.2", "EXPERIMENT_RUNNER_LEASE_TIMEOUT": "2", "EXPERIMENT_RUNNER_NO_CACHE": "1"}


def _cli(db: Path | str, *args: str, **env: str) -> subprocess.Popen[str]:
    full = {**os.environ, **FAST, **env, "EXPERIMENT_RUNNER_DB": str(db), "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.Popen([sys.executable, "-m", "experiment_runner", *args], env=full,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _run_args(fake_llm: FakeLLM, *extra: str, judge: bool = True) -> list[str]:
    args = ["run", "--name", "shared", "--model", "openai/target", "--api-base", fake_llm.api_base, "--all", *extra]
    return args + (["--evaluator-model", "openai/judge", "--evaluator-api-base", fake_llm.api_base] if judge else [])


def _asked(fake_llm: FakeLLM, model: str = "target") -> Counter[str]:
    """How often each prompt was sent to `model`."""
    return Counter(b["messages"][-1]["content"] for b in fake_llm.requests() if b["model"] == model)


def _wait(db: Path | str, sql: str, at_least: int, proc: subprocess.Popen[str] | None = None, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            if store_exists(db) and rows(db, sql)[0][0] >= at_least:
                return
        except Exception:  # the file exists before its tables do
            pass
        assert proc is None or proc.poll() is None, proc.stderr.read() if proc and proc.stderr else ""
        assert time.monotonic() < deadline
        time.sleep(0.02)


def _statuses(db: Path) -> dict[str, int]:
    return dict(rows(db, "SELECT status, count(*) FROM item GROUP BY status"))


def test_concurrency_is_split_among_the_processes() -> None:
    assert split(50, 2) == [25, 25] and split(7, 3) == [3, 2, 2] and split(2, 4) == [1, 1] and split(1, 2) == [1]


def test_the_default_is_one_process_where_a_second_could_not_pay_for_its_start() -> None:
    from experiment_runner.engine.pool import default_workers
    from experiment_runner.store.tables import Experiment

    def experiment(**settings: Any) -> Experiment:
        return Experiment(id="e", name="n", model="openai/t", conversation_ids=[], created_at="", **settings)

    assert default_workers(experiment(pass_through=True), 5000) == 1  # copies replies: no model call
    assert default_workers(experiment(), 150) == 1 and default_workers(experiment(evaluator_model="openai/j"), 90) == 1
    if len(os.sched_getaffinity(0)) >= 2:  # a forked worker costs no import: 2, loaded machine or not
        assert default_workers(experiment(evaluator_model="openai/j"), 400, forking=True) == 2


def test_run_workers_2_on_400_items_sends_every_prompt_once(run_cli, fake_llm, db_path, tmp_path) -> None:
    run_cli("import", many_conversations(tmp_path, 400))
    proc = _cli(db_path, "-v", *_run_args(fake_llm, "--workers", "2", "--concurrency", "50"))
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    if sys.platform == "linux":  # the second worker was forked with litellm loaded, not a new interpreter
        assert "experiment_runner.engine.launch: forked worker process " in err
    experiment_id = out.strip().splitlines()[-1]
    assert f"Experiment {experiment_id}: 400 items run: 400 completed, 0 failed." in err, err
    assert _statuses(db_path) == {"completed": 400} and rows(db_path, "SELECT count(*) FROM evaluation") == [(400,)]
    target, judge = _asked(fake_llm), _asked(fake_llm, "judge")
    assert len(target) == 400 and set(target.values()) == {1}
    assert sum(judge.values()) == 400
    pids = {pid for (pid,) in rows(db_path, "SELECT DISTINCT claimed_by FROM item")}
    assert pids == {None} and rows(db_path, "SELECT count(*) FROM worker") == [(0,)]  # every claim and row given back


def test_a_second_resume_joins_the_running_one_as_a_worker(run_cli, fake_llm, db_path, tmp_path) -> None:
    run_cli("import", many_conversations(tmp_path, 40))
    fake_llm.configure(latency_ms=300)
    first = _cli(db_path, *_run_args(fake_llm, "--concurrency", "1", judge=False))
    _wait(db_path, "SELECT count(*) FROM item WHERE status = 'completed'", 2, first)
    (experiment_id,) = rows(db_path, "SELECT id FROM experiment")[0]
    second = _cli(db_path, "resume", experiment_id, "--concurrency", "4")
    out2, err2 = second.communicate(timeout=120)
    out1, err1 = first.communicate(timeout=120)
    assert first.returncode == 0 and second.returncode == 0, (err1, err2)
    assert "done by other workers" in err2 or "done by other workers" in err1
    assert _statuses(db_path) == {"completed": 40}
    assert set(_asked(fake_llm).values()) == {1} and sum(_asked(fake_llm).values()) == 40  # each prompt sent once
    assert rows(db_path, "SELECT runner, stop_reason FROM experiment") == [("cli", None)]
    assert rows(db_path, "SELECT completed_at IS NOT NULL FROM experiment") == [(1,)]


def _experiment(store: Store, fake_llm: FakeLLM) -> str:
    ids = import_files(store, [str(SAMPLE)]).ids
    return create_experiment(store, ExperimentSpec(name="t", model="openai/target", conversation_ids=ids, api_base=fake_llm.api_base))


def test_a_worker_whose_claim_was_taken_writes_nothing(store, fake_llm) -> None:
    experiment_id = _experiment(store, fake_llm)
    quick = LeaseTimings(heartbeat=0.05, timeout=0.2)
    stalled = acquire(store, experiment_id, quick)
    stalled.claims = True
    experiment = store_experiment(store, experiment_id)
    mine = claim_work(store, experiment, stalled, 4, None)
    assert len(mine) == 4
    time.sleep(0.3)  # it misses its heartbeat...
    other = acquire(store, experiment_id, quick)  # ...and the next worker removes it: its items are free again
    other.claims = True
    taken = claim_work(store, experiment, other, 4, None)
    assert [u.item_id for u in taken] == [u.item_id for u in mine]
    with pytest.raises(LeaseLostError):
        w.apply_events(store, experiment_id, [w.Started(mine[0].item_id)], stalled)
    assert rows(store, "SELECT count(*) FROM item WHERE status != 'pending'") == [(0,)]
    # a live worker's event for an item it does not hold (any more) is dropped, in the same transaction
    late = acquire(store, experiment_id, quick)
    late.claims = True
    w.apply_events(store, experiment_id, [w.Failed(taken[0].item_id, "late")], late)
    w.apply_events(store, experiment_id, [w.Failed(taken[1].item_id, "owner")], other)
    assert rows(store, "SELECT error_message FROM item WHERE status = 'failed'") == [("owner",)]


def store_experiment(store: Store, experiment_id: str):
    from experiment_runner.engine.experiments import get_experiment

    return get_experiment(store, experiment_id)


def test_stale_claims_of_a_worker_elsewhere_are_taken_over_after_the_timeout(store, fake_llm, db_path) -> None:
    experiment_id = _experiment(store, fake_llm)
    with store.write() as session:  # a worker on another machine claimed 4 items, then went silent
        conn = session.connection()
        claims.register(conn, {"id": "far", "experiment": experiment_id, "host": "elsewhere", "pid": 4242,
                               "started_at": "2026-01-01T00:00:00.000000Z", "heartbeat": time.time()})
        conn.execute(text("UPDATE item SET claimed_by = 'far' WHERE id IN (SELECT id FROM item ORDER BY position LIMIT 4)"))
    proc = _cli(db_path, "worker", "--experiment", experiment_id, "--concurrency", "4")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert _statuses(db_path) == {"completed": 40} and fake_llm.request_count == 40
    assert rows(db_path, "SELECT count(*) FROM worker") == [(0,)]
    assert f"worker: experiment {experiment_id}: " in err


def test_kill_9_of_one_worker_its_items_are_taken_over_and_no_prompt_is_sent_three_times(run_cli, fake_llm, db_path, tmp_path) -> None:
    run_cli("import", many_conversations(tmp_path, 120))
    fake_llm.configure(latency_ms=3000)  # slow until the second process has joined (else the command may do it all)
    proc = _cli(db_path, *_run_args(fake_llm, "--workers", "2", "--concurrency", "8", judge=False))
    _wait(db_path, "SELECT count(DISTINCT pid) FROM worker", 2, proc)
    fake_llm.configure(latency_ms=150)
    _wait(db_path, "SELECT count(*) FROM item WHERE status = 'completed'", 20, proc)
    victim = rows(db_path, "SELECT pid FROM worker WHERE pid != ? LIMIT 1", proc.pid)[0][0]  # a worker process, not the command
    os.kill(victim, signal.SIGKILL)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert _statuses(db_path) == {"completed": 120}
    asked = _asked(fake_llm)
    assert len(asked) == 120 and max(asked.values()) <= 2
    assert sum(n - 1 for n in asked.values()) <= 4  # at most the killed worker's K calls in flight again


def test_ctrl_c_drains_every_worker_and_resume_finishes(run_cli, fake_llm, db_path, tmp_path) -> None:
    run_cli("import", many_conversations(tmp_path, 120))
    fake_llm.configure(latency_ms=200)
    proc = _cli(db_path, *_run_args(fake_llm, "--workers", "2", "--concurrency", "4", judge=False))
    _wait(db_path, "SELECT count(*) FROM item WHERE status = 'completed'", 8, proc)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    experiment_id = out.strip().splitlines()[-1]
    assert "stopping: finishing " in err and f"Interrupted. Continue with: experiment-runner resume {experiment_id}" in err
    assert rows(db_path, "SELECT stop_reason, completed_at FROM experiment") == [("interrupted", None)]
    assert "in_progress" not in _statuses(db_path) and rows(db_path, "SELECT count(*) FROM worker") == [(0,)]
    done = _statuses(db_path)["completed"]
    drained = sum(_asked(fake_llm).values())
    assert drained == done  # every call under way was finished and stored, none dropped
    fake_llm.configure(latency_ms=0)
    quiet = _cli(db_path, "worker")  # a plain worker leaves a stopped experiment alone
    assert quiet.communicate(timeout=60)[1].strip() == "worker: no experiment has work left."
    resumed = _cli(db_path, "resume", experiment_id, "--workers", "2", "--concurrency", "4")
    _, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, err
    assert _statuses(db_path) == {"completed": 120} and set(_asked(fake_llm).values()) == {1}


def test_a_systematic_stop_in_one_worker_stops_the_run_and_resume_fixes_it(run_cli, fake_llm, db_path, tmp_path) -> None:
    run_cli("import", many_conversations(tmp_path, 60))
    fake_llm.configure(scripts=[{"match": "", "model": "judge", "reply": {"status": 401}}])  # the judge's key is refused
    proc = _cli(db_path, *_run_args(fake_llm, "--workers", "2", "--concurrency", "4"))
    out, err = proc.communicate(timeout=120)
    experiment_id = out.strip().splitlines()[-1]
    assert proc.returncode == 1, err
    assert err.strip().splitlines()[-1].startswith("Error: stopped: evaluator model openai/judge at ")
    assert f"`experiment-runner resume {experiment_id}`" in err.strip().splitlines()[-1]
    assert rows(db_path, "SELECT stop_reason, completed_at FROM experiment") == [("systematic", None)]
    assert rows(db_path, "SELECT count(*) FROM worker") == [(0,)]
    fake_llm.configure(scripts=[])
    resumed = _cli(db_path, "resume", experiment_id, "--workers", "2", "--concurrency", "4")
    _, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, err
    assert _statuses(db_path) == {"completed": 60} and rows(db_path, "SELECT count(*) FROM evaluation") == [(60,)]
    assert max(_asked(fake_llm).values()) == 1  # no target prompt was sent again


def test_the_budget_holds_across_worker_processes(run_cli, fake_llm, db_path, tmp_path) -> None:
    from test_budget_reservation import mixed_cost_file

    run_cli("import", mixed_cost_file(tmp_path, cheap=60, dear=60))
    cap = 0.06
    proc = _cli(db_path, "run", "--name", "capped", "--model", "openai/gpt-4o-mini", "--api-base", fake_llm.api_base, "--all",
                "--workers", "2", "--concurrency", "16", "--max-cost", str(cap))
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 1 and "Error: budget of $0.06 reached after " in err, err
    spent = sum(json.loads(g)["cost_usd"] for (g,) in rows(
        db_path, "SELECT generation FROM message WHERE role = 'assistant' AND conversation_id IN (SELECT result_conversation_id FROM item)"))
    dearest = 0.0066  # one dear item's reservation (its 20,000-word prompt at gpt-4o-mini's price, output bound included)
    assert cap <= spent <= cap + dearest, spent
    assert rows(db_path, "SELECT stop_reason FROM experiment") == [("budget",)]


def test_a_worker_without_the_key_it_needs_fails_fast_and_claims_nothing(run_cli, store, db_path) -> None:
    ids = import_files(store, [str(SAMPLE)]).ids
    create_experiment(store, ExperimentSpec(name="keyed", model="openai/gpt-4o-mini", conversation_ids=ids), check_models=False)
    proc = _cli(db_path, "worker")  # (the test environment has no OPENAI_API_KEY)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and err.count("\n") == 1 and err.startswith("Error: ") and "OPENAI_API_KEY" in err, err
    assert rows(db_path, "SELECT count(*) FROM item WHERE claimed_by IS NOT NULL OR status != 'pending'") == [(0,)]
    assert rows(db_path, "SELECT count(*) FROM worker") == [(0,)]


def test_worker_wait_takes_new_experiments_until_sigterm(store, fake_llm, db_path) -> None:
    import_files(store, [str(SAMPLE)])
    proc = _cli(db_path, "worker", "--wait", "--concurrency", "4")
    _wait(db_path, "SELECT count(*) FROM conversation", 1, proc)  # (the store exists; the worker polls it)
    time.sleep(0.5)
    experiment_id = _experiment(store, fake_llm)  # created while it waits: it picks it up at its next look
    _wait(db_path, "SELECT count(*) FROM experiment WHERE completed_at IS NOT NULL", 1, proc)
    assert proc.poll() is None  # still waiting for more
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert f"worker: experiment {experiment_id}: 40 completed, 0 failed here" in err
    assert err.strip().splitlines()[-1] == "worker: stopped; what it had claimed and not finished is back for other workers."
    assert _statuses(db_path) == {"completed": 40} and rows(db_path, "SELECT count(*) FROM worker") == [(0,)]


def test_sigterm_while_a_waiting_worker_is_between_runs_stops_it_cleanly(store, db_path) -> None:
    """A signal outside a run (here: while `--wait` loads litellm) is noted and honoured, not fatal (was -15)."""
    import_files(store, [str(SAMPLE)])  # the store exists; there is no experiment to work on
    proc = _cli(db_path, "worker", "--wait")
    assert proc.stderr is not None
    assert proc.stderr.readline().startswith("worker: working on unfinished experiments")
    time.sleep(0.3)  # inside `work` now, importing litellm (seconds) or already waiting
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert err.strip().splitlines()[-1] == "worker: stopped; what it had claimed and not finished is back for other workers."


def test_where_it_cannot_fork_run_workers_starts_new_interpreters(store, fake_llm, db_path, tmp_path) -> None:
    from experiment_runner.engine.pool import run_in_processes
    from experiment_runner.engine.progress import RunOptions

    ids = import_files(store, [str(many_conversations(tmp_path, 40))]).ids
    spec = ExperimentSpec(name="spawned", model="openai/target", conversation_ids=ids, api_base=fake_llm.api_base)
    experiment_id = create_experiment(store, spec)
    fake_llm.configure(latency_ms=50)  # the command alone would not finish before its second process joins
    progress = run_in_processes(store, str(db_path), experiment_id, RunOptions(concurrency=4, use_cache=False), 2)  # no `entry`
    assert progress.completed == 40 and progress.failed == 0
    assert _statuses(db_path) == {"completed": 40} and set(_asked(fake_llm).values()) == {1}
    assert rows(db_path, "SELECT completed_at IS NOT NULL FROM experiment") == [(1,)]
