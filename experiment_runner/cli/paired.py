"""Printing `compare`'s paired statistics: B - A per issue metric with its 95% interval, p-value and a mark."""


from experiment_runner.cli.output import table
from experiment_runner.results import vocabulary
from experiment_runner.results.compare import Comparison

SHOWN_IDS = 10


def _scaled(metric: str, value: float, signed: bool = False) -> str:
    if metric == "avg_issues_per_evaluated_message":
        return f"{value:+.3f}" if signed else f"{value:.3f}"
    return f"{value * 100:+.1f}" if signed else f"{value * 100:.1f}"


def _name(metric: str) -> str:
    """`issue rate (%)`: the metric's short name and unit; `label:NAME (%)` (a share) for a label."""
    shown = vocabulary.metric(metric)
    if not shown.label:
        return f"{metric} (%)"
    return shown.label + (f" ({shown.unit})" if shown.unit else "")


def _ids(ids: list[str]) -> str:
    more = f" and {len(ids) - SHOWN_IDS} more" if len(ids) > SHOWN_IDS else ""
    return ", ".join(ids[:SHOWN_IDS]) + more


def paired_lines(result: Comparison) -> list[str]:
    """The paired table (`*` marks a difference whose interval excludes 0) and the items in only one experiment."""
    paired, conversations = result["paired"], result["conversations"]
    rows = []
    for row in paired["metrics"]:
        metric = row["metric"]
        name = _name(metric)
        interval = f"[{_scaled(metric, row['ci_low'], True)}, {_scaled(metric, row['ci_high'], True)}]"
        rows.append((name, _scaled(metric, row["a"]), _scaled(metric, row["b"]), _scaled(metric, row["difference"], True),
                     interval, f"{row['p_value']:.4f}", "*" if row["significant"] else ""))
    skipped = f"; {paired['not_evaluated_in_both']} in both but not evaluated in both" if paired["not_evaluated_in_both"] else ""
    lines = [
        "",
        f"Paired on the {paired['items']} source conversation(s) evaluated in both{skipped} "
        "(95% CI; * = significant, p < 0.05; label:NAME = share of messages with that label)",
        table(("metric", "A", "B", "B - A", "95% CI", "p", ""), rows),
    ]
    if conversations["only_a_ids"]:
        lines.append(f"Only in A ({conversations['only_a']}): {_ids(conversations['only_a_ids'])}")
    if conversations["only_b_ids"]:
        lines.append(f"Only in B ({conversations['only_b']}): {_ids(conversations['only_b_ids'])}")
    return lines
