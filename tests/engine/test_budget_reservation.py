"""A budget that holds when items differ in cost (issue 21): each item reserves its own bound before it starts."""

import json
from pathlib import Path

import anyio
import pytest
from conftest import query as rows

from experiment_runner.engine.budget import Budget
from experiment_runner.engine.estimate import FALLBACK_OUTPUT_BOUND, ItemPlan, item_bound, output_bound, price
from experiment_runner.engine.experiments import create_experiment
from experiment_runner.engine.progress import RunOptions
from experiment_runner.engine.run import run_experiment
from experiment_runner.engine.spec import ExperimentSpec
from experiment_runner.ingest.conversations import load_conversation
from experiment_runner.ingest.importing import import_files

WORDS = "river stone light paper garden window metal cloud field letter market voice table winter bridge".split()


def _conversation(key: str, words: int) -> str:
    text = " ".join(WORDS[(i * 7 + len(key)) % len(WORDS)] for i in range(words))
    return json.dumps({"id": key, "messages": [
        {"role": "user", "content": f"Question {key}: summarise this text.\n{text}"},
        {"role": "assistant", "content": "A short summary."},
    ]})


def mixed_cost_file(tmp_path: Path, cheap: int = 60, dear: int = 100, dear_words: int = 20_000) -> Path:
    """The issue's case: `cheap` short conversations, then `dear` ones with `dear_words`-word prompts."""
    path = tmp_path / "mixed.jsonl"
    lines = [_conversation(f"cheap-{i}", 30) for i in range(cheap)]
    lines += [_conversation(f"dear-{i}", dear_words) for i in range(dear)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_the_mixed_cost_case_stops_within_the_cap_plus_one_reservation(store, fake_llm, tmp_path) -> None:
    ids = import_files(store, [str(mixed_cost_file(tmp_path))]).ids
    spec = ExperimentSpec(name="mixed", model="openai/gpt-4o-mini", conversation_ids=ids, api_base=fake_llm.api_base,
                          evaluator_model="openai/gpt-4o-mini", evaluator_api_base=fake_llm.api_base)
    experiment_id = create_experiment(store, spec)
    cap = 0.06  # the 60 cheap items cost about $0.007; each dear one about $0.0065
    progress = run_experiment(store, experiment_id, RunOptions(concurrency=16, max_cost_usd=cap))

    assert progress.budget_reached and progress.budget_usd == cap
    assert cap <= progress.spent_usd <= cap + progress.max_reserved_usd
    done = dict(rows(store, "SELECT status, count(*) FROM item GROUP BY status"))
    assert 60 < done["completed"] < 160 and done["pending"] == 160 - done["completed"]
    # what the run counted is what its stored calls cost
    target = sum(json.loads(g)["cost_usd"] for (g,) in rows(
        store, "SELECT generation FROM message WHERE role = 'assistant' AND conversation_id IN "
        "(SELECT result_conversation_id FROM item WHERE experiment_id = ?)", experiment_id))
    (judge,), = rows(store, "SELECT sum(cost_usd) FROM evaluation")
    assert progress.spent_usd == pytest.approx(target + judge)
    print(f"\nmixed-cost case: cap ${cap}, spent ${progress.spent_usd:.6f} ({progress.spent_usd / cap:.2f}x), "
          f"dearest reservation ${progress.max_reserved_usd:.6f}, {done['completed']} of 160 items completed")


def test_a_reservation_bounds_the_item_it_prices(store, fake_llm, tmp_path) -> None:
    """Each item's reservation is at least what its calls then cost, and counts its own prompt."""
    ids = import_files(store, [str(mixed_cost_file(tmp_path, cheap=3, dear=2, dear_words=3000))]).ids
    evaluator = ExperimentSpec(name="x", model="m", conversation_ids=["c"], evaluator_model="openai/gpt-4o").evaluator()
    assert evaluator is not None
    plan = ItemPlan("openai/gpt-4o-mini", False, None, None, evaluator)
    with store.read() as session:
        conversations = [load_conversation(session, i)["messages"] for i in ids]
    bounds = [item_bound(messages, True, plan) for messages in conversations]
    # a 3000-word prompt reserves its own tokens: at least 3000 more in, to the target once and the evaluator twice
    extra = 0.95 * (price("openai/gpt-4o-mini", 3000, 0) + price("openai/gpt-4o", 2 * 3000, 0))  # type: ignore[operator]
    assert bounds[3] - bounds[0] > extra and bounds[3] == pytest.approx(bounds[4], rel=0.01)
    assert output_bound("openai/gpt-4o-mini") == 16384 and output_bound("openai/no-such-model") == FALLBACK_OUTPUT_BOUND
    replay_only = ItemPlan("openai/gpt-4o-mini", False, None, None, None)
    assert item_bound(conversations[0], True, replay_only) > price("openai/gpt-4o-mini", 0, 16384)  # type: ignore[operator]
    pass_through = ItemPlan("openai/gpt-4o-mini", True, None, None, None)
    assert item_bound(conversations[0], True, pass_through) == 0.0  # a copied reply costs nothing
    unpriced = ItemPlan("openai/local-thing", False, None, None, None)
    assert item_bound(conversations[0], True, unpriced) == 0.0  # its calls count as $0 under --max-cost-unpriced-ok


def test_reservations_admit_while_spent_plus_reserved_is_below_the_cap() -> None:
    budget = Budget(cap=1.0)
    assert budget.try_start(0.6) is True  # nothing spent or reserved: it starts
    assert budget.try_start(0.6) is True  # 0.6 < 1.0: it starts, and may pass the cap by its own 0.6 at most
    assert budget.try_start(0.1) is None  # 1.2 reserved: wait for an item under way to end
    budget.settle(0.6, 0.2)  # it cost less than reserved: the difference is free again
    assert budget.try_start(0.1) is True  # 0.2 spent + 0.6 + ... < 1.0
    budget.settle(0.6, 0.5)
    budget.settle(0.1, 0.1)
    assert (budget.in_flight, budget.reserved) == (0, 0.0) and budget.spent == pytest.approx(0.8)
    assert budget.try_start(5.0) is True  # below the cap with nothing under way: even a dear item starts
    budget.settle(5.0, 0.3)
    assert budget.try_start(0.01) is False and budget.reached  # $1.1 spent: nothing starts again
    assert budget.try_start(0.0) is False
    assert budget.dearest == 5.0


def test_a_waiting_item_starts_when_one_under_way_settles() -> None:
    async def scenario() -> list[str]:
        budget, order = Budget(cap=1.0), []
        assert budget.try_start(1.2)  # a dear item under way: 1.2 reserved

        async def wait_for_room() -> None:
            order.append("waiting")
            order.append(f"started={await budget.start(0.5)}")

        async with anyio.create_task_group() as group:
            group.start_soon(wait_for_room)
            await anyio.sleep(0.01)
            order.append("settle")
            budget.settle(1.2, 0.3)
        return order

    assert anyio.run(scenario) == ["waiting", "settle", "started=True"]


def test_a_waiting_item_gives_up_when_the_spend_reaches_the_cap() -> None:
    async def scenario() -> bool:
        budget = Budget(cap=1.0)
        assert budget.try_start(1.2)  # a dear item under way: 1.2 reserved
        result = []

        async def wait_for_room() -> None:
            result.append(await budget.start(0.5))

        async with anyio.create_task_group() as group:
            group.start_soon(wait_for_room)
            await anyio.sleep(0.01)
            budget.settle(1.2, 1.0)
        return result[0]

    assert anyio.run(scenario) is False
