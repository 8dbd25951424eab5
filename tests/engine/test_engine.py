"""The experiment engine against the bundled model server over real HTTP (issue 4)."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from conftest import FIXTURES, dump, store_exists
from conftest import query as rows
from factories import many_conversations

from experiment_runner.engine.experiments import create_experiment
from experiment_runner.engine.progress import RunOptions
from experiment_runner.engine.run import run_experiment
from experiment_runner.engine.spec import ExperimentSpec
from experiment_runner.fixtures.fakellm import FakeLLM
from experiment_runner.ingest.importing import import_files
from experiment_runner.store import Store

SAMPLE = FIXTURES / "ragtruth-sample.conversations.jsonl"
TOOLS = FIXTURES / "handwritten.native.jsonl"


def statuses(db: Path, experiment_id: str) -> dict[str, int]:
    return dict(rows(db, "SELECT status, count(*) FROM item WHERE experiment_id=? GROUP BY status", experiment_id))


def final_messages(db: Path, experiment_id: str) -> list[dict]:
    """The last message of every item's result conversation, in item order."""
    found = rows(
        db,
        """SELECT m.role, m.parts, m.generation FROM item i JOIN message m ON m.conversation_id = i.result_conversation_id
           WHERE i.experiment_id = ? AND m.sequence_number =
             (SELECT max(sequence_number) FROM message WHERE conversation_id = i.result_conversation_id)
           ORDER BY i.position""",
        experiment_id,
    )
    return [{"role": r[0], "parts": json.loads(r[1]), "generation": json.loads(r[2]) if r[2] else None} for r in found]


def run(run_cli, fake_llm: FakeLLM, *extra: str, model: str = "openai/target"):
    result = run_cli("run", "--name", "t", "--model", model, "--api-base", fake_llm.api_base, *extra)
    return result, (result.stdout.strip().splitlines() or [""])[-1]


def test_replay_sends_the_history_without_the_final_reply(run_cli, fake_llm, db_path) -> None:
    run_cli("import", TOOLS)
    result, experiment_id = run(run_cli, fake_llm, "--conversation", "hw-weather-tools", "--conversation", "hw-reasoning-math")
    assert result.exit_code == 0, result.stderr
    bodies = sorted(fake_llm.requests(), key=lambda b: len(b["messages"]))
    assert bodies[0]["messages"] == [
        {"role": "user", "content": "A train leaves at 14:10 and the trip takes 2 h 55 min. When does it arrive?"}
    ]
    weather = bodies[1]["messages"]
    assert [m["role"] for m in weather] == ["system", "user", "assistant", "tool"]  # 5 messages, the reply left out
    assert weather[2]["tool_calls"] == [
        {"id": "call_1", "type": "function", "function": {"name": "get_forecast", "arguments": '{"city": "Lisbon", "days": 1, "units": "metric"}'}}
    ]
    assert weather[3] == {"role": "tool", "tool_call_id": "call_1", "content": json.dumps(
        {"city": "Lisbon", "date": "2026-11-25", "precipitation_probability": 0.7, "high_c": 17})}
    assert bodies[1]["tools"][0]["function"]["name"] == "get_forecast"
    assert all(b["model"] == "target" for b in bodies)

    finals = final_messages(db_path, experiment_id)
    assert [f["role"] for f in finals] == ["assistant", "assistant"]
    generation = finals[0]["generation"]
    assert generation["model"] == "openai/target" and generation["provider"] == "openai"
    assert generation["input_tokens"] > 0 and generation["output_tokens"] > 0
    assert generation["latency_ms"] > 0 and generation["finish_reasons"] == ["stop"] and generation["cost_usd"] is None
    copied = rows(db_path, """SELECT count(*) FROM item i JOIN message m ON m.conversation_id = i.result_conversation_id
                               WHERE i.experiment_id = ?""", experiment_id)[0][0]
    assert copied == 5 + 2  # the history copied, plus one new reply each
    assert rows(db_path, "SELECT completed_at IS NOT NULL FROM experiment")[0][0] == 1


def test_tool_call_and_reasoning_replies_are_stored_as_parts(run_cli, fake_llm, db_path) -> None:
    run_cli("import", TOOLS)
    fake_llm.configure(scripts=[{"match": "umbrella", "reply": {
        "reasoning_content": "Check the forecast.", "content": "Let me check.",
        "tool_calls": [{"id": "call_9", "name": "get_forecast", "arguments": {"city": "Lisbon"}}]}}])
    _, experiment_id = run(run_cli, fake_llm, "--conversation", "hw-weather-tools")
    (final,) = final_messages(db_path, experiment_id)
    assert final["parts"] == [
        {"type": "reasoning", "content": "Check the forecast."},
        {"type": "text", "content": "Let me check."},
        {"type": "tool_call", "id": "call_9", "name": "get_forecast", "arguments": {"city": "Lisbon"}},
    ]
    assert final["generation"]["finish_reasons"] == ["tool_call"]


def test_pass_through_makes_no_model_calls(run_cli, fake_llm, db_path) -> None:
    run_cli("import", TOOLS)
    result, experiment_id = run(run_cli, fake_llm, "--all", "--pass-through")
    assert result.exit_code == 0
    assert fake_llm.request_count == 0
    finals = final_messages(db_path, experiment_id)
    originals = [json.loads(line)["messages"][-1] for line in TOOLS.read_text().splitlines()]
    assert [f["parts"] for f in finals] == [o["parts"] for o in originals]
    assert finals[0]["generation"] == originals[0]["generation"]  # generation data copied too


def test_system_prompt_replaces_or_is_added(run_cli, fake_llm) -> None:
    run_cli("import", TOOLS)
    run(run_cli, fake_llm, "--conversation", "hw-weather-tools", "--conversation", "hw-reasoning-math", "--system-prompt", "Be terse.")
    for body in fake_llm.requests():
        assert body["messages"][0] == {"role": "system", "content": "Be terse."}
        assert sum(m["role"] == "system" for m in body["messages"]) == 1


def test_injected_429_and_500_still_complete_every_item(run_cli, fake_llm, db_path, monkeypatch) -> None:
    monkeypatch.setenv("EXPERIMENT_RUNNER_NO_CACHE", "1")  # counts calls per item: the cache would answer repeated questions
    run_cli("import", SAMPLE)
    fake_llm.configure(fail_rate=0.3, fail_mode="mixed", fail_by="prompt")  # each failing prompt fails once: never out of attempts
    result, experiment_id = run(run_cli, fake_llm, "--all", "--concurrency", "8")
    assert result.exit_code == 0, result.stderr
    assert statuses(db_path, experiment_id) == {"completed": 40}
    stats = fake_llm.stats()
    assert stats["failed_injected"] >= 5 and stats["requests"] == 40 + stats["failed_injected"]


def test_permanent_failure_fails_one_item_only(run_cli, fake_llm, db_path, monkeypatch) -> None:
    monkeypatch.setenv("EXPERIMENT_RUNNER_NO_CACHE", "1")  # counts calls per item: the cache would answer repeated questions
    run_cli("import", SAMPLE)
    fake_llm.configure(scripts=[{"match": "automotive technicians", "reply": {"status": 400, "content": "bad request"}}])
    result, experiment_id = run(run_cli, fake_llm, "--all")
    assert result.exit_code == 0
    assert statuses(db_path, experiment_id) == {"completed": 39, "failed": 1}
    (error,) = rows(db_path, "SELECT error_message FROM item WHERE status='failed'")
    assert error[0].startswith("HTTP 400")
    assert fake_llm.request_count == 40  # a 400 is not retried


def test_retry_after_is_honoured_and_attempts_are_bounded(store: Store, fake_llm: FakeLLM, monkeypatch) -> None:
    import_files(store, [str(TOOLS)])
    fake_llm.configure(scripts=[{"match": "umbrella", "reply": {"status": 429}}], retry_after=1)
    monkeypatch.setenv("EXPERIMENT_RUNNER_MAX_ATTEMPTS", "3")
    experiment_id = create_experiment(store, ExperimentSpec(name="t", model="openai/x", conversation_ids=["hw-weather-tools"], api_base=fake_llm.api_base))
    started = time.monotonic()
    progress = run_experiment(store, experiment_id)
    assert progress.failed == 1 and fake_llm.request_count == 3
    assert time.monotonic() - started >= 2.0  # two waits of Retry-After: 1 s (base delay is 0 in tests)


def test_timeouts_are_retried(store: Store, fake_llm: FakeLLM, monkeypatch) -> None:
    import_files(store, [str(TOOLS)])
    monkeypatch.setenv("EXPERIMENT_RUNNER_TIMEOUT", "0.5")
    fake_llm.configure(fail_rate=0.5, fail_mode="timeout", hang_ms=3000)
    experiment_id = create_experiment(store, ExperimentSpec(name="t", model="openai/x", conversation_ids=["hw-weather-tools", "hw-refusal"], api_base=fake_llm.api_base))
    progress = run_experiment(store, experiment_id, RunOptions(concurrency=1))
    assert (progress.completed, progress.failed) == (2, 0)
    assert fake_llm.stats()["failed_injected"] >= 1


def test_output_schema_and_reasoning_reach_the_server(run_cli, fake_llm, db_path, tmp_path) -> None:
    run_cli("import", TOOLS)
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps([{"name": "answer", "type": "string", "is_list": False, "is_optional": False},
                                  {"name": "sources", "type": "int", "is_list": True, "is_optional": True}]))
    fake_llm.configure(scripts=[{"match": "umbrella", "reply": {"content": "not json at all"}}])
    result, experiment_id = run(run_cli, fake_llm, "--all", "--output-schema", schema, "--reasoning-effort", "low")
    assert result.exit_code == 0
    body = fake_llm.requests()[0]
    assert body["reasoning_effort"] == "low"
    sent = body["response_format"]["json_schema"]
    assert sent["strict"] is True and sent["schema"]["required"] == ["answer", "sources"]
    assert sent["schema"]["properties"]["sources"] == {"anyOf": [{"type": "array", "items": {"type": "integer"}}, {"type": "null"}]}
    assert statuses(db_path, experiment_id) == {"completed": 3, "failed": 1}  # the server answers schema-valid JSON
    (error,) = rows(db_path, "SELECT error_message FROM item WHERE status='failed'")
    assert "not JSON as the output schema requires" in error[0]
    (config,) = rows(db_path, "SELECT reasoning_config FROM experiment")
    assert json.loads(config[0]) == {"effort": "low"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--name", "", "--model", "m", "--all"], "name must be 1 to 255"),
        (["--name", "x" * 256, "--model", "m", "--all"], "name must be 1 to 255"),
        (["--name", "n", "--model", " ", "--all"], "model must be a non-empty"),
        (["--name", "n", "--model", "m"], "--conversation ID"),
        (["--name", "n", "--model", "m", "--conversation", "hw-refusal", "--conversation", "nope"], "unknown conversation id(s): 'nope'"),
        (["--name", "n", "--model", "m", "--all", "--pass-through", "--reasoning-effort", "low"], "pass-through"),
        (["--name", "n", "--model", "m", "--all", "--labels", "missing.json"], "no such labels file"),
    ],
)
def test_bad_run_options_exit_2_and_store_nothing(run_cli, db_path, args, message) -> None:
    run_cli("import", TOOLS)
    before = dump(db_path)
    result = run_cli("run", *args)
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: ") and message in result.stderr
    assert dump(db_path) == before


def test_every_item_failing_exits_1_and_stays_resumable(run_cli, fake_llm, db_path) -> None:
    run_cli("import", TOOLS)
    fake_llm.configure(scripts=[{"reply": {"status": 400}}])
    result, experiment_id = run(run_cli, fake_llm, "--all")
    assert result.exit_code == 1 and "every item failed" in result.stderr
    assert experiment_id and statuses(db_path, experiment_id) == {"failed": 4}
    fake_llm.configure(scripts=[])
    again = run_cli("resume", experiment_id, "--retry-failed")
    assert again.exit_code == 0 and statuses(db_path, experiment_id) == {"completed": 4}
    assert rows(db_path, "SELECT count(*) FROM conversation WHERE type='result'")[0][0] == 4


def test_resume_of_finished_experiment_calls_nothing(run_cli, fake_llm) -> None:
    run_cli("import", TOOLS)
    _, experiment_id = run(run_cli, fake_llm, "--all")
    fake_llm.reset()
    result = run_cli("resume", experiment_id)
    assert result.exit_code == 0
    assert result.stderr == f"Experiment {experiment_id} is already complete: nothing to run.\n"  # not "running"
    assert result.stdout == f"{experiment_id}\n"
    assert fake_llm.request_count == 0
    assert run_cli("resume", "no-such-id").exit_code == 2


def _start_run(db: Path, fake: FakeLLM, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "EXPERIMENT_RUNNER_DB": str(db)}
    return subprocess.Popen(
        [sys.executable, "-m", "experiment_runner", "run", "--name", "long", "--model", "openai/target",
         "--api-base", fake.api_base, "--all", "--concurrency", "2", *extra],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _wait_for_completed(db: Path, count: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if store_exists(db):
            try:
                if rows(db, "SELECT count(*) FROM item WHERE status='completed'")[0][0] >= count:
                    return
            except sqlite3.OperationalError:
                pass
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        time.sleep(0.05)
    raise AssertionError("the run made no progress")


def test_sigkill_then_resume_never_redoes_a_completed_item(run_cli, fake_llm, db_path, monkeypatch) -> None:
    monkeypatch.setenv("EXPERIMENT_RUNNER_NO_CACHE", "1")  # counts calls per item: the cache would answer repeated questions
    run_cli("import", SAMPLE)
    fake_llm.configure(latency_ms=150)
    proc = _start_run(db_path, fake_llm)
    _wait_for_completed(db_path, 6, proc)
    proc.kill()
    proc.wait()
    (experiment_id,) = rows(db_path, "SELECT id FROM experiment")[0]
    left = rows(db_path, """SELECT m.parts FROM item i JOIN message m ON m.conversation_id = i.source_conversation_id
                            WHERE i.status != 'completed' AND m.role = 'user'""")
    assert 0 < len(left) <= 34
    fake_llm.reset()
    fake_llm.configure(latency_ms=0)
    result = run_cli("resume", experiment_id)
    assert result.exit_code == 0
    assert statuses(db_path, experiment_id) == {"completed": 40}
    # Some questions appear in two conversations, so compare counts per prompt: each unfinished item
    # was asked exactly once, and nothing else was asked.
    asked = Counter(b["messages"][-1]["content"] for b in fake_llm.requests())
    assert asked == Counter(json.loads(r[0])[0]["content"] for r in left), "a completed item was called again"
    assert rows(db_path, "SELECT count(*) FROM conversation WHERE type='result'")[0][0] == 40


def test_ctrl_c_stops_cleanly_with_exit_130(run_cli, fake_llm, db_path) -> None:
    run_cli("import", SAMPLE)
    fake_llm.configure(latency_ms=300)
    proc = _start_run(db_path, fake_llm)
    _wait_for_completed(db_path, 2, proc)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "experiment-runner resume" in err
    experiment_id = out.strip().splitlines()[-1]
    counts = statuses(db_path, experiment_id)
    assert 2 <= counts.get("completed", 0) < 40
    assert rows(db_path, "SELECT completed_at FROM experiment")[0][0] is None
    fake_llm.configure(latency_ms=0)
    assert run_cli("resume", experiment_id).exit_code == 0
    assert statuses(db_path, experiment_id) == {"completed": 40}


@pytest.mark.parametrize("concurrency", [1, 4])
def test_a_run_never_has_more_than_k_calls_at_the_server(run_cli, fake_llm: FakeLLM, tmp_path: Path, concurrency: int) -> None:
    run_cli("import", many_conversations(tmp_path, 24))
    fake_llm.configure(latency_ms=30)
    result = run_cli("run", "--name", "k", "--model", "openai/t", "--api-base", fake_llm.api_base, "--all", "--no-cache",
                     "--evaluator-model", "openai/j", "--evaluator-api-base", fake_llm.api_base, "--concurrency", str(concurrency))
    assert result.exit_code == 0, result.stderr
    assert fake_llm.stats()["peak_in_flight"] == concurrency and fake_llm.request_count == 48
