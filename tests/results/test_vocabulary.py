"""The metric vocabulary agrees with the export schema, and every consumer takes its names from it."""

from experiment_runner.results import vocabulary
from experiment_runner.results.compare import compare_summaries
from experiment_runner.results.export import load_export_schema


def _schema_metrics() -> dict[str, dict[str, object]]:
    metrics = load_export_schema()["properties"]["experiment"]["properties"]["metrics"]
    assert list(metrics["properties"]) == metrics["required"]
    properties: dict[str, dict[str, object]] = metrics["properties"]
    return properties


def test_metric_keys_are_the_schemas_in_its_order() -> None:
    assert list(vocabulary.METRIC_KEYS) == list(_schema_metrics())


def test_each_metrics_format_fits_its_schema_type() -> None:
    for key, prop in _schema_metrics().items():
        found = vocabulary.metric(key)
        if prop["type"] == "object":
            assert found.format == "counts" and not found.numeric, key
        elif prop["type"] == "integer":
            assert found.format == "int", key
        else:
            assert prop["type"] == "number" and found.numeric, key


def test_titles_and_labels_are_unique() -> None:
    every = (*vocabulary.COUNTS, *vocabulary.METRICS, *vocabulary.SHARES)
    assert len({m.key for m in every}) == len(every)
    assert len({m.title for m in every}) == len(every)
    labels = [m.label for m in every if m.label]
    assert len(set(labels)) == len(labels)


def test_an_unknown_key_reads_as_itself() -> None:
    found = vocabulary.metric("tool_call_rate")
    assert (found.title, found.format, found.label) == ("Tool call rate", "auto", "")
    assert not vocabulary.known("tool_call_rate") and vocabulary.known("issue_rate")


def test_compare_rows_are_the_counts_then_the_numeric_metrics() -> None:
    metrics: dict[str, object] = {key: ({} if key in ("issue_labels", "parameter_issues") else 0) for key in vocabulary.METRIC_KEYS}
    doc = {"id": "a", "name": "a", "model": "m", "pass_through": False, "total_items_count": 1,
           "completed_items_count": 1, "evaluations_received": 0, "unpriced_items_count": 0, "metrics": metrics}
    rows = compare_summaries(doc, doc, {}, {})["metrics"]
    assert [r["metric"] for r in rows] == [*vocabulary.COUNT_KEYS, *vocabulary.NUMERIC_METRICS]
    assert "issue_labels" not in vocabulary.NUMERIC_METRICS
