"""`gate`: conditions on an experiment's metrics (and on its change from a baseline) that a CI job can fail on.

A condition is `max METRIC=VALUE` (the experiment's value must be at most VALUE) or `max-increase
METRIC=VALUE` (its increase over the baseline must be at most VALUE). METRIC is a numeric key of the
export's `metrics` object, `issue_free_share`, or `label:NAME` (the share of evaluated messages with at
least one span of that label). Increases of the issue metrics are the paired differences `compare`
reports (on the items evaluated in both); other metrics' increases are plain differences of the two
experiments' values. With `significant`, an increase of a paired metric fails only when its 95%
interval excludes 0. An experiment that is unfinished, or has no completed evaluation while expecting
some, never passes: that is a failed check of its own. A cost that is unknown, or partly unknown (some
replies had no price, so `cost_per_1k` counts them as $0), never passes a cost condition either. The
limit must be a finite number, and `label:NAME` a label the experiment (or its baseline) can find.
"""

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypedDict

from experiment_runner.engine.spec import ExperimentSpec
from experiment_runner.errors import BadInputError
from experiment_runner.evaluation.rules import rules_of
from experiment_runner.results.compare import ItemLabels, load_experiment, paired_metrics
from experiment_runner.results.export import target_cost
from experiment_runner.results.vocabulary import ISSUE_METRICS, NUMERIC_METRICS, SHARE_METRICS
from experiment_runner.store import Store
from experiment_runner.store.queries.experiments import require_experiment

COST_METRICS = ("cost_per_1k",)


@dataclass(frozen=True)
class Condition:
    """One `--max` or `--max-increase` option, parsed."""

    kind: str  # max | max-increase
    metric: str
    limit: float

    @property
    def name(self) -> str:
        return f"{self.kind} {self.metric}={self.limit:g}"


class Check(TypedDict):
    """A condition (or a readiness check) and what it found, as `gate --format json` writes it."""

    name: str
    metric: str | None
    value: float | None
    limit: float | None
    passed: bool
    reason: str
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    significant: bool | None


def check(name: str, metric: str | None, value: float | None, limit: float | None, passed: bool, reason: str,
          ci_low: float | None = None, ci_high: float | None = None, p_value: float | None = None, significant: bool | None = None) -> Check:
    """A `Check`; only a paired condition has an interval, p-value and significance."""
    return {"name": name, "metric": metric, "value": value, "limit": limit, "passed": passed, "reason": reason,
            "ci_low": ci_low, "ci_high": ci_high, "p_value": p_value, "significant": significant}


class GateResult(TypedDict):
    """`gate`: the experiment, its baseline, whether every condition held, and each check."""

    experiment_id: str
    baseline_id: str | None
    significant: bool
    passed: bool
    checks: list[Check]


def parse_condition(kind: str, text: str) -> Condition:
    """`METRIC=VALUE` for a `--max` or `--max-increase` option; `BadInputError` (exit 2) for anything else."""
    metric, sep, raw = text.partition("=")
    metric = metric.strip()
    if not sep or not metric:
        raise BadInputError(f"--{kind} {text!r}: expected METRIC=VALUE, e.g. --{kind} issue_rate=0.05")
    try:
        limit = float(raw)
    except ValueError:
        raise BadInputError(f"--{kind} {text!r}: {raw.strip()!r} is not a number") from None
    if not math.isfinite(limit):  # NaN passes every comparison's `not >`, infinity is no limit at all
        raise BadInputError(f"--{kind} {text!r}: the limit must be a finite number, got {raw.strip()!r}")
    if metric.startswith("label:"):
        if not metric[len("label:"):].strip():
            raise BadInputError(f"--{kind} {text!r}: label:NAME needs a label name")
    elif metric not in NUMERIC_METRICS and metric not in SHARE_METRICS:
        known = ", ".join((*NUMERIC_METRICS, *SHARE_METRICS, "label:NAME"))
        raise BadInputError(f"--{kind} {text!r}: unknown metric {metric!r} (one of {known})")
    return Condition(kind, metric, limit)


def metric_value(experiment: Mapping[str, Any], labels: ItemLabels, metric: str) -> float:
    """An experiment's value of a gate metric (export metrics, issue_free_share, label:NAME)."""
    evaluated = [found for found in labels.values() if found is not None]
    if metric.startswith("label:"):
        name = metric[len("label:"):]
        return sum(1 for found in evaluated if name in found) / len(evaluated) if evaluated else 0.0
    if metric == "issue_free_share":
        return sum(1 for found in evaluated if not found) / len(evaluated) if evaluated else 0.0
    value: float = experiment["metrics"][metric]
    return value


def readiness(experiment: Mapping[str, Any], role: str) -> Check | None:
    """A failed check when the experiment is unfinished or every evaluation it expected failed, else None."""
    summary, name = experiment["status_summary"], f"{role} {experiment['id']}"
    open_items = summary["pending"] + summary["in_progress"]
    if open_items or not experiment.get("completed_at"):
        reason = f"{name} is not finished: {open_items} of {summary['total']} item(s) pending or in progress"
        return check(f"{role} finished", None, None, None, False, reason)
    if experiment["evaluations_expected"] and not experiment["evaluations_received"]:
        reason = f"{name} has no completed evaluation: all {experiment['evaluations_expected']} expected evaluation(s) failed or are missing"
        return check(f"{role} evaluated", None, None, None, False, reason)
    return None


NEVER_SEEN = {"difference": 0.0, "ci_low": 0.0, "ci_high": 0.0, "p_value": 1.0, "significant": False}


def _paired_row(paired: Mapping[str, Any], metric: str) -> Mapping[str, Any] | None:
    """`compare`'s paired row for the metric; a label seen in neither experiment has not changed."""
    row = next((row for row in paired["metrics"] if row["metric"] == metric), None)
    return NEVER_SEEN if row is None and metric.startswith("label:") else row


def _unjudged(condition: Condition, sides: Mapping[str, ItemLabels | None]) -> str | None:
    """Why an issue metric cannot be judged (a side with no evaluated message), or None."""
    if condition.metric not in ISSUE_METRICS and not condition.metric.startswith("label:"):
        return None
    for role, labels in sides.items():
        if labels is not None and (role == "experiment" or condition.kind == "max-increase"):
            if not any(found is not None for found in labels.values()):
                return f"the {role} has no evaluated message, so {condition.metric} judges nothing"
    return None


def _unpriced(condition: Condition, sides: Mapping[str, Mapping[str, Any] | None]) -> str | None:
    """Why a cost condition cannot pass (a side whose cost is unknown or partly unknown), or None."""
    if condition.metric not in COST_METRICS:
        return None
    for role, experiment in sides.items():
        if experiment is None or (role == "baseline" and condition.kind != "max-increase"):
            continue
        known, completed = target_cost(experiment).known, experiment["completed_items_count"]
        if known == "unknown":
            return f"the {role}'s cost is unknown: no price for its {completed} completed replies"
        if known == "partial":
            unpriced = experiment["unpriced_items_count"]
            return f"the {role}'s cost is partly unknown: no price for {unpriced} of its {completed} completed replies (counted as $0)"
    return None


def _increase(condition: Condition, value: float, base: float, row: Mapping[str, Any] | None, significant: bool) -> Check:
    if row is None:  # not a paired metric: the plain difference, no test
        increase = value - base
        passed = increase <= condition.limit
        note = " (no paired test for this metric)" if significant else ""
        return check(condition.name, condition.metric, increase, condition.limit, passed,
                     f"increase {increase:+.4g} {'<=' if passed else '>'} {condition.limit:g}{note}")
    increase = row["difference"]
    over = increase > condition.limit
    passed = not over or (significant and not row["significant"])
    interval = f"95% CI [{row['ci_low']:+.4g}, {row['ci_high']:+.4g}], p={row['p_value']:.4g}"
    verdict = ">" if over else "<="
    reason = f"paired increase {increase:+.4g} {verdict} {condition.limit:g} ({interval})"
    if over and passed:
        reason += "; not significant"
    return check(condition.name, condition.metric, increase, condition.limit, passed, reason,
                 row["ci_low"], row["ci_high"], row["p_value"], row["significant"])


def check_conditions(
    experiment: Mapping[str, Any], labels: ItemLabels, conditions: Sequence[Condition], *,
    baseline: Mapping[str, Any] | None = None, baseline_labels: ItemLabels | None = None, significant: bool = False,
) -> list[Check]:
    """Every check (readiness first, then each condition in order); pure."""
    if any(c.kind == "max-increase" for c in conditions) and baseline is None:
        raise BadInputError("--max-increase needs --baseline ID")
    if significant and baseline is None:
        raise BadInputError("--significant needs --baseline ID")
    checks = [c for c in (readiness(experiment, "experiment"), baseline and readiness(baseline, "baseline")) if c]
    paired = paired_metrics(baseline_labels or {}, labels) if baseline is not None else None
    for condition in conditions:
        unjudged = _unjudged(condition, {"experiment": labels, "baseline": baseline_labels}) or _unpriced(
            condition, {"experiment": experiment, "baseline": baseline}
        )
        if unjudged:
            checks.append(check(condition.name, condition.metric, None, condition.limit, False, unjudged))
            continue
        value = metric_value(experiment, labels, condition.metric)
        if condition.kind == "max":
            passed = value <= condition.limit
            reason = f"value {value:.4g} {'<=' if passed else '>'} {condition.limit:g}"
            checks.append(check(condition.name, condition.metric, value, condition.limit, passed, reason))
            continue
        assert baseline is not None and paired is not None
        base = metric_value(baseline, baseline_labels or {}, condition.metric)
        checks.append(_increase(condition, value, base, _paired_row(paired, condition.metric), significant))
    return checks


def label_set(store: Store, experiment_id: str, found: ItemLabels) -> set[str]:
    """The labels an experiment can find: its evaluator's, its rules', and any its spans carry."""
    with store.read() as session:
        row = require_experiment(session, experiment_id)
        evaluator = ExperimentSpec.from_row(row).evaluator()
        names = {label["name"] for label in evaluator.labels} if evaluator else set()
        names |= {rule.label for rule in rules_of(row.labels)}
    return names | {label for spans in found.values() for label in spans or ()}


def check_labels(conditions: Iterable[Condition], known: set[str], whose: str) -> None:
    """`BadInputError` (exit 2) for a `label:NAME` condition on a label `whose` labels do not hold: a typo
    would otherwise pass silently, its rate always 0."""
    for condition in conditions:
        name = condition.metric[len("label:"):] if condition.metric.startswith("label:") else None
        if name is not None and name not in known:
            listed = f"its labels: {', '.join(sorted(known))}" if known else "it has no labels: no evaluator and no rules"
            given = f"{condition.metric}={condition.limit:g}"
            raise BadInputError(f"--{condition.kind} {given!r}: {name!r} is not a label of {whose} ({listed})")


def run_gate(
    store: Store, experiment_id: str, conditions: Sequence[Condition], *, baseline_id: str | None = None, significant: bool = False
) -> "GateResult":
    """Check the conditions on a stored experiment: `{"experiment_id", "baseline_id", "passed", "checks"}`."""
    if not conditions:
        raise BadInputError("give at least one condition: --max METRIC=VALUE or --max-increase METRIC=VALUE")
    experiment, labels = load_experiment(store, experiment_id)
    baseline, baseline_labels = load_experiment(store, baseline_id) if baseline_id else (None, None)
    known = label_set(store, experiment_id, labels) | (label_set(store, baseline_id, baseline_labels or {}) if baseline_id else set())
    check_labels(conditions, known, "the experiment or its baseline" if baseline_id else "the experiment")
    checks = check_conditions(experiment, labels, conditions, baseline=baseline, baseline_labels=baseline_labels, significant=significant)
    return {
        "experiment_id": experiment_id,
        "baseline_id": baseline_id,
        "significant": significant,
        "passed": all(c["passed"] for c in checks),
        "checks": checks,
    }
