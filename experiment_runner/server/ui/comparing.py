"""What the compare page shows of `compare_experiments`' result, built by pure functions.

The metrics, the paired statistics and the source conversations have tables of their own (titles, units,
the significance mark); any other field `compare` returns, now or later, is shown as a generic table of
its keys, so a field added to the comparison shows up without a change here.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from experiment_runner.results import vocabulary
from experiment_runner.server.ui.views import formatted, metric_title, number

SHOWN_IDS = 10  # conversations named per "only in one experiment" line, as the CLI's text
METHODS = {"mcnemar_exact": "exact McNemar", "paired_bootstrap": "paired bootstrap"}
SECTION_TITLES = {
    "metrics": "Metrics (B − A)",
    "labels": "Issues per label",
    "changed_items": "Items whose issue count changed most",
    "conversations": "Source conversations",
}
SPECIAL_KEYS = ("a", "b", "paired")  # the identities head the page; `paired` has a view of its own
PLAIN_KEYS = ("seed", "id")  # numbers that are names, printed without thousands separators


@dataclass(frozen=True)
class Table:
    """A table of strings: a header per column, whether a column is numeric, and the rows."""

    headers: list[str]
    numeric: list[bool]
    rows: list[list[str]]


@dataclass(frozen=True)
class Section:
    """One part of a comparison: a title and a table of it (`key` is the comparison's field name)."""

    key: str
    title: str
    table: Table


# --- generic tables --------------------------------------------------------------------------------


def _columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    return list(dict.fromkeys(key for row in rows for key in row))


def generic_table(rows: Sequence[Mapping[str, Any]]) -> Table:
    """Any list of flat objects as a table: one column per key (in order of first appearance)."""
    columns = _columns(rows)
    cells = [[cell(row.get(c), signed=c == "delta", key=c) for c in columns] for row in rows]
    numeric = [all(isinstance(row.get(c), (int, float)) or row.get(c) is None for row in rows) for c in columns]
    return Table([header(c) for c in columns], numeric, cells)


def header(key: str) -> str:
    """A column title for a field name: `a` -> `A`, `delta` -> `Δ (B − A)`, `only_a` -> `Only A`."""
    if key == "delta":
        return "Δ (B − A)"
    words = [w.upper() if len(w) == 1 else w for w in key.split("_")]
    return " ".join(words)[:1].upper() + " ".join(words)[1:]


def metric_table(rows: Sequence[Mapping[str, Any]], key: str = "metric") -> Table:
    """Rows naming a metric (`{"metric", "a", "b", "delta", ...}`): values in the metric's unit, extra keys as they come.

    A cost `compare` gives as None is unknown (no reply had a price), and reads so."""
    columns = [c for c in _columns(rows) if c != key]
    cells = []
    for row in rows:
        title, kind = metric_title(row[key])
        cells.append([title] + [_metric_cell(row.get(c), kind, c) for c in columns])
    return Table([header(key)] + [header(c) for c in columns], [False] + [True] * len(columns), cells)


def _metric_cell(value: Any, kind: str, column: str) -> str:
    if kind == "auto" or column not in ("a", "b", "delta"):
        return cell(value, key=column)
    if kind == "usd" and value is None:
        return "–" if column == "delta" else "unknown"
    return formatted(value, kind, delta=column == "delta")


def cell(value: Any, signed: bool = False, key: str = "") -> str:
    """A value as table text: numbers grouped (`1,234`; an id or seed as it is), lists and objects inline."""
    if isinstance(value, int) and not isinstance(value, bool) and key.endswith(PLAIN_KEYS):
        return str(value)
    if signed and isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return "+" + cell(value)
    if isinstance(value, float):
        return number(value, 4 if abs(value) < 10 else 2)
    if isinstance(value, (list, tuple)):
        return ", ".join(cell(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}: {cell(v, key=k)}" for k, v in value.items())
    return number(value)


# --- the paired statistics -------------------------------------------------------------------------


@dataclass(frozen=True)
class PairedRow:
    """One paired metric as text: B − A with its interval, the p-value, whether it is significant."""

    metric: str
    title: str
    a: str
    b: str
    difference: str
    interval: str
    p_value: str
    significant: bool
    method: str


@dataclass(frozen=True)
class OnlyIn:
    """The source conversations one experiment has and the other lacks: how many, the first names."""

    side: str
    count: int
    shown: list[str]
    more: int


@dataclass(frozen=True)
class PairedView:
    """`compare`'s `paired` section: on how many items, the rows, the bootstrap's settings, items in one only."""

    items: int
    not_evaluated_in_both: int
    confidence: str
    bootstrap: str
    rows: list[PairedRow]
    only: list[OnlyIn]


def _paired_value(metric: str, value: float, *, signed: bool = False, unit: bool = True) -> str:
    """A share in % (a difference in points), issues per message with three decimals (as the CLI)."""
    if metric == "avg_issues_per_evaluated_message":
        return f"{value:+.3f}" if signed else f"{value:.3f}"
    if not signed:
        return f"{value * 100:.1f}%"
    return f"{value * 100:+.1f}" + (" pp" if unit else "")


def paired_title(metric: str) -> str:
    """`Issue rate`, …; `label:NAME` -> `NAME share` (the share of messages with a span of that label)."""
    if metric.startswith("label:"):
        return f"{metric[len('label:'):]} share"
    return vocabulary.metric(metric).title


def p_text(p_value: float) -> str:
    """`0.0312`; `< 0.0001` rather than a p-value of 0."""
    return "< 0.0001" if p_value < 0.00005 else f"{p_value:.4f}"


def paired_row(row: Mapping[str, Any]) -> PairedRow:
    """One row of `paired.metrics` as the page shows it."""
    metric = row["metric"]
    low, high = (_paired_value(metric, row[k], signed=True, unit=False) for k in ("ci_low", "ci_high"))
    unit = "" if metric == "avg_issues_per_evaluated_message" else " pp"
    return PairedRow(
        metric=metric, title=paired_title(metric), a=_paired_value(metric, row["a"]), b=_paired_value(metric, row["b"]),
        difference=_paired_value(metric, row["difference"], signed=True), interval=f"[{low}, {high}]{unit}",
        p_value=p_text(row["p_value"]), significant=bool(row["significant"]), method=METHODS.get(row["method"], row["method"]),
    )


def only_in(conversations: Mapping[str, Any]) -> list[OnlyIn]:
    """The conversations in only A and only B (first `SHOWN_IDS` named), where there are any."""
    found = []
    for side in ("a", "b"):
        ids = list(conversations.get(f"only_{side}_ids") or [])
        count = conversations.get(f"only_{side}", len(ids))
        if count:
            found.append(OnlyIn(side.upper(), count, ids[:SHOWN_IDS], max(0, count - SHOWN_IDS)))
    return found


def paired_view(result: Mapping[str, Any]) -> PairedView | None:
    """The `paired` section of a comparison (None when it has none)."""
    paired = result.get("paired")
    if not isinstance(paired, Mapping):
        return None
    bootstrap = paired.get("bootstrap") or {}
    settings = f"{number(bootstrap.get('resamples'))} resamples, seed {bootstrap.get('seed')}" if bootstrap else ""
    return PairedView(
        items=paired.get("items", 0), not_evaluated_in_both=paired.get("not_evaluated_in_both", 0),
        confidence=f"{paired.get('confidence', 0.95) * 100:g}%", bootstrap=settings,
        rows=[paired_row(row) for row in paired.get("metrics", [])], only=only_in(result.get("conversations") or {}),
    )


# --- the sections ----------------------------------------------------------------------------------


def _conversations_table(value: Mapping[str, Any]) -> Table:
    """Shared and one-sided source conversations: counts, and the first names of the one-sided ones."""
    listed = {only.side: only for only in only_in(value)}
    rows = [["In both", number(value.get("shared")), ""]]
    for side in ("A", "B"):
        only = listed.get(side)
        names = "" if only is None else ", ".join(only.shown) + (f" and {only.more:,} more" if only.more else "")
        rows.append([f"Only in {side}", number(value.get(f"only_{side.lower()}", 0)), names])
    return Table(["", "Conversations", "First ones"], [False, True, False], rows)


def _section_table(key: str, value: Any) -> Table:
    if key == "metrics" and isinstance(value, list):
        return metric_table(value)
    if key == "conversations" and isinstance(value, Mapping) and "shared" in value:
        return _conversations_table(value)
    if isinstance(value, list) and all(isinstance(v, Mapping) for v in value):
        return generic_table(value)
    if isinstance(value, Mapping):
        if all(isinstance(v, Mapping) for v in value.values()) and value:  # {name: {field: value}}
            return generic_table([{"name": k, **v} for k, v in value.items()])
        return Table(["Field", "Value"], [False, True], [[header(k), cell(v, key=k)] for k, v in value.items()])
    return Table(["Value"], [False], [[cell(value, key=key)]])


def compare_sections(result: Mapping[str, Any]) -> list[Section]:
    """Every field `compare_experiments` returns but the identities and `paired` (see `paired_view`), as a
    titled table. Known fields get their titles and units; a field added later gets a table of its own,
    one column per key."""
    return [
        Section(key, SECTION_TITLES.get(key, key.replace("_", " ").capitalize()), _section_table(key, value))
        for key, value in result.items()
        if key not in SPECIAL_KEYS
    ]
