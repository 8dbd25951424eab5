"""Unit tests on a real store: `workplan.plan_work` (what is left to do) and `writer.apply_events` (issue 14)."""

from typing import Any

from conftest import FIXTURES
from conftest import query as rows
from sqlalchemy import text

from experiment_runner.conversation import Message
from experiment_runner.engine import writer as w
from experiment_runner.engine.experiments import create_experiment, get_experiment
from experiment_runner.engine.spec import ExperimentSpec
from experiment_runner.engine.workplan import plan_work
from experiment_runner.evaluation.evaluator import EvaluationOutcome
from experiment_runner.ingest.importing import import_files
from experiment_runner.results.catalog import delete_experiment
from experiment_runner.store import Store
from experiment_runner.store.ids import new_id

TOOLS = FIXTURES / "handwritten.native.jsonl"


def _setup(store: Store, evaluator: bool = True) -> tuple[str, list[str]]:
    ids = import_files(store, [str(TOOLS)]).ids
    local = "http://127.0.0.1:9/v1"  # never called: these tests write the events themselves
    judge: dict[str, Any] = {"evaluator_model": "openai/judge", "evaluator_api_base": local} if evaluator else {}
    experiment_id = create_experiment(store, ExperimentSpec(name="t", model="openai/target", conversation_ids=ids, api_base=local, **judge))
    items = [r[0] for r in rows(store, "SELECT id FROM item WHERE experiment_id = ? ORDER BY position", experiment_id)]
    return experiment_id, items


def _reply(text: str = "hi") -> list[Message]:
    return [{"id": new_id(), "sequence_number": 0, "role": "user", "parts": [{"type": "text", "content": "q"}], "generation": None},
            {"id": new_id(), "sequence_number": 1, "role": "assistant", "parts": [{"type": "text", "content": text}], "generation": None}]


def _done() -> EvaluationOutcome:
    return EvaluationOutcome("completed", "judge")


def test_plan_work_picks_what_is_missing(store: Store) -> None:
    experiment_id, items = _setup(store)
    experiment = get_experiment(store, experiment_id)
    assert [(u.item_id, u.needs_replay) for u in plan_work(store, experiment, False)] == [(i, True) for i in items]
    replied, done, failed = _reply(), _reply(), _reply()
    w.apply_events(store, experiment_id, [
        w.Replayed(items[0], replied, None, finished=False),  # reply stored, evaluation missing
        w.Replayed(items[1], done, None, finished=False), w.Evaluated(items[1], done[-1]["id"], _done()),
        w.Replayed(items[2], failed, "not JSON", finished=True),  # a failed item keeps its reply
    ])
    units = {u.item_id: u for u in plan_work(store, experiment, False)}
    assert set(units) == {items[0], items[3]}
    assert not units[items[0]].needs_replay and units[items[3]].needs_replay
    result = rows(store, "SELECT result_conversation_id FROM item WHERE id = ?", items[0])[0][0]
    assert units[items[0]].conversation_id == result  # only evaluated: the stored result is read
    again = {u.item_id: u.needs_replay for u in plan_work(store, experiment, True)}
    assert again == {items[0]: False, items[2]: True, items[3]: True}  # --retry-failed replays the failed one


def test_apply_events_counts_and_replaces_a_result_in_the_same_transaction(store: Store) -> None:
    experiment_id, items = _setup(store)
    first, second = _reply("one"), _reply("two")
    counts = w.apply_events(store, experiment_id, [w.Started(items[0]), w.Replayed(items[0], first, "bad", finished=True),
                                                   w.Failed(items[1], "HTTP 400")])
    assert (counts.completed, counts.failed) == (0, 2)
    counts = w.apply_events(store, experiment_id, [w.Replayed(items[0], second, None, finished=False),
                                                   w.Evaluated(items[0], second[-1]["id"], _done())])
    assert (counts.completed, counts.failed, counts.evaluations_skipped) == (1, 0, 0)
    results = rows(store, "SELECT id, experiment_id FROM conversation WHERE type = 'result'")
    assert results == [(rows(store, "SELECT result_conversation_id FROM item WHERE id = ?", items[0])[0][0], experiment_id)]
    assert rows(store, "SELECT count(*) FROM message WHERE id = ?", first[-1]["id"]) == [(0,)]  # the old one is gone


def test_an_evaluation_of_another_message_is_skipped(store: Store) -> None:
    experiment_id, items = _setup(store)
    mine, other = _reply("mine"), _reply("other")
    w.apply_events(store, experiment_id, [w.Replayed(items[0], mine, None, finished=False),
                                          w.Replayed(items[1], other, None, finished=False)])
    counts = w.apply_events(store, experiment_id, [w.Evaluated(items[0], other[-1]["id"], _done()),  # crossed
                                                   w.Evaluated(items[1], other[0]["id"], _done()),  # not the final one
                                                   w.Evaluated(items[2], other[-1]["id"], _done())])  # no result at all
    assert (counts.completed, counts.evaluations_skipped) == (0, 3)
    assert rows(store, "SELECT count(*) FROM evaluation") == [(0,)]
    assert rows(store, "SELECT DISTINCT status FROM item WHERE id IN (?, ?)", items[0], items[1]) == [("in_progress",)]


def test_delete_removes_every_result_conversation_the_experiment_created(store: Store) -> None:
    experiment_id, items = _setup(store, evaluator=False)
    w.apply_events(store, experiment_id, [w.Replayed(items[0], _reply(), None, finished=True)])
    with store.write() as session:  # a result a racing runner of an older release left behind, linked by nothing
        session.connection().execute(text(
            "INSERT INTO conversation (id, type, content_hash, created_at, experiment_id)"
            " VALUES ('stray', 'result', 'h', '2026-01-01T00:00:00.000000Z', :e)"), {"e": experiment_id})
    delete_experiment(store, experiment_id)
    assert rows(store, "SELECT count(*) FROM conversation WHERE type = 'result'") == [(0,)]
    assert rows(store, "SELECT count(*) FROM conversation WHERE type = 'source'") == [(4,)]
