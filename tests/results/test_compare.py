"""Comparing experiments (issue 8): known deltas on two hand-built experiments, the CLI `compare`."""

import json
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from factories import NATIVE, RAGTRUTH, SpanSpec, finish_experiment, import_fixture, new_experiment

from experiment_runner.errors import NotFoundError
from experiment_runner.report.html import item_labels
from experiment_runner.results.compare import changed_items, compare_experiments, compare_summaries
from experiment_runner.results.export import export_document

WEATHER, BOOKING, MATH, REFUSAL = "hw-weather-tools", "hw-booking-args", "hw-reasoning-math", "hw-refusal"


@pytest.fixture
def pair(store) -> tuple[str, str]:
    """A: 4 evaluated replies, 4 issues in 3 of them. B: 3 of the same and a failed RAGTruth item; 3 issues in 2."""
    import_fixture(store, NATIVE)
    rag = import_fixture(store, RAGTRUTH)[0]
    a = new_experiment(store, [WEATHER, BOOKING, MATH, REFUSAL], name="A")
    finish_experiment(store, a, spans={
        WEATHER: [SpanSpec("Fabrication", 16, 19)],
        BOOKING: [SpanSpec("Fabrication", 0, 1, part=1, tool_name="book_table", parameter_name="party_size"),
                  SpanSpec("Fabrication", 0, 15)],
        REFUSAL: [SpanSpec("Incorrect Refusal", 0, 10)],
    })
    b = new_experiment(store, [WEATHER, BOOKING, MATH, rag], name="B")
    finish_experiment(store, b, failed={rag: "model call failed: HTTP 500"}, spans={
        BOOKING: [SpanSpec("Fabrication", 0, 1, part=1, tool_name="book_table", parameter_name="party_size")],
        MATH: [SpanSpec("Reasoning Error", 14, 19, part=1), SpanSpec("Reasoning Error", 0, 5, part=0)],
    })
    return a, b


def by(rows: Sequence[Mapping[str, Any]], key: str) -> dict:
    return {row[key]: (row["a"], row["b"], row["delta"]) for row in rows}


def test_known_deltas(store, pair) -> None:
    a, b = pair
    result = compare_experiments(store, a, b)
    assert (result["a"]["id"], result["a"]["name"], result["b"]["name"]) == (a, "A", "B")
    assert result["conversations"] == {"shared": 3, "only_a": 1, "only_b": 1, "only_a_ids": ["hw-refusal"], "only_b_ids": ["ragtruth-15175"]}
    metrics = by(result["metrics"], "metric")
    assert metrics["total_items_count"] == (4, 4, 0)
    assert metrics["completed_items_count"] == (4, 3, -1)
    assert metrics["evaluations_received"] == (4, 3, -1)
    assert metrics["total_issues"] == (4, 3, -1)
    assert metrics["issue_free_message_count"] == (1, 1, 0)
    issue_rate = metrics["issue_rate"]
    assert issue_rate[:2] == (0.75, pytest.approx(2 / 3)) and issue_rate[2] == pytest.approx(2 / 3 - 0.75)
    assert metrics["total_input_tokens"] == (238, 238, 0)  # the refusal has no generation data
    assert "issue_labels" not in metrics and "parameter_issues" not in metrics
    assert [row["label"] for row in result["labels"]] == ["Fabrication", "Incorrect Refusal", "Reasoning Error"]
    assert by(result["labels"], "label") == {
        "Fabrication": (3, 1, -2),
        "Incorrect Refusal": (1, 0, -1),
        "Reasoning Error": (0, 2, 2),
    }
    assert result["changed_items"] == [
        {"source_conversation_id": MATH, "a": 0, "b": 2, "delta": 2},
        {"source_conversation_id": BOOKING, "a": 2, "b": 1, "delta": -1},
        {"source_conversation_id": WEATHER, "a": 1, "b": 0, "delta": -1},
    ]


def test_the_report_counts_issues_from_the_export_the_same_way(store, pair) -> None:
    a, b = pair
    doc_a, doc_b = export_document(store, a), export_document(store, b)
    from_export = compare_summaries(doc_a["experiment"], doc_b["experiment"], item_labels(doc_a), item_labels(doc_b))
    assert from_export == compare_experiments(store, a, b)


def test_changed_items_keeps_the_top_ten_and_skips_unevaluated() -> None:
    a = {f"c{i:02d}": i for i in range(15)} | {"failed-in-b": 5, "failed-in-a": None, "same": 3}
    b = {f"c{i:02d}": 0 for i in range(15)} | {"failed-in-b": None, "failed-in-a": 9, "same": 3}
    rows = changed_items(a, b)
    assert [r["source_conversation_id"] for r in rows] == [f"c{i:02d}" for i in range(14, 4, -1)]
    assert rows[0] == {"source_conversation_id": "c14", "a": 14, "b": 0, "delta": -14}
    ties = changed_items({"y": 0, "x": 2, "z": 1}, {"y": 1, "x": 1, "z": 0})
    assert [r["source_conversation_id"] for r in ties] == ["x", "y", "z"]


def test_float_deltas_are_rounded() -> None:
    metrics: dict[str, object] = {"issue_labels": {}, "parameter_issues": {}}
    doc = {"total_items_count": 1, "completed_items_count": 1, "evaluations_received": 1}
    from experiment_runner.results.vocabulary import NUMERIC_METRICS

    a = {**doc, "metrics": {**metrics, **dict.fromkeys(NUMERIC_METRICS, 0.1)}}
    b = {**doc, "metrics": {**metrics, **dict.fromkeys(NUMERIC_METRICS, 0.3)}}
    deltas = {row["metric"]: row["delta"] for row in compare_summaries(a, b, {}, {})["metrics"]}
    assert deltas["issue_rate"] == 0.2 and deltas["total_items_count"] == 0


def test_unknown_ids_are_not_found(store, pair) -> None:
    a, _ = pair
    for ids in ((a, "nope"), ("nope", a)):
        with pytest.raises(NotFoundError, match="nope"):
            compare_experiments(store, *ids)


def test_cli_compare_table_and_json(run_cli, store, pair) -> None:
    a, b = pair
    result = run_cli("compare", a, b)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.startswith(f"A  {a}  A  (openai/target)\nB  {b}  B")
    assert "Source conversations: 3 in both, 1 only in A, 1 only in B" in out
    assert "metric" in out and "delta" in out
    lines = out.splitlines()
    assert next(line for line in lines if line.startswith("Issue rate (%)")).split()[-3:] == ["75.0", "66.7", "-8.3"]
    assert next(line for line in lines if line.startswith("Reasoning Error")).split()[-3:] == ["0", "2", "+2"]
    assert next(line for line in lines if line.startswith(MATH)).split() == [MATH, "0", "2", "+2"]
    as_json = run_cli("compare", a, b, "--json")
    assert json.loads(as_json.stdout) == compare_experiments(store, a, b)


def test_cli_compare_unknown_id_exits_2(run_cli, store, pair) -> None:
    result = run_cli("compare", pair[0], "missing-id")
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: no experiment with id 'missing-id'")
