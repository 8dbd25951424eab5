"""Experiment metrics, computed from plain facts about each item (pure functions, no I/O).

The caller (the store / export code) turns each experiment item into an `ItemFacts` and
passes them to `compute_metrics`, which reads the iterable exactly once and keeps only
running totals and per-label counters, so memory grows with the number of distinct labels
and tool parameters, never with the number of items.

Decisions (the public contract of the returned keys is listed on `compute_metrics`):

* An "evaluated message" is an item whose evaluation has status ``completed``. Annotations of
  failed or pending evaluations never count, whatever the item's own status.
* Token, latency and cost figures come only from items whose status is ``completed``; the
  ``generation`` of any other item (e.g. a partial one on a failed item) is ignored. The
  denominator of the token averages and of ``cost_per_1k`` is the number of completed items,
  including those with no generation metadata or a missing value (they add 0).
* Latency averages use only the completed items that report ``latency_ms``, because a missing
  latency is unknown rather than zero.
* A numeric field counts only when it is an ``int`` or ``float`` (``bool`` excluded); ``None``
  or any other value is treated as missing. Token counts are truncated to ``int``.
* Every ratio is 0.0 when its denominator is 0 (no ZeroDivisionError). Counts and token totals
  are ``int``; rates and averages are ``float``; latency total and maximum keep the type the
  generations reported (``int`` when all are ints, 0 when none report).
* Dictionaries in the result have alphabetically sorted keys and the top-level keys come in the
  export's order, so equal input gives equal, identically ordered output.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from experiment_runner.conversation import ITEM_STATUSES
from experiment_runner.results.vocabulary import METRIC_KEYS

Number = int | float


@dataclass(frozen=True)
class AnnotationFacts:
    """One problem span an evaluator marked: its label, and the tool call parameter it concerns."""

    label: str
    tool_name: str | None = None
    parameter_name: str | None = None


@dataclass(frozen=True)
class EvaluationFacts:
    """The (single) evaluation of an item: its status and its annotations."""

    status: str
    annotations: tuple[AnnotationFacts, ...] = ()


@dataclass(frozen=True)
class ItemFacts:
    """What the metrics need to know about one experiment item.

    ``generation`` is the metadata of the final assistant message of the item's result
    (keys model, provider, input_tokens, output_tokens, cost_usd, latency_ms, finish_reasons).
    """

    status: str
    generation: Mapping[str, Any] | None = None
    evaluation: EvaluationFacts | None = None


def _number(value: Any) -> Number | None:
    """Return `value` if it is a real number (not a bool), else None (= missing)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value


def ratio(numerator: Number, denominator: Number) -> float:
    """numerator / denominator as a float, or 0.0 when the denominator is 0."""
    return float(numerator) / denominator if denominator else 0.0


def per_1k(cost_usd: Number, completed: int) -> float:
    """`cost_per_1k`: the summed cost of the completed items' replies per 1,000 completed items."""
    return ratio(cost_usd * 1000, completed)


def compute_metrics(items: Iterable[ItemFacts]) -> dict[str, Any]:
    """Aggregate the metrics of an experiment from its items, reading `items` once.

    Returned keys (they come in the export's order, `vocabulary.METRIC_KEYS`):

    * ``total_issues``: annotations over evaluated messages (completed evaluations).
    * ``issue_labels``: ``{label: count}`` over those annotations, sorted by label.
    * ``issue_rate``: evaluated messages with >= 1 annotation / evaluated messages.
    * ``issue_free_message_count``: evaluated messages with no annotation.
    * ``avg_issues_per_evaluated_message``: total_issues / evaluated messages.
    * ``total_input_tokens``, ``total_output_tokens``: sums over completed items (int).
    * ``avg_input_tokens``, ``avg_output_tokens``: those sums / completed items.
    * ``total_generation_time_ms``, ``avg_response_latency_ms``, ``max_response_latency_ms``:
      over completed items whose generation reports ``latency_ms``.
    * ``cost_per_1k``: sum of completed items' ``cost_usd`` * 1000 / completed items.
    * ``parameter_issues``: ``{tool_name: {parameter_name: count}}`` over annotations of
      evaluated messages that name both, keys sorted.

    Ratios are 0.0 when their denominator is 0.
    """
    issues, generations = _IssueTally(), _GenerationTally()
    for item in items:
        if item.evaluation is not None and item.evaluation.status == "completed":
            issues.add(item.evaluation.annotations)
        if item.status == "completed":
            generations.add(item.generation or {})
    found = {**issues.metrics(), **generations.metrics()}
    return {key: found[key] for key in METRIC_KEYS}


@dataclass
class _IssueTally:
    """Counts over the annotations of evaluated messages (completed evaluations)."""

    evaluated: int = 0
    with_issues: int = 0
    total: int = 0
    labels: Counter[str] = field(default_factory=Counter)
    parameters: dict[str, Counter[str]] = field(default_factory=dict)

    def add(self, annotations: Sequence[AnnotationFacts]) -> None:
        self.evaluated += 1
        self.with_issues += bool(annotations)
        self.total += len(annotations)
        for annotation in annotations:
            self.labels[annotation.label] += 1
            if annotation.tool_name is not None and annotation.parameter_name is not None:
                self.parameters.setdefault(annotation.tool_name, Counter())[annotation.parameter_name] += 1

    def metrics(self) -> dict[str, Any]:
        return {
            "total_issues": self.total,
            "issue_labels": dict(sorted(self.labels.items())),
            "issue_rate": ratio(self.with_issues, self.evaluated),
            "issue_free_message_count": self.evaluated - self.with_issues,
            "avg_issues_per_evaluated_message": ratio(self.total, self.evaluated),
            "parameter_issues": {tool: dict(sorted(counts.items())) for tool, counts in sorted(self.parameters.items())},
        }


@dataclass
class _GenerationTally:
    """Sums over the generation metadata of completed items."""

    completed: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: Number = 0
    latency_total: Number = 0
    latency_count: int = 0
    latency_max: Number = 0

    def add(self, generation: Mapping[str, Any]) -> None:
        self.completed += 1
        self.input_tokens += int(_number(generation.get("input_tokens")) or 0)
        self.output_tokens += int(_number(generation.get("output_tokens")) or 0)
        self.cost_usd += _number(generation.get("cost_usd")) or 0
        latency = _number(generation.get("latency_ms"))
        if latency is not None:
            self.latency_total += latency
            self.latency_max = latency if self.latency_count == 0 else max(self.latency_max, latency)
            self.latency_count += 1

    def metrics(self) -> dict[str, Any]:
        return {
            "total_input_tokens": self.input_tokens,
            "total_output_tokens": self.output_tokens,
            "avg_input_tokens": ratio(self.input_tokens, self.completed),
            "avg_output_tokens": ratio(self.output_tokens, self.completed),
            "total_generation_time_ms": self.latency_total,
            "avg_response_latency_ms": ratio(self.latency_total, self.latency_count),
            "max_response_latency_ms": self.latency_max,
            "cost_per_1k": per_1k(self.cost_usd, self.completed),
        }


@dataclass
class PriceCoverage:
    """Counts the completed items whose reply has no known cost (`cost_per_1k` counts them as 0) while the
    metrics read the items: `compute_metrics(coverage.watch(items))` still reads them once."""

    unpriced: int = 0

    def watch(self, items: Iterable[ItemFacts]) -> Iterator[ItemFacts]:
        for item in items:
            if item.status == "completed" and _number((item.generation or {}).get("cost_usd")) is None:
                self.unpriced += 1
            yield item


def cost_known(completed_items: int, unpriced_items: int) -> str:
    """Whether the target's cost is `known` (every completed reply priced, or none completed), `partial`
    (some priced) or `unknown` (none priced: the $0 in `cost_per_1k` means unknown, not free)."""
    if not unpriced_items:
        return "known"
    return "unknown" if unpriced_items >= completed_items else "partial"


def status_summary(statuses: Iterable[str]) -> dict[str, int]:
    """Count item statuses: one key per known status plus ``total``.

    Unknown statuses are counted only in ``total``.
    """
    counts: dict[str, int] = dict.fromkeys(ITEM_STATUSES, 0)
    total = 0
    for status in statuses:
        total += 1
        if status in counts:
            counts[status] += 1
    counts["total"] = total
    return counts
