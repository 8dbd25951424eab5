"""Comparing two experiments: metrics and issue labels side by side, items matched by source conversation.

`compare_summaries` is pure: it takes two experiment objects (the export's shape) and, per source
conversation, the number of issues found in each experiment (None when that item's reply was not
evaluated). `compare_experiments` reads those from the store; the HTML report feeds it from the export.
Deltas are always B - A. A cost no reply of an experiment had a price for is None (unknown), never $0.
"""

from collections.abc import Mapping
from typing import Any

from experiment_runner.results.export import METRIC_KEYS, experiment_object, target_cost
from experiment_runner.store import Store
from experiment_runner.store.queries import results as q
from experiment_runner.store.queries.experiments import require_experiment

TOP_CHANGED = 10
COUNT_KEYS = ("total_items_count", "completed_items_count", "evaluations_received")
NUMERIC_METRICS = tuple(key for key in METRIC_KEYS if key not in ("issue_labels", "parameter_issues"))

IssueCounts = Mapping[str, int | None]
"""Issues per source conversation id; None when the item's reply has no completed evaluation."""


def _delta(a: Any, b: Any) -> int | float | None:
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (a, b)):
        return None
    delta = b - a
    return round(delta, 12) if isinstance(delta, float) else delta  # 0.3 - 0.1 -> 0.2, not 0.19999999999999998


def _row(key: str, name: str, a: Any, b: Any) -> dict[str, Any]:
    return {key: name, "a": a, "b": b, "delta": _delta(a, b)}


def _metric(experiment: Mapping[str, Any], key: str) -> Any:
    """A metric of the experiment; `cost_per_1k` is None (unknown, not $0) when none of its replies had a price."""
    if key == "cost_per_1k" and target_cost(experiment).known == "unknown":
        return None
    return experiment["metrics"][key]


def _identity(experiment: Mapping[str, Any]) -> dict[str, Any]:
    return {key: experiment.get(key) for key in ("id", "name", "model", "pass_through")}


def changed_items(issues_a: IssueCounts, issues_b: IssueCounts, top: int = TOP_CHANGED) -> list[dict[str, Any]]:
    """Shared conversations evaluated in both whose issue count changed, largest |delta| first (then by id)."""
    pairs = [
        (cid, a, b)
        for cid, a in issues_a.items()
        if a is not None and (b := issues_b.get(cid)) is not None and a != b
    ]
    pairs.sort(key=lambda p: (-abs(p[2] - p[1]), p[0]))
    return [{"source_conversation_id": cid, "a": a, "b": b, "delta": b - a} for cid, a, b in pairs[:top]]


def compare_summaries(
    a: Mapping[str, Any], b: Mapping[str, Any], issues_a: IssueCounts, issues_b: IssueCounts
) -> dict[str, Any]:
    """The comparison of two experiment objects and their per-conversation issue counts."""
    ma, mb = a["metrics"], b["metrics"]
    labels_a, labels_b = ma["issue_labels"], mb["issue_labels"]
    shared = issues_a.keys() & issues_b.keys()
    return {
        "a": _identity(a),
        "b": _identity(b),
        "conversations": {
            "shared": len(shared),
            "only_a": len(issues_a.keys() - shared),
            "only_b": len(issues_b.keys() - shared),
        },
        "metrics": [_row("metric", k, a[k], b[k]) for k in COUNT_KEYS]
        + [_row("metric", k, _metric(a, k), _metric(b, k)) for k in NUMERIC_METRICS],
        "labels": [
            _row("label", label, labels_a.get(label, 0), labels_b.get(label, 0))
            for label in sorted(labels_a.keys() | labels_b.keys())
        ],
        "changed_items": changed_items(issues_a, issues_b),
    }


def _load(store: Store, experiment_id: str) -> tuple[dict[str, Any], dict[str, int | None]]:
    with store.read() as session:
        summary = experiment_object(session, require_experiment(session, experiment_id))
        rows = q.issue_rows(session.connection(), experiment_id)
    return summary, {r.source: r.issues if r.evaluation_status == "completed" else None for r in rows}


def compare_experiments(store: Store, id_a: str, id_b: str) -> dict[str, Any]:
    """Compare experiment B with experiment A (`NotFoundError` for an unknown id)."""
    a, issues_a = _load(store, id_a)
    b, issues_b = _load(store, id_b)
    return compare_summaries(a, b, issues_a, issues_b)
