"""Comparing two experiments: metrics and issue labels side by side, items matched by source conversation.

`compare_summaries` is pure: it takes two experiment objects (the export's shape) and, per source
conversation, the labels of the spans found in each experiment (None when that item's reply was not
evaluated). `compare_experiments` reads those from the store; the HTML report feeds it from the export.
Deltas are always B - A. A cost no reply of an experiment had a price for is None (unknown), never $0.
The `paired` section tests each issue metric on the items evaluated in both
(`results.stats`).
"""

from collections.abc import Mapping, Sequence
from typing import Any, TypedDict, cast

from experiment_runner.results.documents import ExperimentObject
from experiment_runner.results.export import experiment_object, target_cost
from experiment_runner.results.stats import RESAMPLES, SEED, PairedDict, paired_binary, paired_bootstrap
from experiment_runner.results.vocabulary import COUNT_KEYS, NUMERIC_METRICS
from experiment_runner.store import Store
from experiment_runner.store.queries import results as q
from experiment_runner.store.queries.experiments import require_experiment

TOP_CHANGED = 10

IssueCounts = Mapping[str, int | None]
"""Issues per source conversation id; None when the item's reply has no completed evaluation."""

ItemLabels = Mapping[str, Sequence[str] | None]
"""Per source conversation id, the label of each span found; None when the item's reply has no completed evaluation."""



class PairedMetric(PairedDict):
    metric: str  # issue_rate, avg_issues_per_evaluated_message, issue_free_share, label:NAME


class Bootstrap(TypedDict):
    resamples: int
    seed: int


class PairedSummary(TypedDict):
    """The paired tests: how many items were paired, and each metric's B - A with its interval and p-value."""

    items: int
    not_evaluated_in_both: int
    confidence: float
    bootstrap: Bootstrap
    metrics: list[PairedMetric]


class Identity(TypedDict):
    id: str
    name: str
    model: str
    pass_through: bool


class Row(TypedDict, total=False):
    """A metric's (`metric`) or a label's (`label`) values in A and B, and B - A (None when not numbers)."""

    metric: str
    label: str
    a: Any
    b: Any
    delta: int | float | None


class ChangedItem(TypedDict):
    source_conversation_id: str
    a: int
    b: int
    delta: int


class SharedConversations(TypedDict):
    shared: int
    only_a: int
    only_b: int
    only_a_ids: list[str]
    only_b_ids: list[str]


class Comparison(TypedDict):
    """`compare`: who A and B are, their conversations, metrics, labels, most changed items and paired tests."""

    a: Identity
    b: Identity
    conversations: SharedConversations
    metrics: list[Row]
    labels: list[Row]
    changed_items: list[ChangedItem]
    paired: PairedSummary


PAIRED_METRICS = ("issue_rate", "avg_issues_per_evaluated_message", "issue_free_share")
"""The issue metrics `compare` tests on paired items (then `label:NAME` for every label seen)."""


def issue_counts(labels: ItemLabels) -> dict[str, int | None]:
    """Issues per source conversation from the labels of its spans."""
    return {source: None if found is None else len(found) for source, found in labels.items()}


def paired_metrics(labels_a: ItemLabels, labels_b: ItemLabels, *, resamples: int = RESAMPLES, seed: int = SEED) -> "PairedSummary":
    """Each issue metric over the source conversations evaluated in both, B - A with its 95% interval and p-value.

    issue_rate, issue_free_share and each `label:NAME` (the share of messages with at least one span of
    that label) are yes/no per item: exact McNemar. avg_issues_per_evaluated_message: paired bootstrap."""
    shared = sorted(s for s in labels_a.keys() & labels_b.keys() if labels_a[s] is not None and labels_b[s] is not None)
    a = [list(labels_a[s] or ()) for s in shared]
    b = [list(labels_b[s] or ()) for s in shared]
    rows: list[PairedMetric] = [
        {"metric": "issue_rate", **paired_binary([bool(x) for x in a], [bool(y) for y in b]).as_dict()},
        {"metric": "avg_issues_per_evaluated_message",
         **paired_bootstrap([len(x) for x in a], [len(y) for y in b], resamples=resamples, seed=seed).as_dict()},
        {"metric": "issue_free_share", **paired_binary([not x for x in a], [not y for y in b]).as_dict()},
    ]
    for label in sorted({label for found in a + b for label in found}):
        rows.append({"metric": f"label:{label}", **paired_binary([label in x for x in a], [label in y for y in b]).as_dict()})
    both = labels_a.keys() & labels_b.keys()
    return {
        "items": len(shared),
        "not_evaluated_in_both": len(both) - len(shared),
        "confidence": 0.95,
        "bootstrap": {"resamples": resamples, "seed": seed},
        "metrics": rows,
    }


def _delta(a: Any, b: Any) -> int | float | None:
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (a, b)):
        return None
    delta = b - a
    return round(delta, 12) if isinstance(delta, float) else delta  # 0.3 - 0.1 -> 0.2, not 0.19999999999999998


def _row(key: str, name: str, a: Any, b: Any) -> "Row":
    return cast(Row, {key: name, "a": a, "b": b, "delta": _delta(a, b)})


def _metric(experiment: Mapping[str, Any], key: str) -> Any:
    """A metric of the experiment; `cost_per_1k` is None (unknown, not $0) when none of its replies had a price."""
    if key == "cost_per_1k" and target_cost(experiment).known == "unknown":
        return None
    return experiment["metrics"][key]


def _identity(experiment: Mapping[str, Any]) -> "Identity":
    return cast(Identity, {key: experiment.get(key) for key in ("id", "name", "model", "pass_through")})


def changed_items(issues_a: IssueCounts, issues_b: IssueCounts, top: int = TOP_CHANGED) -> list["ChangedItem"]:
    """Shared conversations evaluated in both whose issue count changed, largest |delta| first (then by id)."""
    pairs = [
        (cid, a, b)
        for cid, a in issues_a.items()
        if a is not None and (b := issues_b.get(cid)) is not None and a != b
    ]
    pairs.sort(key=lambda p: (-abs(p[2] - p[1]), p[0]))
    return [{"source_conversation_id": cid, "a": a, "b": b, "delta": b - a} for cid, a, b in pairs[:top]]


def compare_summaries(
    a: Mapping[str, Any], b: Mapping[str, Any], spans_a: ItemLabels, spans_b: ItemLabels
) -> "Comparison":
    """The comparison of two experiment objects and the labels of their spans per source conversation."""
    ma, mb = a["metrics"], b["metrics"]
    labels_a, labels_b = ma["issue_labels"], mb["issue_labels"]
    issues_a, issues_b = issue_counts(spans_a), issue_counts(spans_b)
    shared = issues_a.keys() & issues_b.keys()
    return {
        "a": _identity(a),
        "b": _identity(b),
        "conversations": {
            "shared": len(shared),
            "only_a": len(issues_a.keys() - shared),
            "only_b": len(issues_b.keys() - shared),
            "only_a_ids": sorted(issues_a.keys() - shared),
            "only_b_ids": sorted(issues_b.keys() - shared),
        },
        "metrics": [_row("metric", k, a[k], b[k]) for k in COUNT_KEYS]
        + [_row("metric", k, _metric(a, k), _metric(b, k)) for k in NUMERIC_METRICS],
        "labels": [
            _row("label", label, labels_a.get(label, 0), labels_b.get(label, 0))
            for label in sorted(labels_a.keys() | labels_b.keys())
        ],
        "changed_items": changed_items(issues_a, issues_b),
        "paired": paired_metrics(spans_a, spans_b),
    }


def span_labels(rows: Sequence[Any]) -> dict[str, list[str] | None]:
    """`ItemLabels` from `item_labels` rows (source, evaluation_status, label)."""
    found: dict[str, list[str] | None] = {}
    for r in rows:
        if r.evaluation_status != "completed":
            found[r.source] = None
            continue
        labels = found.setdefault(r.source, [])
        if r.label is not None and labels is not None:
            labels.append(r.label)
    return found


def load_experiment(store: Store, experiment_id: str) -> tuple[ExperimentObject, dict[str, list[str] | None]]:
    """The experiment object and its span labels per source conversation (`NotFoundError` for an unknown id)."""
    with store.read() as session:
        summary = experiment_object(session, require_experiment(session, experiment_id))
        rows = q.item_labels(session.connection(), experiment_id)
    return summary, span_labels(rows)


def compare_experiments(store: Store, id_a: str, id_b: str) -> "Comparison":
    """Compare experiment B with experiment A (`NotFoundError` for an unknown id)."""
    a, spans_a = load_experiment(store, id_a)
    b, spans_b = load_experiment(store, id_b)
    return compare_summaries(a, b, spans_a, spans_b)
