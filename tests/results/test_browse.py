"""The web UI's reads (results/browse.py): items filtered in SQL by status and label, conversation search."""

import pytest
from factories import build_finished, import_fixture

from experiment_runner.errors import BadInputError, NotFoundError
from experiment_runner.results.browse import conversation_detail, experiment_entries, filtered_item_page, search_conversations


def sources(page) -> list[str]:
    return [item["source_conversation"]["id"] for _, item in page.items]


def test_item_filters_pick_items_by_status_evaluation_and_label(store) -> None:
    experiment_id = build_finished(store)
    everything = filtered_item_page(store, experiment_id)
    assert everything.matched == 6 and [p for p, _ in everything.items] == [0, 1, 2, 3, 4, 5]
    rag_failed, rag_ok = sources(everything)[4:]
    assert sources(filtered_item_page(store, experiment_id, show="failed")) == [rag_failed]
    assert sources(filtered_item_page(store, experiment_id, show="evaluation_failed")) == ["hw-reasoning-math"]
    assert sources(filtered_item_page(store, experiment_id, show="with_issues")) == ["hw-weather-tools", "hw-booking-args", "hw-refusal"]
    assert sources(filtered_item_page(store, experiment_id, show="issue_free")) == [rag_ok]
    refusals = filtered_item_page(store, experiment_id, label="Incorrect Refusal")
    assert sources(refusals) == ["hw-refusal"] and refusals.matched == 1
    assert sources(filtered_item_page(store, experiment_id, show="failed", label="Fabrication")) == []
    # the evaluations of the page's items come with them, keyed by the reply's message id
    _, refusal = refusals.items[0]
    result = refusal["result_conversation"]
    assert result is not None
    reply_id = result["messages"][-1]["id"]
    assert [a["label"] for a in refusals.evaluations[reply_id]["annotations"]] == ["Incorrect Refusal"]


def test_item_pages_continue_after_the_last_position(store) -> None:
    experiment_id = build_finished(store)
    first = filtered_item_page(store, experiment_id, limit=4)
    assert len(first.items) == 4 and first.next_after == 3 and first.matched == 6
    rest = filtered_item_page(store, experiment_id, after=first.next_after, limit=4)
    assert [p for p, _ in rest.items] == [4, 5] and rest.next_after is None


def test_unknown_filter_and_experiment_are_errors(store) -> None:
    experiment_id = build_finished(store)
    with pytest.raises(BadInputError, match="unknown item filter 'broken'"):
        filtered_item_page(store, experiment_id, show="broken")
    with pytest.raises(NotFoundError):
        filtered_item_page(store, "nope")


def test_search_finds_words_in_messages_and_ids_taking_wildcards_literally(store) -> None:
    import_fixture(store)
    total = search_conversations(store).total
    assert total == 40
    found = search_conversations(store, "ragtruth-15175")
    assert [r.id for r in found.rows] == ["ragtruth-15175"]
    assert search_conversations(store, "CONIFERS").total >= 1  # case-insensitive, in message text
    assert 0 < search_conversations(store, "%").total < 40  # a literal percent sign, not "anything"
    assert search_conversations(store, "_").total < 40
    page = search_conversations(store, limit=15, offset=30)
    assert len(page.rows) == 10 and page.total == 40


def test_entries_and_conversation_detail(store) -> None:
    experiment_id = build_finished(store)
    [entry] = experiment_entries(store)
    assert entry.experiment["id"] == experiment_id and entry.evaluator_model == "judge-model"
    assert experiment_entries(store, ["missing", experiment_id])[0].experiment["id"] == experiment_id
    conversation, used = conversation_detail(store, "hw-refusal")
    assert conversation["id"] == "hw-refusal" and [u["id"] for u in used] == [experiment_id]
    with pytest.raises(NotFoundError):
        conversation_detail(store, "nope")
