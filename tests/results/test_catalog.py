"""Listing experiments and items page by page, the `show` summary, and deleting experiments."""

import base64

import pytest
from conftest import dump
from factories import (
    NATIVE,
    RAGTRUTH,
    SpanSpec,
    build_finished,
    finish_experiment,
    import_fixture,
    new_experiment,
    table_counts,
)
from sqlalchemy import event, text

from experiment_runner.engine.experiments import create_reevaluation
from experiment_runner.engine.spec import ReevaluationSpec
from experiment_runner.errors import BadInputError, NotFoundError
from experiment_runner.results.catalog import (
    delete_experiment,
    encode_cursor,
    experiment_summary,
    list_experiments,
    list_items,
    list_overview,
)
from experiment_runner.results.export import export_document, target_cost


@pytest.fixture
def conversation_ids(store) -> list[str]:
    return import_fixture(store, RAGTRUTH)


def test_walk_sees_every_experiment_once_newest_first_while_new_ones_arrive(store, conversation_ids) -> None:
    existing = [new_experiment(store, conversation_ids[i : i + 2], name=f"e{i}") for i in range(7)]
    seen, cursor, pages = [], None, 0
    while True:
        page = list_experiments(store, limit=2, cursor=cursor)
        assert page["query"] == {"limit": 2, "cursor": cursor}
        seen += [e["id"] for e in page["items"]]
        pages += 1
        new_experiment(store, conversation_ids[:1], name=f"late{pages}")  # newer than everything walked
        if not page["has_more"]:
            assert page["next_page_cursor"] is None
            break
        cursor = page["next_page_cursor"]
    assert seen == existing[::-1]
    assert pages == 4
    first = list_experiments(store, limit=100)
    assert [e["name"] for e in first["items"][:4]] == ["late4", "late3", "late2", "late1"]
    assert first["has_more"] is False and len(first["items"]) == 11


def test_list_overview_shows_what_the_export_objects_say(store, conversation_ids) -> None:
    finished = build_finished(store)  # a failed item, a failed evaluation, issue-free replies, 2 of 5 replies priced
    partly = new_experiment(store, conversation_ids[:4], name="partly")
    finish_experiment(store, partly, unfinished=[conversation_ids[3]], failed={conversation_ids[2]: "HTTP 500"},
                      spans={conversation_ids[0]: [SpanSpec("Fabrication", 0, 4)]})
    pending = new_experiment(store, conversation_ids[:2], name="pending", evaluator=None)
    full, overview = list_experiments(store, limit=100), list_overview(store, limit=100)
    assert [line.id for line in overview["items"]] == [pending, partly, finished]
    assert {k: v for k, v in overview.items() if k != "items"} == {k: v for k, v in full.items() if k != "items"}
    for e, line in zip(full["items"], overview["items"], strict=True):
        assert (line.name, line.model, line.created_at, line.status_summary) == (e["name"], e["model"], e["created_at"], e["status_summary"])
        assert (line.evaluations_received, line.issue_rate) == (e["evaluations_received"], e["metrics"]["issue_rate"])
        assert line.cost == target_cost(e)
    finished_line = overview["items"][2]
    assert finished_line.cost.known == "partial" and finished_line.issue_rate == 0.75  # 3 of 4 evaluated have issues
    assert overview["items"][1].issue_rate == 0.5 and overview["items"][0].cost.known == "known"
    one = list_overview(store, limit=1)
    assert one["next_page_cursor"] == list_experiments(store, limit=1)["next_page_cursor"]


def test_list_overview_reads_a_page_in_a_fixed_number_of_statements(store, conversation_ids) -> None:
    for i in range(6):
        finish_experiment(store, new_experiment(store, conversation_ids[i : i + 3], name=f"e{i}"))
    statements: list[str] = []
    event.listen(store.reader, "before_cursor_execute", lambda *args: statements.append(args[2]))
    list_overview(store, limit=2)
    few = len(statements)
    statements.clear()
    list_overview(store, limit=6)
    assert len(statements) == few  # the page and one aggregate query, however many experiments it shows
    statements.clear()
    list_experiments(store, limit=6)
    assert len(statements) > 6 * 3  # the full objects read every experiment's items, evaluations and annotations


def test_list_items_are_export_objects(store) -> None:
    experiment_id = build_finished(store)
    page = list_experiments(store, limit=1)
    assert page["items"] == [export_document(store, experiment_id)["experiment"]]
    assert page["has_more"] is False


def test_experiments_with_the_same_created_at_are_ordered_by_id(store, conversation_ids) -> None:
    ids = [new_experiment(store, conversation_ids[:1]) for _ in range(3)]
    with store.write() as session:
        session.connection().execute(text("UPDATE experiment SET created_at = '2026-01-01T00:00:00.000000Z'"))
    walked, cursor = [], None
    while True:
        page = list_experiments(store, limit=1, cursor=cursor)
        walked += [e["id"] for e in page["items"]]
        if not page["has_more"]:
            break
        cursor = page["next_page_cursor"]
    assert walked == sorted(ids, reverse=True)


@pytest.mark.parametrize("limit", [0, 101, -1, True])
def test_limit_out_of_range_is_bad_input(store, limit) -> None:
    with pytest.raises(BadInputError, match="limit must be between 1 and 100") as info:
        list_experiments(store, limit=limit)
    assert info.value.loc == ("query", "limit")


@pytest.mark.parametrize(
    "cursor",
    ["garbage!!", "", base64.urlsafe_b64encode(b"[1]").decode(), encode_cursor(["a"]), encode_cursor({"a": 1})],  # type: ignore[arg-type]
)
def test_malformed_cursor_is_bad_input(store, cursor) -> None:
    with pytest.raises(BadInputError) as info:
        list_experiments(store, cursor=cursor)
    assert info.value.loc == ("query", "cursor")


def test_list_items_pages_by_position(store) -> None:
    experiment_id = build_finished(store)
    exported = export_document(store, experiment_id)["items"]
    walked, cursor = [], None
    while True:
        page = list_items(store, experiment_id, limit=4, cursor=cursor)
        walked += page["items"]
        if not page["has_more"]:
            break
        cursor = page["next_page_cursor"]
    assert walked == exported
    with pytest.raises(NotFoundError):
        list_items(store, "nope")
    with pytest.raises(BadInputError) as info:
        list_items(store, experiment_id, cursor=encode_cursor(["x", "y"]))
    assert info.value.loc == ("query", "cursor")


def test_summary_has_evaluator_settings_and_latest_errors(store) -> None:
    experiment_id = build_finished(store)
    summary = experiment_summary(store, experiment_id)
    assert summary["evaluator_model"] == "judge-model"
    assert summary["labels"] == ["Fabrication", "Context Misattribution", "Reasoning Error", "Incorrect Refusal"]
    assert summary["source_experiment_id"] is None
    assert [e["error_message"] for e in summary["recent_errors"]] == ["model call failed: HTTP 500"]
    assert summary["metrics"] == export_document(store, experiment_id)["experiment"]["metrics"]
    with pytest.raises(NotFoundError):
        experiment_summary(store, "nope")


def orphans(store) -> dict[str, int]:
    """Rows pointing at rows that do not exist."""
    queries = {
        "messages": "SELECT count(*) FROM message WHERE conversation_id NOT IN (SELECT id FROM conversation)",
        "items": "SELECT count(*) FROM item WHERE experiment_id NOT IN (SELECT id FROM experiment)",
        "evaluations": "SELECT count(*) FROM evaluation WHERE item_id NOT IN (SELECT id FROM item)"
        " OR message_id NOT IN (SELECT id FROM message)",
        "annotations": "SELECT count(*) FROM annotation WHERE evaluation_id NOT IN (SELECT id FROM evaluation)",
        "results": "SELECT count(*) FROM conversation WHERE type = 'result' AND id NOT IN"
        " (SELECT result_conversation_id FROM item WHERE result_conversation_id IS NOT NULL)",
    }
    with store.read() as session:
        conn = session.connection()
        return {name: conn.execute(text(sql)).scalar_one() for name, sql in queries.items()}


NO_ORPHANS = {"messages": 0, "items": 0, "evaluations": 0, "annotations": 0, "results": 0}


def test_delete_removes_everything_of_the_experiment_but_its_sources(store) -> None:
    before = table_counts(store)
    experiment_id = build_finished(store)
    other = new_experiment(store, import_fixture(store, NATIVE)[:1], name="other")
    finish_experiment(store, other, spans={"hw-weather-tools": [SpanSpec("Fabrication", 0, 3)]})
    kept = export_document(store, other)
    sources = table_counts(store)
    delete_experiment(store, experiment_id)
    after = table_counts(store)
    assert orphans(store) == NO_ORPHANS
    assert after["experiment"] == 1 and after["item"] == 1 and after["evaluation"] == 1 and after["annotation"] == 1
    # Left: the 44 imported conversations and other's single result (5 result conversations gone).
    assert after["conversation"] == sources["conversation"] - 5 == 44 + 1
    # Messages: the sources' 80 (RAGTruth) + 13 (hand-written), and other's 5-message result.
    assert after["message"] == sources["message"] - (5 + 3 + 2 + 3 + 2) == 80 + 13 + 5
    assert export_document(store, other) == kept
    assert before["experiment"] == 0
    with pytest.raises(NotFoundError):
        delete_experiment(store, experiment_id)


def test_delete_keeps_result_conversations_a_reevaluation_shares(store) -> None:
    source_id = build_finished(store)
    reevaluation = create_reevaluation(
        store, source_id, ReevaluationSpec(evaluator_model="judge-2"), check_models=False
    )
    finish_experiment(store, reevaluation, spans={"hw-refusal": [SpanSpec("Incorrect Refusal", 0, 9)]})
    shared = [i["result_conversation"] for i in export_document(store, reevaluation)["items"]]
    counts = table_counts(store)
    delete_experiment(store, source_id)
    assert orphans(store) == NO_ORPHANS
    document = export_document(store, reevaluation)
    assert [i["result_conversation"] for i in document["items"]] == shared
    assert document["experiment"]["metrics"]["total_issues"] == 1
    assert table_counts(store)["conversation"] == counts["conversation"]  # every result was shared
    assert None not in shared
    delete_experiment(store, reevaluation)
    after = table_counts(store)
    assert orphans(store) == NO_ORPHANS
    assert after == {
        "conversation": 44,
        "message": counts["message"] - sum(len(c["messages"]) for c in shared if c is not None),
        "experiment": 0,
        "item": 0,
        "evaluation": 0,
        "annotation": 0,
    }


def test_delete_is_one_transaction(store, db_path, monkeypatch) -> None:
    experiment_id = build_finished(store)
    before = dump(db_path)
    monkeypatch.setattr("experiment_runner.store.queries.experiments._DELETE_CONVERSATIONS", text("DELETE FROM no_such_table"))
    with pytest.raises(Exception, match="no_such_table"):
        delete_experiment(store, experiment_id)
    assert dump(db_path) == before
