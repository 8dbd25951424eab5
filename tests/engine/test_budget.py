"""Knowing the bill before paying it: `--dry-run` and `--max-cost` (issue 17)."""

import json
from collections import Counter

from conftest import FIXTURES, dump
from conftest import query as rows

SAMPLE = FIXTURES / "ragtruth-sample.conversations.jsonl"


def priced_run(run_cli, fake, *extra: str):
    return run_cli("run", "--name", "b", "--model", "openai/gpt-4o-mini", "--api-base", fake.api_base, "--all",
                   "--evaluator-model", "openai/gpt-4o", "--evaluator-api-base", fake.api_base, *extra)


def test_a_dry_run_counts_every_call_prices_it_and_stores_and_calls_nothing(run_cli, fake_llm, db_path) -> None:
    run_cli("import", SAMPLE)
    before = dump(db_path)
    result = priced_run(run_cli, fake_llm, "--dry-run", "--json")
    assert result.exit_code == 0, result.stderr
    estimate = json.loads(result.stdout)
    assert (estimate["items"], estimate["target_calls"], estimate["evaluator_calls"]) == (40, 40, 40)
    assert set(estimate["per_model"]) == {"openai/gpt-4o-mini", "openai/gpt-4o"} and estimate["unpriced_models"] == []
    per_model = estimate["per_model"]
    assert estimate["estimated_cost_usd"] == round(sum(m["estimated_cost_usd"] for m in per_model.values()), 6) > 0
    assert per_model["openai/gpt-4o"]["estimated_output_tokens"] == 40 * 400  # the stated evaluator default
    assert dump(db_path) == before and fake_llm.request_count == 0


def test_the_estimate_is_close_to_what_the_run_then_reports(run_cli, fake_llm, db_path) -> None:
    run_cli("import", SAMPLE)
    estimate = json.loads(priced_run(run_cli, fake_llm, "--dry-run", "--json").stdout)
    assert priced_run(run_cli, fake_llm).exit_code == 0
    target = sum(json.loads(g)["input_tokens"] for (g,) in rows(db_path, "SELECT generation FROM message WHERE CAST(generation AS TEXT) LIKE '%gpt-4o-mini%'"))
    (judge, judge_cost), = rows(db_path, "SELECT sum(input_tokens), sum(cost_usd) FROM evaluation")
    actual = target + judge
    assert 0.65 * actual <= estimate["estimated_input_tokens"] <= 1.35 * actual
    target_cost = sum(json.loads(g)["cost_usd"] for (g,) in rows(db_path, "SELECT generation FROM message WHERE CAST(generation AS TEXT) LIKE '%gpt-4o-mini%'"))
    assert estimate["estimated_cost_usd"] >= 0.8 * (target_cost + judge_cost)


def test_unpriced_models_are_unknown_not_free(run_cli, fake_llm) -> None:
    run_cli("import", SAMPLE)
    result = run_cli("run", "--name", "b", "--model", "openai/local-thing", "--api-base", fake_llm.api_base, "--all", "--dry-run")
    assert result.exit_code == 0
    assert "unknown" in result.stdout and "No price known for openai/local-thing" in result.stdout


def distinct_prompts(tmp_path) -> tuple[object, int]:
    """The sample without the conversations whose history repeats another's (RAGTruth has a few), so a
    request identifies its item."""
    seen, lines = set(), []
    for line in SAMPLE.read_text().splitlines():
        key = json.dumps(json.loads(line)["messages"][:-1])
        if key not in seen:
            seen.add(key)
            lines.append(line)
    path = tmp_path / "distinct.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path, len(lines)


def test_the_budget_stops_new_items_and_resume_pays_each_remaining_item_once(run_cli, fake_llm, db_path, tmp_path) -> None:
    sample, n = distinct_prompts(tmp_path)
    run_cli("import", sample)
    estimate = json.loads(priced_run(run_cli, fake_llm, "--dry-run", "--json").stdout)
    cap = estimate["estimated_cost_usd"] / n * 15 / 2.5  # about 15 items' worth of what a run here really costs
    result = priced_run(run_cli, fake_llm, "--max-cost", f"{cap:.6f}", "--concurrency", "2")
    assert result.exit_code == 1
    error = result.stderr.strip().splitlines()[-1]
    experiment_id = result.stdout.strip().splitlines()[-1]
    assert error.startswith(f"Error: budget of ${float(f'{cap:.6f}'):g} reached after ")
    assert error.endswith(f" spent); to go on: experiment-runner resume {experiment_id} --max-cost AMOUNT")
    statuses = dict(rows(db_path, "SELECT status, count(*) FROM item GROUP BY status"))
    assert 5 <= statuses["completed"] <= 28 and statuses["pending"] == n - statuses["completed"]
    spent = float(error.split("($", 1)[1].split(" spent", 1)[0])
    in_flight = 2 * (spent / statuses["completed"])
    assert cap - 0.0001 <= spent <= cap + in_flight  # (the line rounds spent to 4 places)
    first = Counter(json.dumps(r["messages"]) for r in fake_llm.requests() if r["model"] == "gpt-4o-mini")
    fake_llm.reset()
    assert run_cli("resume", experiment_id, "--max-cost", "100").exit_code == 0  # the stored budget raised, for good
    again = Counter(json.dumps(r["messages"]) for r in fake_llm.requests() if r["model"] == "gpt-4o-mini")
    assert sum(again.values()) == n - statuses["completed"] and not set(again) & set(first)
    assert all(n == 1 for n in again.values())


def test_a_budget_needs_prices(run_cli, fake_llm, db_path) -> None:
    run_cli("import", SAMPLE)
    before = dump(db_path)
    args = ("run", "--name", "b", "--model", "openai/local-thing", "--api-base", fake_llm.api_base, "--all", "--max-cost", "1")
    refused = run_cli(*args)
    assert refused.exit_code == 2 and "litellm has no price for openai/local-thing" in refused.stderr
    assert dump(db_path) == before
    assert run_cli(*args, "--max-cost-unpriced-ok").exit_code == 0


def test_reevaluate_dry_run_counts_only_evaluator_calls(run_cli, fake_llm) -> None:
    run_cli("import", SAMPLE)
    source = run_cli("run", "--name", "p", "--model", "openai/x", "--pass-through", "--all").stdout.strip().splitlines()[-1]
    result = run_cli("reevaluate", source, "--evaluator-model", "openai/gpt-4o", "--evaluator-api-base", fake_llm.api_base, "--dry-run", "--json")
    estimate = json.loads(result.stdout)
    assert (estimate["target_calls"], estimate["evaluator_calls"]) == (0, 40) and list(estimate["per_model"]) == ["openai/gpt-4o"]
