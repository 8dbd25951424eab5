"""The metric vocabulary: one table naming every figure the product reports (pure, no I/O).

Each `Metric` says once what a key is called and how it reads, and everything that lists metrics derives
from these tables: the export's `metrics` keys and their order (`METRIC_KEYS`, the contract's schema order),
`compute_metrics`' keys, `compare`'s rows and `gate`'s known metrics, the titles and formats of the HTML
report and the web UI, and the names `show` and `compare` print. A new metric is a row here (plus its
computation in `metrics.py` and its schema entry).
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    """One figure: its key, its title, the unit it is shown in and how it is formatted.

    `format` is how a value reads: `int`, `pct` (a share, shown x100 with `%`), `f1`/`f2` (decimals), `ms`,
    `s` (milliseconds shown as seconds), `usd`, or `counts` (a `{name: count}` object, not a number).
    `unit` is what `compare`'s text table adds to the title (`%`, `ms`); '' where the title says it.
    `label` is the short lower-case name the CLI's text uses (`show`, the paired table); '' where it has none.
    `issue`: judged from evaluations, so it means nothing until one is received (and `gate` checks for that).
    """

    key: str
    title: str
    unit: str
    format: str
    label: str = ""
    issue: bool = False

    @property
    def numeric(self) -> bool:
        """Whether a value is one number (`compare` and `gate` take these), not a `counts` object."""
        return self.format != "counts"


# fmt: off
METRICS: tuple[Metric, ...] = (  # the export's `experiment.metrics`, in the schema's order
    Metric("issue_rate", "Issue rate", "%", "pct", "issue rate", issue=True),
    Metric("total_issues", "Issues", "", "int", "issues", issue=True),
    Metric("cost_per_1k", "Cost per 1k items", "", "usd", "cost"),
    Metric("issue_labels", "Issues per label", "", "counts", issue=True),
    Metric("total_input_tokens", "Input tokens", "", "int", "tokens in"),
    Metric("total_output_tokens", "Output tokens", "", "int", "tokens out"),
    Metric("avg_input_tokens", "Input tokens per item", "", "f1"),
    Metric("avg_output_tokens", "Output tokens per item", "", "f1"),
    Metric("avg_issues_per_evaluated_message", "Issues per evaluated message", "", "f2", "issues per evaluated msg.", issue=True),
    Metric("issue_free_message_count", "Issue-free messages", "", "int", "issue-free messages", issue=True),
    Metric("total_generation_time_ms", "Total generation time", "ms", "s", "generation time"),
    Metric("avg_response_latency_ms", "Average latency", "ms", "ms", "latency"),
    Metric("max_response_latency_ms", "Max latency", "ms", "ms"),
    Metric("parameter_issues", "Parameter issues", "", "counts", issue=True),
)
COUNTS: tuple[Metric, ...] = (  # the experiment's counts `compare` puts before the metrics
    Metric("total_items_count", "Items", "", "int"),
    Metric("completed_items_count", "Completed items", "", "int"),
    Metric("evaluations_received", "Evaluations received", "", "int"),
)
SHARES: tuple[Metric, ...] = (  # computed from the items' spans by `compare` and `gate`, not exported
    Metric("issue_free_share", "Issue-free share", "%", "pct", "issue-free share", issue=True),
)
# fmt: on

METRIC_KEYS: tuple[str, ...] = tuple(m.key for m in METRICS)
"""The export's metric keys, in the schema's order (also `compute_metrics`' order)."""
NUMERIC_METRICS: tuple[str, ...] = tuple(m.key for m in METRICS if m.numeric)
"""The metrics that are one number: `compare`'s rows after the counts, and `gate`'s export metrics."""
COUNT_KEYS: tuple[str, ...] = tuple(m.key for m in COUNTS)
SHARE_METRICS: tuple[str, ...] = tuple(m.key for m in SHARES)
ISSUE_METRICS: tuple[str, ...] = tuple(m.key for m in (*METRICS, *SHARES) if m.issue and m.numeric)
"""The numeric metrics judged from evaluations (nothing to show, or to gate on, before one is received)."""

_BY_KEY = {m.key: m for m in (*COUNTS, *METRICS, *SHARES)}


def known(key: str) -> bool:
    """Whether `key` names a metric (or count) of these tables."""
    return key in _BY_KEY


def metric(key: str) -> Metric:
    """The metric named `key`; one this version does not know reads as its key, formatted `auto` (as it comes)."""
    found = _BY_KEY.get(key)
    return found if found is not None else Metric(key, key.replace("_", " ").capitalize(), "", "auto")
