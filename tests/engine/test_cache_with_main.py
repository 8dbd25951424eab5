"""The response cache and batch jobs together with stored tools, stored budgets and rule evaluators."""

import json
from pathlib import Path

import pytest
from conftest import FIXTURES, dump
from conftest import query as rows

from experiment_runner.results.catalog import experiment_summary
from experiment_runner.store import open_store

TOOLS = FIXTURES / "handwritten.native.jsonl"
TARGET, JUDGE = "openai/gpt-4o-mini", "openai/gpt-4o"
QUESTION = [{"role": "user", "parts": [{"type": "text", "content": "Will it rain in Porto?"}]}]


def tool(description: str) -> dict:
    return {"type": "function", "function": {"name": "get_forecast", "description": description,
                                             "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}


def write_tools_file(tmp_path: Path) -> Path:
    """Three conversations asking the same: c1 and c3 declare the same tool, c2 describes it differently."""
    path = tmp_path / "tools.jsonl"
    lines = [{"id": cid, "messages": QUESTION, "tools": [tool(text)]} for cid, text in
             (("c1", "The forecast."), ("c2", "Another forecast."), ("c3", "The forecast."))]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def run_args(fake_llm, *extra: str) -> list[str]:
    return ["run", "--name", "t", "--model", TARGET, "--api-base", fake_llm.api_base, "--concurrency", "1", *extra]


def last_id(result) -> str:
    assert result.exit_code == 0, result.stderr
    return str(result.stdout.strip().splitlines()[-1])


def run_state(db: Path, experiment_id: str) -> dict:
    store = open_store(str(db))
    try:
        return dict(experiment_summary(store, experiment_id)["run"])
    finally:
        store.close()


def cache_hits(db: Path, experiment_id: str) -> list[bool]:
    """Per item, by position: whether its reply came from the cache."""
    found = rows(db, """SELECT m.generation FROM item i JOIN message m ON m.conversation_id = i.result_conversation_id
                        WHERE i.experiment_id = ? AND m.role = 'assistant' ORDER BY i.position""", experiment_id)
    return [bool(json.loads(g).get("cache_hit")) for (g,) in found]


def test_the_stored_tools_are_part_of_the_key_in_the_run_and_in_the_dry_run(run_cli, fake_llm, db_path, tmp_path) -> None:
    run_cli("import", write_tools_file(tmp_path))
    first = last_id(run_cli(*run_args(fake_llm, "--all")))
    assert fake_llm.request_count == 2  # c2's other tool definition is another request; c3 repeats c1
    assert [b["tools"][0]["function"]["description"] for b in fake_llm.requests()] == ["The forecast.", "Another forecast."]
    assert cache_hits(db_path, first) == [False, False, True]
    estimate = json.loads(run_cli(*run_args(fake_llm, "--all", "--dry-run", "--json")).stdout)
    assert (estimate["target_calls"], estimate["cached_calls"]) == (3, 3)  # the probe builds the key with the tools too


def test_cache_hits_cost_nothing_against_the_stored_budget(run_cli, fake_llm, db_path) -> None:
    run_cli("import", TOOLS)
    judge = ["--evaluator-model", JUDGE, "--evaluator-api-base", fake_llm.api_base]
    first = last_id(run_cli(*run_args(fake_llm, "--all", *judge, "--max-cost", "5")))
    first_spent = run_state(db_path, first)["spent_usd"]
    assert first_spent > 0
    fake_llm.reset()
    second_result = run_cli(*run_args(fake_llm, "--all", *judge, "--max-cost", "5"))
    second = last_id(second_result)
    assert fake_llm.request_count == 0
    assert "this run cost $0.0000" in second_result.stderr
    assert "  8 call(s) came from the response cache, saving $" in second_result.stderr
    shown = run_state(db_path, second)
    assert (shown["spent_usd"], shown["max_cost_usd"], shown["stop_reason"]) == (0, 5, None)


def test_batch_refuses_a_budget_before_anything_is_stored(run_cli, fake_llm, db_path) -> None:
    run_cli("import", TOOLS)
    before = dump(db_path)
    refused = run_cli(*run_args(fake_llm, "--all", "--batch", "--max-cost", "1"))
    assert refused.exit_code == 2
    assert refused.stderr == ("Error: --max-cost cannot be kept with --batch: what a batch job costs is known only once it is "
                              "collected; run without one of them\n")
    assert dump(db_path) == before and fake_llm.request_count == 0


@pytest.mark.parametrize("with_judge", [False, True])
def test_rules_apply_to_batch_answers(run_cli, fake_llm, db_path, tmp_path, monkeypatch, with_judge: bool) -> None:
    monkeypatch.setenv("EXPERIMENT_RUNNER_BATCH_POLL", "0.05")
    run_cli("import", TOOLS)
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps([{"label": "Sim", "not_contains": "Simulated"}]))
    judge = ["--evaluator-model", JUDGE, "--evaluator-api-base", fake_llm.api_base] if with_judge else []
    experiment_id = last_id(run_cli(*run_args(fake_llm, "--all", "--batch", "--rules", str(rules), *judge)))
    assert fake_llm.stats()["batches_created"] == (2 if with_judge else 1)  # rules alone send no job of their own
    evaluations = rows(db_path, "SELECT e.status, e.model FROM evaluation e JOIN item i ON i.id = e.item_id "
                                "WHERE i.experiment_id = ?", experiment_id)
    assert evaluations == [("completed", JUDGE if with_judge else "rules")] * 4
    spans = rows(db_path, """SELECT a.text, a.start_offset, a.end_offset FROM annotation a JOIN evaluation e ON e.id = a.evaluation_id
                             JOIN item i ON i.id = e.item_id WHERE i.experiment_id = ? AND a.label = 'Sim'""", experiment_id)
    assert len(spans) >= 4 and all(s == ("Simulated", 0, 9) for s in spans)
