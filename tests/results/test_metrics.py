"""Tests for experiment_runner.results.metrics: hand-built items with answers worked out in comments."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from experiment_runner.results.export import load_export_schema
from experiment_runner.results.metrics import (
    AnnotationFacts,
    EvaluationFacts,
    ItemFacts,
    compute_metrics,
    status_summary,
)

EXPECTED_KEYS = load_export_schema()["properties"]["experiment"]["properties"]["metrics"]["required"]
"""The contract's metric keys, in the export schema's order (`compute_metrics` returns them so)."""


def gen(
    input_tokens: int | None = None,
    output_tokens: int | None = None,
    cost_usd: float | None = None,
    latency_ms: int | None = None,
) -> dict:
    """A generation metadata dict as stored on the final assistant message."""
    return {
        "model": "m",
        "provider": "p",
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cost_usd": cost_usd,
        "latency_ms": latency_ms,
        "finish_reasons": ["stop"],
    }


def ann(label: str, tool: str | None = None, param: str | None = None) -> AnnotationFacts:
    return AnnotationFacts(label=label, tool_name=tool, parameter_name=param)


def done(*annotations: AnnotationFacts) -> EvaluationFacts:
    return EvaluationFacts(status="completed", annotations=tuple(annotations))


def mixed_items() -> list[ItemFacts]:
    """A mixed experiment; the comments give each item's contribution."""
    return [
        # 1: completed, evaluated, 2 annotations (one names search.query).
        ItemFacts(
            "completed",
            gen(100, 50, 0.002, 1000),
            done(ann("Fabrication", "search", "query"), ann("Omission")),
        ),
        # 2: completed, evaluated, issue-free; output tokens and cost missing.
        ItemFacts("completed", gen(200, None, None, 3000), done()),
        # 3: completed, evaluation FAILED (its annotation must not count); no input tokens, no latency.
        ItemFacts(
            "completed",
            gen(None, 30, 0.004, None),
            EvaluationFacts("failed", (ann("Fabrication", "search", "query"),)),
        ),
        # 4: failed item: nothing at all.
        ItemFacts("failed"),
        # 5: pending item.
        ItemFacts("pending"),
        # 6: completed but no generation metadata; evaluated with 3 annotations.
        ItemFacts(
            "completed",
            None,
            done(
                ann("Fabrication", "search", "query"),
                ann("Fabrication", "search", "limit"),
                ann("Unsupported", "calc", None),  # names a tool but no parameter: not a parameter issue
            ),
        ),
        # 7: in progress with partial generation: ignored for tokens/latency/cost; pending evaluation ignored.
        ItemFacts(
            "in_progress",
            gen(999, 999, 9.0, 99999),
            EvaluationFacts("pending", (ann("Omission"),)),
        ),
    ]


def test_mixed_experiment() -> None:
    m = compute_metrics(mixed_items())
    # Evaluated messages (completed evaluations): items 1, 2, 6 -> 3; with issues: 1, 6 -> 2.
    # total_issues = 2 + 0 + 3 = 5; labels: Fabrication 1+2=3, Omission 1, Unsupported 1.
    assert m["total_issues"] == 5
    assert m["issue_labels"] == {"Fabrication": 3, "Omission": 1, "Unsupported": 1}
    assert m["issue_rate"] == pytest.approx(2 / 3)
    assert m["issue_free_message_count"] == 1
    assert m["avg_issues_per_evaluated_message"] == pytest.approx(5 / 3)
    # Completed items: 1, 2, 3, 6 -> 4. Input 100+200+0+0 = 300; output 50+0+30+0 = 80.
    assert m["total_input_tokens"] == 300
    assert m["total_output_tokens"] == 80
    assert m["avg_input_tokens"] == pytest.approx(75.0)
    assert m["avg_output_tokens"] == pytest.approx(20.0)
    # Latency reported by items 1 and 2 only: 1000 + 3000 = 4000, avg 2000, max 3000.
    assert m["total_generation_time_ms"] == 4000
    assert m["avg_response_latency_ms"] == pytest.approx(2000.0)
    assert m["max_response_latency_ms"] == 3000
    # Cost: (0.002 + 0 + 0.004 + 0) * 1000 / 4 completed = 1.5.
    assert m["cost_per_1k"] == pytest.approx(1.5)
    # search.query from items 1 and 6 (item 3's evaluation failed), search.limit from item 6.
    assert m["parameter_issues"] == {"search": {"limit": 1, "query": 2}}


def test_types_and_key_order() -> None:
    m = compute_metrics(mixed_items())
    assert list(m) == EXPECTED_KEYS
    for key in ("total_issues", "issue_free_message_count", "total_input_tokens", "total_output_tokens"):
        assert type(m[key]) is int, key
    for key in (
        "issue_rate",
        "avg_issues_per_evaluated_message",
        "avg_input_tokens",
        "avg_output_tokens",
        "avg_response_latency_ms",
        "cost_per_1k",
    ):
        assert type(m[key]) is float, key
    assert list(m["issue_labels"]) == ["Fabrication", "Omission", "Unsupported"]


def test_zero_items() -> None:
    m = compute_metrics([])
    assert m == {
        "total_issues": 0,
        "issue_labels": {},
        "issue_rate": 0.0,
        "issue_free_message_count": 0,
        "avg_issues_per_evaluated_message": 0.0,
        "total_input_tokens": 0,
        "total_output_tokens": 0,
        "avg_input_tokens": 0.0,
        "avg_output_tokens": 0.0,
        "total_generation_time_ms": 0,
        "avg_response_latency_ms": 0.0,
        "max_response_latency_ms": 0,
        "cost_per_1k": 0.0,
        "parameter_issues": {},
    }


def test_zero_evaluated_messages_all_evaluations_failed() -> None:
    items = [
        ItemFacts("completed", gen(10, 5, 0.001, 100), EvaluationFacts("failed", (ann("Fabrication"),))),
        ItemFacts("completed", gen(20, 5, 0.001, 300), EvaluationFacts("failed")),
        ItemFacts("failed", None, None),
    ]
    m = compute_metrics(items)
    # No evaluated message: issue metrics are 0, no ZeroDivisionError.
    assert m["total_issues"] == 0
    assert m["issue_labels"] == {}
    assert m["issue_rate"] == 0.0
    assert m["issue_free_message_count"] == 0
    assert m["avg_issues_per_evaluated_message"] == 0.0
    assert m["parameter_issues"] == {}
    # Generation figures are still computed over the 2 completed items.
    assert m["total_input_tokens"] == 30
    assert m["avg_input_tokens"] == pytest.approx(15.0)
    assert m["avg_response_latency_ms"] == pytest.approx(200.0)
    assert m["cost_per_1k"] == pytest.approx(1.0)  # 0.002 * 1000 / 2


def test_failed_evaluation_annotations_not_counted() -> None:
    failed = EvaluationFacts("failed", (ann("Fabrication", "t", "p"), ann("Omission")))
    items = [ItemFacts("completed", gen(), failed), ItemFacts("completed", gen(), done(ann("Omission")))]
    m = compute_metrics(items)
    # Only the second item's single annotation counts; 1 evaluated message, with an issue.
    assert m["total_issues"] == 1
    assert m["issue_labels"] == {"Omission": 1}
    assert m["issue_rate"] == 1.0
    assert m["issue_free_message_count"] == 0
    assert m["parameter_issues"] == {}


def test_missing_token_counts() -> None:
    items = [
        ItemFacts("completed", gen(input_tokens=10, output_tokens=None)),
        ItemFacts("completed", {"model": "m"}),  # keys absent entirely
        ItemFacts("completed", None),  # no generation metadata at all
        ItemFacts("completed", gen(input_tokens=None, output_tokens=7)),
    ]
    m = compute_metrics(items)
    # 4 completed items in the denominator; missing counts add 0.
    assert m["total_input_tokens"] == 10
    assert m["total_output_tokens"] == 7
    assert m["avg_input_tokens"] == pytest.approx(2.5)
    assert m["avg_output_tokens"] == pytest.approx(1.75)


def test_failed_item_generation_ignored() -> None:
    items = [ItemFacts("failed", gen(1000, 1000, 1.0, 5000)), ItemFacts("completed", gen(10, 20, 0.01, 50))]
    m = compute_metrics(items)
    assert m["total_input_tokens"] == 10
    assert m["total_output_tokens"] == 20
    assert m["avg_input_tokens"] == pytest.approx(10.0)
    assert m["max_response_latency_ms"] == 50
    assert m["cost_per_1k"] == pytest.approx(10.0)


def test_latency_none_on_some() -> None:
    items = [
        ItemFacts("completed", gen(latency_ms=None)),
        ItemFacts("completed", gen(latency_ms=250)),
        ItemFacts("completed", gen(latency_ms=None)),
        ItemFacts("completed", gen(latency_ms=750)),
    ]
    m = compute_metrics(items)
    # Only the two reporting items count: total 1000, avg 500 (not 250), max 750.
    assert m["total_generation_time_ms"] == 1000
    assert m["avg_response_latency_ms"] == pytest.approx(500.0)
    assert m["max_response_latency_ms"] == 750


def test_latency_none_everywhere() -> None:
    m = compute_metrics([ItemFacts("completed", gen(latency_ms=None))])
    assert m["total_generation_time_ms"] == 0
    assert m["avg_response_latency_ms"] == 0.0
    assert m["max_response_latency_ms"] == 0


def test_cost_none_on_some() -> None:
    items = [
        ItemFacts("completed", gen(cost_usd=0.01)),
        ItemFacts("completed", gen(cost_usd=None)),
        ItemFacts("completed", gen(cost_usd=0.02)),
        ItemFacts("completed", gen(cost_usd=None)),
    ]
    m = compute_metrics(items)
    # (0.01 + 0 + 0.02 + 0) * 1000 / 4 = 7.5
    assert m["cost_per_1k"] == pytest.approx(7.5)


def test_parameter_issues_aggregated_across_items() -> None:
    items = [
        ItemFacts(
            "completed",
            gen(),
            done(ann("Wrong value", "weather", "city"), ann("Wrong value", "weather", "unit")),
        ),
        ItemFacts("completed", gen(), done(ann("Wrong value", "weather", "city"))),
        ItemFacts("completed", gen(), done(ann("Missing", "book", "date"), ann("Other", None, "date"))),
        ItemFacts("failed", None, done(ann("Missing", "book", "date"))),  # evaluation completed: counts
    ]
    m = compute_metrics(items)
    assert m["parameter_issues"] == {"book": {"date": 2}, "weather": {"city": 2, "unit": 1}}
    assert list(m["parameter_issues"]) == ["book", "weather"]
    assert list(m["parameter_issues"]["weather"]) == ["city", "unit"]


def test_streaming_generator_consumed_once() -> None:
    pulled = 0

    def stream() -> Iterator[ItemFacts]:
        nonlocal pulled
        for item in mixed_items():
            pulled += 1
            yield item

    source = stream()
    m = compute_metrics(source)
    assert pulled == len(mixed_items())
    assert next(source, None) is None  # exhausted, and not re-created
    assert m == compute_metrics(mixed_items())


class _OneShot:
    """An iterable that refuses a second iteration."""

    def __init__(self, items: list[ItemFacts]) -> None:
        self.items = items
        self.iterations = 0

    def __iter__(self) -> Iterator[ItemFacts]:
        self.iterations += 1
        if self.iterations > 1:
            raise AssertionError("iterated twice")
        return iter(self.items)


def test_iterated_only_once() -> None:
    source = _OneShot(mixed_items())
    compute_metrics(source)
    assert source.iterations == 1


def test_large_stream() -> None:
    def stream() -> Iterator[ItemFacts]:
        for i in range(10_000):
            annotations = (ann("A"),) if i % 4 == 0 else ()
            yield ItemFacts("completed", gen(2, 1, 0.0001, 10), done(*annotations))

    m = compute_metrics(stream())
    assert m["total_issues"] == 2500
    assert m["issue_rate"] == pytest.approx(0.25)
    assert m["total_input_tokens"] == 20_000
    assert m["cost_per_1k"] == pytest.approx(0.1)


def test_deterministic() -> None:
    first = compute_metrics(mixed_items())
    second = compute_metrics(mixed_items())
    assert first == second
    assert list(first) == list(second)
    assert list(first["issue_labels"]) == list(second["issue_labels"])
    # Label order depends only on the labels, not on the order items arrive in.
    reordered = compute_metrics(list(reversed(mixed_items())))
    assert list(reordered["issue_labels"]) == list(first["issue_labels"])
    assert list(reordered["parameter_issues"]) == list(first["parameter_issues"])


def test_status_summary() -> None:
    statuses = ["completed", "failed", "completed", "pending", "in_progress", "weird", "completed"]
    assert status_summary(statuses) == {
        "pending": 1,
        "in_progress": 1,
        "completed": 3,
        "failed": 1,
        "total": 7,  # "weird" counts only here
    }


def test_status_summary_empty_and_generator() -> None:
    empty = {"pending": 0, "in_progress": 0, "completed": 0, "failed": 0, "total": 0}
    assert status_summary(s for s in list[str]()) == empty
