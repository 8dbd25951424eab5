"""The response cache (issue 25): a repeated request makes no model call, counted at the fake server."""

import json
from pathlib import Path

import anyio
import pytest
from conftest import FIXTURES, store_exists
from conftest import query as rows
from sqlalchemy import event

from experiment_runner.conversation import Generation, OpenAIMessage
from experiment_runner.engine import cache as cache_module
from experiment_runner.engine.cache import ResponseCache, cache_key
from experiment_runner.engine.llm import Completion
from experiment_runner.store import Store

SAMPLE = FIXTURES / "ragtruth-sample.conversations.jsonl"
TOOLS = FIXTURES / "handwritten.native.jsonl"
TARGET, JUDGE = "openai/gpt-4o-mini", "openai/gpt-4o"  # litellm knows their prices, so savings are in dollars
VERDICT = json.dumps({"annotations": [{"label": "Fabrication", "text": "Simulated reply", "explanation": "made up",
                                        "message_part_index": 0, "tool_name": None, "parameter_name": None}]})


def run(run_cli, fake_llm, *extra: str):
    result = run_cli("run", "--name", "t", "--model", TARGET, "--api-base", fake_llm.api_base, "--evaluator-model", JUDGE,
                     "--evaluator-api-base", fake_llm.api_base, *extra)
    assert result.exit_code == 0, result.stderr
    return result, result.stdout.strip().splitlines()[-1]


def replies(db: Path, experiment_id: str) -> list[tuple[str, dict]]:
    """(parts JSON, generation) of every item's final message, by position."""
    found = rows(db, """SELECT m.parts, m.generation FROM item i JOIN message m ON m.conversation_id = i.result_conversation_id
                        WHERE i.experiment_id = ? AND m.role = 'assistant' AND m.sequence_number =
                          (SELECT max(sequence_number) FROM message WHERE conversation_id = i.result_conversation_id)
                        ORDER BY i.position""", experiment_id)
    return [(r[0], json.loads(r[1])) for r in found]


def annotations(db: Path, experiment_id: str) -> list[tuple]:
    return rows(db, """SELECT i.position, a.label, a.text, a.message_part_index, a.start_offset, a.end_offset
                       FROM annotation a JOIN evaluation e ON e.id = a.evaluation_id JOIN item i ON i.id = e.item_id
                       WHERE i.experiment_id = ? ORDER BY i.position, a.position""", experiment_id)


def test_the_same_run_twice_calls_nothing_the_second_time_and_no_cache_calls_again(run_cli, fake_llm, db_path, tmp_path) -> None:
    run_cli("import", SAMPLE)
    fake_llm.configure(scripts=[{"model": "gpt-4o", "reply": {"content": VERDICT}}])
    first_result, first = run(run_cli, fake_llm, "--all")
    first_calls = fake_llm.request_count
    assert 0 < first_calls <= 80  # 40 replies and 40 evaluations; questions asked twice in the sample are asked once

    fake_llm.reset()
    second_result, second = run(run_cli, fake_llm, "--all")
    assert fake_llm.request_count == 0
    assert "80 call(s) came from the response cache (they cost $0" not in second_result.stderr  # the split is not in the summary
    assert "80 call(s) came from the response cache, saving $" in second_result.stderr
    before, after = replies(db_path, first), replies(db_path, second)
    assert [parts for parts, _ in after] == [parts for parts, _ in before]
    assert annotations(db_path, second) == annotations(db_path, first) and len(annotations(db_path, first)) == 40
    latencies: dict[str, set[float]] = {}  # a question asked twice at once is called twice; the later reply is kept
    for parts, old in before:
        latencies.setdefault(parts, set()).add(old["latency_ms"])
    for (parts, old), (_, new) in zip(before, after, strict=True):
        assert new["cache_hit"] is True and new["cost_usd"] == 0.0
        assert (new["input_tokens"], new["output_tokens"]) == (old["input_tokens"], old["output_tokens"])
        assert new["latency_ms"] in latencies[parts]
        paid = old["cost_saved_usd"] if old.get("cache_hit") else old["cost_usd"]  # a repeat in the first run was a hit already
        assert new["cost_saved_usd"] == paid > 0
    evaluations = rows(db_path, """SELECT e.cached_calls, e.cost_usd, e.cost_saved_usd FROM evaluation e JOIN item i ON i.id = e.item_id
                                   WHERE i.experiment_id = ?""", second)
    assert all(calls == 1 and cost == 0 and saved > 0 for calls, cost, saved in evaluations)

    shown = run_cli("show", second).stdout
    assert "Cache: 80 call(s) came from the response cache (40 target, 40 evaluator), saving $" in shown
    repeated = 80 - first_calls  # the first run asked a repeated question once and answered the repeat from the cache
    assert f"Cache: {repeated} call(s) came from the response cache" in run_cli("show", first).stdout

    page = tmp_path / "report.html"
    assert run_cli("report", second, "-o", page).exit_code == 0
    assert "From the response cache</td><td class=\"n\">80 calls (40 target, 40 evaluator)" in page.read_text()

    stamps = rows(db_path, "SELECT max(created_at) FROM response_cache")[0][0]
    fake_llm.reset()
    third_result, _ = run(run_cli, fake_llm, "--all", "--no-cache")
    assert fake_llm.request_count == 80  # every item's two calls, even for repeated questions
    assert "from the response cache" not in third_result.stderr
    assert rows(db_path, "SELECT min(created_at) FROM response_cache")[0][0] > stamps  # every entry refreshed


def test_cut_off_and_failed_calls_are_never_cached(run_cli, fake_llm, db_path) -> None:
    run_cli("import", TOOLS)
    fake_llm.configure(scripts=[
        {"match": "train leaves", "reply": {"content": "It arrives at", "finish_reason": "length"}},
        {"match": "Lisbon", "reply": {"status": 400}},
    ])
    result = run_cli("run", "--name", "t", "--model", "openai/t", "--api-base", fake_llm.api_base, "--all")
    assert result.exit_code == 0, result.stderr
    assert rows(db_path, "SELECT count(*) FROM response_cache")[0][0] == 2  # 4 conversations: 1 cut off, 1 failed
    fake_llm.reset()
    again = run_cli("run", "--name", "t", "--model", "openai/t", "--api-base", fake_llm.api_base, "--all")
    asked = [json.dumps(b["messages"]) for b in fake_llm.requests()]
    assert len(asked) == 2 and any("train leaves" in a for a in asked) and any("Lisbon" in a for a in asked)
    assert "2 call(s) came from the response cache" in again.stderr


def test_an_unusable_evaluator_reply_is_asked_again_and_not_kept(run_cli, fake_llm, db_path) -> None:
    run_cli("import", TOOLS)
    fake_llm.configure(scripts=[{"model": "judge", "reply": {"content": "I cannot answer in JSON."}}])
    args = ("run", "--name", "t", "--model", "openai/t", "--api-base", fake_llm.api_base, "--evaluator-model", "openai/judge",
            "--evaluator-api-base", fake_llm.api_base, "--conversation", "hw-reasoning-math")
    assert run_cli(*args).exit_code == 0
    judged = [b for b in fake_llm.requests() if b["model"] == "judge"]
    assert len(judged) == 2 and judged[0] == judged[1]  # the second ask is a real call, not the first reply read back
    assert rows(db_path, "SELECT count(*) FROM response_cache WHERE model = 'openai/judge'")[0][0] == 0
    fake_llm.reset()
    assert run_cli(*args).exit_code == 0
    assert [b["model"] for b in fake_llm.requests()] == ["judge", "judge"]  # the target's reply came from the cache


def test_dry_run_counts_cached_calls_at_zero(run_cli, fake_llm) -> None:
    run_cli("import", SAMPLE)
    _, first = run(run_cli, fake_llm, "--all")
    fake_llm.reset()
    result = run_cli("run", "--name", "t", "--model", TARGET, "--api-base", fake_llm.api_base, "--evaluator-model", JUDGE,
                     "--evaluator-api-base", fake_llm.api_base, "--all", "--dry-run", "--json")
    estimate = json.loads(result.stdout)
    assert estimate["cached_calls"] == 80 and estimate["estimated_cost_usd"] == 0 and estimate["estimated_input_tokens"] == 0
    fresh = json.loads(run_cli("run", "--name", "t", "--model", TARGET, "--api-base", fake_llm.api_base, "--evaluator-model", JUDGE,
                               "--evaluator-api-base", fake_llm.api_base, "--all", "--dry-run", "--json", "--no-cache").stdout)
    assert fresh["cached_calls"] == 0 and fresh["estimated_cost_usd"] > 0
    text = run_cli("reevaluate", first, "--evaluator-model", JUDGE, "--evaluator-api-base", fake_llm.api_base, "--dry-run").stdout
    assert "40 of these call(s) will come from the response cache" in text
    assert fake_llm.request_count == 0


def test_reevaluate_and_resume_use_the_cache(run_cli, fake_llm, db_path) -> None:
    run_cli("import", TOOLS)
    _, first = run(run_cli, fake_llm, "--all")
    judge_args = ("--evaluator-model", "openai/other-judge", "--evaluator-api-base", fake_llm.api_base)
    once = run_cli("reevaluate", first, *judge_args)
    assert once.exit_code == 0 and fake_llm.request_count > 0
    fake_llm.reset()
    twice = run_cli("reevaluate", first, *judge_args)
    assert twice.exit_code == 0 and fake_llm.request_count == 0 and "came from the response cache" in twice.stderr
    fresh = run_cli("reevaluate", first, *judge_args, "--no-cache")
    assert fresh.exit_code == 0 and fake_llm.request_count == 4


def test_cache_stats_and_clear(run_cli, fake_llm, db_path) -> None:
    missing = run_cli("cache", "stats")  # no store yet: it reads one, so it creates none
    assert missing.exit_code == 2 and "no store at" in missing.stderr and not store_exists(db_path)
    run_cli("import", TOOLS)
    assert run_cli("cache", "stats").stdout.strip() == "The response cache is empty."
    run(run_cli, fake_llm, "--all")
    run(run_cli, fake_llm, "--all")
    stats = json.loads(run_cli("cache", "stats", "--json").stdout)
    assert stats["entries"] == 8 and stats["hits"] == 8 and stats["saved_usd"] > 0
    assert {m["model"] for m in stats["per_model"]} == {TARGET, JUDGE}
    assert "8 cached replies, 8 hits" in run_cli("cache", "stats").stdout
    assert run_cli("cache", "clear", "--older-than", "1").stdout.strip() == "Removed 0 cached replies stored more than 1 day(s) ago."
    rows_before = rows(db_path, "SELECT count(*) FROM response_cache")[0][0]
    assert rows_before == 8
    assert run_cli("cache", "clear").stdout.strip() == "Removed 8 cached replies."
    bad = run_cli("cache", "clear", "--older-than", "-1")
    assert bad.exit_code == 2
    fake_llm.reset()
    run(run_cli, fake_llm, "--all")
    assert fake_llm.request_count == 8


def test_the_key_covers_what_changes_the_reply_and_nothing_else() -> None:
    messages: list[OpenAIMessage] = [{"role": "user", "content": "hi"}]
    base = cache_key("openai/m", "http://h/v1", messages, {"max_tokens": 10})
    assert base == cache_key("openai/m", "http://h/v1/", messages, {"max_tokens": 10, "timeout": 5, "api_key": "sk-x"})
    for other in (
        cache_key("openai/n", "http://h/v1", messages, {"max_tokens": 10}),
        cache_key("openai/m", "http://other/v1", messages, {"max_tokens": 10}),
        cache_key("openai/m", "http://h/v1", [{"role": "user", "content": "hi!"}], {"max_tokens": 10}),
        cache_key("openai/m", "http://h/v1", messages, {"max_tokens": 11}),
        cache_key("openai/m", "http://h/v1", messages, {"max_tokens": 10, "tools": [{"type": "function"}]}),
        cache_key("openai/m", "http://h/v1", messages, {"max_tokens": 10, "response_format": {"type": "json_object"}}),
    ):
        assert other != base


def _statements(store: Store) -> list[str]:
    """Every SQL statement the store runs from now on (its engine's own event), to count the cache's reads."""
    seen: list[str] = []
    for engine in (store.reader, store.writer):
        event.listen(engine, "before_cursor_execute", lambda _c, _cur, statement, *_: seen.append(statement))
    return seen


def _reply(text: str) -> Completion:
    generation: Generation = {"model": "m", "provider": "openai", "input_tokens": 3, "output_tokens": 2, "cost_usd": 0.001,
                              "latency_ms": 12.0, "finish_reasons": ["stop"]}
    return Completion([{"type": "text", "content": text}], generation, 1, 12.0)


def _store_writes(store: Store, cache: ResponseCache) -> None:
    writes = cache.take_writes()
    assert writes is not None
    with store.write() as session:
        writes.apply(session.connection())


def test_a_model_without_cached_replies_is_asked_about_once_not_per_call(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cache_module, "RECHECK_SECONDS", 3600.0)  # no recheck within the test, however slow the machine
    messages: list[OpenAIMessage] = [{"role": "user", "content": "hi"}]
    earlier = ResponseCache(store)
    known = earlier.key("openai/a", None, messages, {})
    earlier.remember(known, _reply("from before"), "openai/a", None)
    _store_writes(store, earlier)

    async def lookups(cache: ResponseCache) -> list[Completion | None]:
        found: list[Completion | None] = []

        async def one(n: int) -> None:
            found.append(await cache.lookup(cache.key("openai/b", None, [{"role": "user", "content": str(n)}], {}), "openai/b"))

        async with anyio.create_task_group() as tg:  # the first calls of a run come together
            for n in range(5):
                tg.start_soon(one, n)
        found.append(await cache.lookup(known, "openai/a"))
        return found

    statements = _statements(store)
    found = anyio.run(lookups, ResponseCache(store))
    assert found[:5] == [None] * 5 and found[5] is not None and found[5].text == "from before"
    asked = [s for s in statements if "response_cache" in s]
    assert len([s for s in asked if "WHERE model" in s]) == 2  # once for openai/b, once for openai/a
    assert len([s for s in asked if "WHERE key" in s]) == 1  # only openai/a's call read its entry


def test_a_reply_this_run_stored_is_found_again_for_a_model_that_had_none(store: Store) -> None:
    cache = ResponseCache(store)
    key = cache.key("openai/b", None, [{"role": "user", "content": "twice"}], {})

    async def first_then_again() -> tuple[Completion | None, Completion | None]:
        before = await cache.lookup(key, "openai/b")
        cache.remember(key, _reply("asked once"), "openai/b", None)
        _store_writes(store, cache)  # committed: no longer among the run's unwritten replies
        return before, await cache.lookup(key, "openai/b")

    before, again = anyio.run(first_then_again)
    assert before is None and again is not None and again.text == "asked once" and again.generation["cache_hit"] is True


def test_a_reply_another_worker_stores_serves_once_the_answer_no_reply_is_rechecked(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    key = cache_key("openai/b", None, [{"role": "user", "content": "asked in two processes"}], {})
    mine, other = ResponseCache(store), ResponseCache(store)  # two worker processes of one run

    async def lookup() -> Completion | None:
        return await mine.lookup(key, "openai/b")

    monkeypatch.setattr(cache_module, "RECHECK_SECONDS", 3600.0)
    assert anyio.run(lookup) is None  # the store holds no reply of openai/b (so far)
    other.remember(key, _reply("the other worker's"), "openai/b", None)
    _store_writes(store, other)
    assert anyio.run(lookup) is None  # not asked again yet: no query per call
    monkeypatch.setattr(cache_module, "RECHECK_SECONDS", 0.0)  # the answer is now old enough to be asked again
    found = anyio.run(lookup)
    assert found is not None and found.text == "the other worker's"
