"""The export: schema, streamed text, metrics from stored rows, determinism, round trip, atomic files."""

import io
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import jsonschema
import pytest
from factories import RAGTRUTH, SpanSpec, build_finished, finish_experiment, import_fixture, new_experiment

from experiment_runner.engine.experiments import create_reevaluation
from experiment_runner.engine.spec import ReevaluationSpec
from experiment_runner.errors import NotFoundError
from experiment_runner.ingest.importing import import_files
from experiment_runner.results.documents import ExportItem
from experiment_runner.results.export import export_chunks, export_document, item_facts, load_export_schema, write_export
from experiment_runner.results.metrics import compute_metrics
from experiment_runner.store import open_store


def validate(document: Mapping[str, Any]) -> None:
    schema = load_export_schema()
    jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker()).validate(document)


def test_export_validates_and_streams_the_same_text_as_json_dumps(store) -> None:
    experiment_id = build_finished(store)
    text = "".join(export_chunks(store, experiment_id))
    document = json.loads(text)
    validate(document)
    assert text == json.dumps(document, ensure_ascii=False)
    assert "☔" in text  # not \u-escaped
    assert list(document) == ["experiment", "items", "evaluations"]
    # the seed's fields in the schema's order, then this runner's extra fields
    assert list(document["experiment"]) == [*load_export_schema()["properties"]["experiment"]["required"], "evaluator_cost_usd", "unpriced_items_count"]
    assert document["experiment"]["unpriced_items_count"] == 3  # of 5 completed replies, 2 carry a cost
    assert (
        list(document["experiment"]["metrics"])
        == load_export_schema()["properties"]["experiment"]["properties"]["metrics"]["required"]
    )


@pytest.mark.parametrize(("key", "value"), [("id", "not-a-uuid"), ("created_at", "2026-11-24 09:30")])
def test_format_checker_checks_uuids_and_times(store, key: Literal["id", "created_at"], value: str) -> None:
    document = export_document(store, build_finished(store))
    document["experiment"][key] = value
    with pytest.raises(jsonschema.ValidationError):
        validate(document)


def test_timestamps_are_utc_with_milliseconds(store) -> None:
    document = export_document(store, build_finished(store))
    stamp = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
    experiment = document["experiment"]
    stamps = [experiment["created_at"], experiment["completed_at"]]
    stamps += [item[key] for item in document["items"] for key in ("created_at", "updated_at")]
    assert all(s is not None and stamp.match(s) for s in stamps), stamps


def test_items_follow_position_with_conversations(store) -> None:
    document = export_document(store, build_finished(store))
    items = document["items"]
    assert [i["source_conversation"]["id"] for i in items] == document["experiment"]["conversation_ids"]
    failed = items[4]
    assert failed["status"] == "failed" and failed["error_message"] == "model call failed: HTTP 500"
    assert failed["result_conversation"] is None and failed["evaluations_received"] == 0
    booking = items[1]
    source, result = booking["source_conversation"], booking["result_conversation"]
    assert result is not None
    assert source["type"] == "source" and result["type"] == "result"
    assert [m["parts"] for m in result["messages"]] == [m["parts"] for m in source["messages"]]
    assert {m["id"] for m in result["messages"]}.isdisjoint(m["id"] for m in source["messages"])
    assert [m["sequence_number"] for m in result["messages"]] == [0, 1, 2]
    generation = result["messages"][-1]["generation"]
    assert generation is not None and generation["latency_ms"] == 1203.0
    assert [i["evaluations_received"] for i in items] == [1, 1, 0, 1, 0, 1]


def final_message_id(item: ExportItem) -> str:
    """The id of an item's final result message (the item has a result)."""
    result = item["result_conversation"]
    assert result is not None
    return result["messages"][-1]["id"]


def test_evaluations_are_keyed_by_the_final_message_id(store) -> None:
    document = export_document(store, build_finished(store))
    finals = {i["result_conversation"]["messages"][-1]["id"]: i for i in document["items"] if i["result_conversation"]}
    evaluations = document["evaluations"]
    assert set(evaluations) == set(finals)
    for message_id, evaluation in evaluations.items():
        assert evaluation["message_id"] == message_id
    booking = evaluations[final_message_id(document["items"][1])]
    assert [(a["label"], a["text"], a["tool_name"], a["parameter_name"]) for a in booking["annotations"]] == [
        ("Fabrication", "6", "book_table", "party_size"),
        ("Fabrication", "Booking it now.", None, None),
    ]
    math = evaluations[final_message_id(document["items"][2])]
    assert math["status"] == "failed" and math["annotations"] == [] and math["error_message"]


def test_metrics_match_the_stored_rows(store) -> None:
    experiment_id = build_finished(store)
    experiment = export_document(store, experiment_id)["experiment"]
    assert experiment["status_summary"] == {"pending": 0, "in_progress": 0, "completed": 5, "failed": 1, "total": 6}
    assert (experiment["total_items_count"], experiment["completed_items_count"]) == (6, 5)
    assert (experiment["evaluations_expected"], experiment["evaluations_received"]) == (6, 4)
    m = experiment["metrics"]
    # Evaluated: weather (1 issue), booking (2), refusal (1), ragtruth-14054 (0); math's evaluation failed.
    assert m["total_issues"] == 4 and m["issue_rate"] == 0.75 and m["issue_free_message_count"] == 1
    assert m["avg_issues_per_evaluated_message"] == 1.0
    assert m["issue_labels"] == {"Fabrication": 3, "Incorrect Refusal": 1}
    assert m["parameter_issues"] == {"book_table": {"party_size": 1}}
    # Completed: weather 120/31, booking 88/40, math 30/52, refusal and 14054 report no tokens.
    assert (m["total_input_tokens"], m["total_output_tokens"]) == (238, 123)
    assert m["avg_input_tokens"] == pytest.approx(238 / 5)
    assert m["total_generation_time_ms"] == 640.0 + 1203.0 + 2950.0 and m["max_response_latency_ms"] == 2950.0
    assert m["avg_response_latency_ms"] == pytest.approx(4793.0 / 3)
    assert m["cost_per_1k"] == pytest.approx((3.66e-05 + 0.00023) * 1000 / 5)
    with store.read() as session:
        facts = list(item_facts(session, experiment_id))
    assert len(facts) == 6 and compute_metrics(facts) == {k: m[k] for k in compute_metrics(facts)}


def test_two_exports_are_identical(store, tmp_path: Path) -> None:
    experiment_id = build_finished(store)
    write_export(store, experiment_id, tmp_path / "a.json")
    write_export(store, experiment_id, tmp_path / "b.json")
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()


def test_item_facts_pages_through_many_items(store, monkeypatch) -> None:
    monkeypatch.setattr("experiment_runner.results.export.FACTS_PAGE", 7)
    monkeypatch.setattr("experiment_runner.results.export.PAGE", 3)
    ids = import_fixture(store, RAGTRUTH)
    experiment_id = new_experiment(store, ids)
    finish_experiment(store, experiment_id, spans={i: [SpanSpec("Fabrication", 0, 4)] for i in ids[::2]})
    document = export_document(store, experiment_id)
    assert [i["source_conversation"]["id"] for i in document["items"]] == ids
    assert len(document["evaluations"]) == 40
    assert document["experiment"]["metrics"]["total_issues"] == 20
    assert document["experiment"]["metrics"]["issue_rate"] == 0.5


def test_round_trip_keeps_conversation_and_message_ids(store, tmp_path: Path) -> None:
    document = export_document(store, build_finished(store))
    sources = [item["source_conversation"] for item in document["items"]]
    path = tmp_path / "sources.jsonl"
    path.write_text("".join(json.dumps(c) + "\n" for c in sources))
    fresh = open_store(tmp_path / "fresh.db")
    try:
        ids = import_files(fresh, [str(path)]).ids
        assert ids == [c["id"] for c in sources]
        experiment_id = new_experiment(fresh, ids)
        again = [i["source_conversation"] for i in export_document(fresh, experiment_id)["items"]]
    finally:
        fresh.close()
    assert again == sources


def test_reevaluation_exports_the_shared_result_conversations(store) -> None:
    source_id = build_finished(store)
    reevaluation = create_reevaluation(
        store, source_id, ReevaluationSpec(name="again", evaluator_model="judge-2"), check_models=False
    )
    finish_experiment(store, reevaluation)
    original = export_document(store, source_id)
    document = export_document(store, reevaluation)
    validate(document)
    completed = [i for i in original["items"] if i["status"] == "completed"]
    assert [i["result_conversation"] for i in document["items"]] == [i["result_conversation"] for i in completed]
    assert document["experiment"]["evaluations_received"] == 5
    assert set(document["evaluations"]) == set(original["evaluations"])


def test_unknown_id_raises_before_any_chunk(store, tmp_path: Path) -> None:
    with pytest.raises(NotFoundError):
        export_chunks(store, "nope")
    with pytest.raises(NotFoundError):
        write_export(store, "nope", tmp_path / "out.json")
    assert not [p.name for p in tmp_path.iterdir() if "out.json" in p.name]


def test_write_export_to_a_stream(store) -> None:
    experiment_id = build_finished(store)
    out = io.StringIO()
    stats = write_export(store, experiment_id, out)
    assert json.loads(out.getvalue()) == export_document(store, experiment_id)
    assert stats.items == 6 and stats.bytes == len(out.getvalue().encode())


def test_an_interrupted_export_leaves_no_file(store, tmp_path: Path, monkeypatch) -> None:
    experiment_id = build_finished(store)
    target = tmp_path / "out.json"
    target.write_text("old")

    def broken(*args, **kwargs):
        yield {"id": "x"}
        raise RuntimeError("disk on fire")

    monkeypatch.setattr("experiment_runner.results.export._items", broken)
    with pytest.raises(RuntimeError):
        write_export(store, experiment_id, target)
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("store.db")) == ["out.json"]
