"""What the UI's templates show, built from the core's values by pure functions (formatting included).

The same `ExperimentRow` fills a row of the experiments list and the JSON its live updates poll, so the
page's script only copies strings into place; it never formats or builds markup.
"""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from experiment_runner.report.html import METRIC_NAMES
from experiment_runner.results.browse import ExperimentEntry

STATES = {"running": "running", "unfinished": "unfinished", "completed": "completed", "failures": "completed with failures"}
SORT_KEYS = ("created", "name", "status", "progress", "issue_rate", "cost")
ISSUE_METRICS = ("issue_rate", "total_issues", "avg_issues_per_evaluated_message", "issue_free_message_count")


def number(value: Any, digits: int = 0) -> str:
    """`1,234` or `1,234.57`; an en dash for a missing value."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def usd(value: float | None) -> str:
    """`$0.0123`, or `unknown` when no price was known."""
    return "unknown" if value is None else f"${value:,.4f}"


def formatted(value: Any, kind: str, *, delta: bool = False) -> str:
    """A metric value in its unit (`kind` from `METRIC_NAMES`), or a signed difference of it."""
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return "–" if value is None else number(value)
    if kind == "pct":
        text, unit = number(value * 100, 1), " pp" if delta else "%"
    elif kind in ("ms", "s"):
        text, unit = (number(value, 0), " ms") if kind == "ms" else (number(value / 1000, 1), " s")
    elif kind == "usd":
        text, unit = number(value, 4), ""
        text = text if delta else "$" + text
    else:
        text, unit = number(value, {"f1": 1, "f2": 2}.get(kind, 3)), ""
    sign = "+" if delta and value > 0 else ""
    return sign + text + unit


def metric_title(key: str) -> tuple[str, str]:
    """A metric's title and unit kind; a key the UI does not know yet shows as itself."""
    return METRIC_NAMES.get(key, (key.replace("_", " ").capitalize(), "auto"))


# --- experiments ---------------------------------------------------------------------------------


def experiment_cost(experiment: Mapping[str, Any]) -> dict[str, float | None]:
    """Target cost (from `cost_per_1k`), evaluator cost (None when unpriced), and their total."""
    target = experiment["metrics"]["cost_per_1k"] * experiment["completed_items_count"] / 1000
    evaluator = experiment.get("evaluator_cost_usd")
    return {"target": round(target, 8), "evaluator": evaluator, "total": round(target + (evaluator or 0.0), 8)}


def experiment_state(experiment: Mapping[str, Any], running: bool) -> str:
    """`running` (a runner holds it now), `unfinished` (items left, nobody running them), `completed`, `failures`."""
    summary = experiment["status_summary"]
    if running:
        return "running"
    if summary["pending"] or summary["in_progress"]:
        return "unfinished"
    return "failures" if summary["failed"] else "completed"


@dataclass(frozen=True)
class ExperimentRow:
    """One experiment in the list (and in its live update)."""

    id: str
    name: str
    model: str
    evaluator_model: str | None
    state: str
    state_label: str
    done: int
    total: int
    percent: float
    progress_text: str
    issue_rate: float | None
    issue_rate_text: str
    cost: float | None
    cost_text: str
    created_at: str
    open: bool
    segments: dict[str, float] = field(default_factory=dict)  # width in % per item status

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def status_segments(summary: Mapping[str, int]) -> dict[str, float]:
    """The width (in %) of each item status in a progress bar."""
    total = summary["total"] or 1
    return {key: round(100 * summary[key] / total, 2) for key in ("completed", "failed", "in_progress", "pending")}


def progress_text(summary: Mapping[str, int]) -> str:
    """`4 of 6 done · 1 failed · 1 in progress`."""
    done = summary["completed"] + summary["failed"]
    bits = [f"{done:,} of {summary['total']:,} done"]
    bits += [f"{summary[k]:,} {k.replace('_', ' ')}" for k in ("failed", "in_progress") if summary[k]]
    return " · ".join(bits)


def experiment_row(entry: ExperimentEntry, running: bool) -> ExperimentRow:
    """The list's row for an experiment; `running` when a runner (this server or another process) holds it."""
    e = entry.experiment
    summary = e["status_summary"]
    state = experiment_state(e, running)
    evaluated = e["evaluations_received"]
    rate = e["metrics"]["issue_rate"] if evaluated else None
    total = experiment_cost(e)["total"]
    done = summary["completed"] + summary["failed"]
    return ExperimentRow(
        id=e["id"], name=e["name"], model=e["model"], evaluator_model=entry.evaluator_model, state=state,
        state_label=STATES[state], done=done, total=summary["total"],
        percent=round(100 * done / summary["total"], 1) if summary["total"] else 100.0,
        progress_text=progress_text(summary), issue_rate=rate,
        issue_rate_text="–" if rate is None else formatted(rate, "pct"),
        cost=total, cost_text=usd(total), created_at=e["created_at"], open=bool(summary["pending"] or summary["in_progress"]),
        segments=status_segments(summary),
    )


def _sort_key(key: str) -> Any:
    def missing_last(value: float | None) -> tuple[bool, float]:
        return (value is None, value or 0.0)

    keys = {
        "created": lambda r: r.created_at,
        "name": lambda r: r.name.lower(),
        "status": lambda r: list(STATES).index(r.state),
        "progress": lambda r: r.percent,
        "issue_rate": lambda r: missing_last(r.issue_rate),
        "cost": lambda r: missing_last(r.cost),
    }
    return keys[key]


def select_rows(rows: Iterable[ExperimentRow], *, name: str = "", state: str = "", sort: str = "created", descending: bool = True) -> list[ExperimentRow]:
    """The rows whose name contains `name` (any case) and whose state is `state` (any when empty), sorted."""
    wanted = name.strip().lower()
    chosen = [r for r in rows if wanted in r.name.lower() and (not state or r.state == state)]
    return sorted(chosen, key=_sort_key(sort if sort in SORT_KEYS else "created"), reverse=descending)


# --- tables of whatever a core function returns ----------------------------------------------------


@dataclass(frozen=True)
class Table:
    """A table of strings: a header per column, whether a column is numeric, and the rows."""

    headers: list[str]
    numeric: list[bool]
    rows: list[list[str]]


def _columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    return list(dict.fromkeys(key for row in rows for key in row))


def generic_table(rows: Sequence[Mapping[str, Any]]) -> Table:
    """Any list of flat objects as a table: one column per key (in order of first appearance)."""
    columns = _columns(rows)
    cells = [[_cell(row.get(c), signed=c == "delta") for c in columns] for row in rows]
    numeric = [all(isinstance(row.get(c), (int, float)) or row.get(c) is None for row in rows) for c in columns]
    return Table([header(c) for c in columns], numeric, cells)


def header(key: str) -> str:
    """A column title for a field name: `a` -> `A`, `delta` -> `Δ (B − A)`, `only_a` -> `Only a`."""
    if key == "delta":
        return "Δ (B − A)"
    words = [w.upper() if len(w) == 1 else w for w in key.split("_")]
    return " ".join(words)[:1].upper() + " ".join(words)[1:]


def metric_table(rows: Sequence[Mapping[str, Any]], key: str = "metric") -> Table:
    """Rows naming a metric (`{"metric", "a", "b", "delta", ...}`): values in the metric's unit, extra keys as they come."""
    columns = [c for c in _columns(rows) if c != key]
    cells = []
    for row in rows:
        title, kind = metric_title(row[key])
        cells.append([title] + [_metric_cell(row.get(c), kind, c) for c in columns])
    return Table([header(key)] + [header(c) for c in columns], [False] + [True] * len(columns), cells)


def _metric_cell(value: Any, kind: str, column: str) -> str:
    if kind == "auto" or column not in ("a", "b", "delta"):
        return _cell(value)
    return formatted(value, kind, delta=column == "delta")


def _cell(value: Any, signed: bool = False) -> str:
    if signed and isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return "+" + _cell(value)
    if isinstance(value, float):
        return number(value, 4 if abs(value) < 10 else 2)
    if isinstance(value, (list, tuple)):
        return ", ".join(_cell(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_cell(v)}" for k, v in value.items())
    return number(value)


def worse_when_up(metric: str) -> bool:
    """Whether a rise of this metric is bad news (the issue metrics)."""
    return metric in ISSUE_METRICS


# --- compare ----------------------------------------------------------------------------------------

SECTION_TITLES = {
    "metrics": "Metrics (B − A)",
    "labels": "Issues per label",
    "changed_items": "Items whose issue count changed most",
    "conversations": "Source conversations",
}
IDENTITY_KEYS = ("a", "b")


@dataclass(frozen=True)
class Section:
    """One part of a comparison: a title and a table of it (`key` is the comparison's field name)."""

    key: str
    title: str
    table: Table


def _section_table(key: str, value: Any) -> Table:
    if key == "metrics" and isinstance(value, list):
        return metric_table(value)
    if isinstance(value, list) and all(isinstance(v, Mapping) for v in value):
        return generic_table(value)
    if isinstance(value, Mapping):
        if all(isinstance(v, Mapping) for v in value.values()) and value:  # {name: {field: value}}
            return generic_table([{"name": k, **v} for k, v in value.items()])
        return Table(["Field", "Value"], [False, True], [[header(k), _cell(v)] for k, v in value.items()])
    return Table(["Value"], [False], [[_cell(value)]])


def compare_sections(result: Mapping[str, Any]) -> list[Section]:
    """Every field `compare_experiments` returns but the two experiments' identities, as a titled table.

    Known fields get their titles and units; a field added to the comparison later shows up as a table of
    its own, with one column per key, without a change here.
    """
    return [
        Section(key, SECTION_TITLES.get(key, key.replace("_", " ").capitalize()), _section_table(key, value))
        for key, value in result.items()
        if key not in IDENTITY_KEYS
    ]
