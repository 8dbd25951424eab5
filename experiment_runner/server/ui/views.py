"""What the UI's templates show, built from the core's values by pure functions (formatting included).

The same `ExperimentRow` fills a row of the experiments list and the JSON its live updates poll, so the
page's script only copies strings into place; it never formats or builds markup. The compare page's
tables are `comparing`'s.
"""

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from experiment_runner.results.browse import Cost, ExperimentEntry, experiment_cost
from experiment_runner.results.vocabulary import metric

STATES = {"running": "running", "unfinished": "unfinished", "completed": "completed", "failures": "completed with failures"}
SORT_KEYS = ("created", "name", "status", "progress", "issue_rate", "cost")


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


def usd(value: float | None, known: str = "known") -> str:
    """`$0.0123`; `at least $0.0100` when some calls had no price (`partial`); `unknown` when none had one
    (None or `unknown`): as the CLI prints a cost, never $0 for an unknown one."""
    if value is None or known == "unknown":
        return "unknown"
    return ("at least " if known == "partial" else "") + f"${value:,.4f}"


def cost_text(cost: Cost | None) -> str:
    """A cost of `browse.experiment_cost` as text; None (no call made yet) as an en dash."""
    return "–" if cost is None else usd(cost.usd, cost.known)


def formatted(value: Any, kind: str, *, delta: bool = False) -> str:
    """A metric value in its unit (`kind`: a `vocabulary.Metric`'s format), or a signed difference of it."""
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
    """A metric's title and format (`vocabulary.metric`); a key the UI does not know yet shows as itself."""
    found = metric(key)
    return found.title, found.format


# --- experiments ---------------------------------------------------------------------------------


def cost_texts(experiment: Mapping[str, Any]) -> dict[str, str]:
    """The experiment page's cost figures as text: `target`, `per_1k`, `evaluator`, `total`."""
    cost = experiment_cost(experiment)
    return {"target": cost_text(cost.target), "per_1k": cost_text(cost.per_1k), "evaluator": cost_text(cost.evaluator),
            "total": cost_text(cost.total)}


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
    cost: float | None  # the total, or its lower bound when part is unpriced; None when unknown (sorts last)
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
    total = experiment_cost(e).total
    done = summary["completed"] + summary["failed"]
    return ExperimentRow(
        id=e["id"], name=e["name"], model=e["model"], evaluator_model=entry.evaluator_model, state=state,
        state_label=STATES[state], done=done, total=summary["total"],
        percent=round(100 * done / summary["total"], 1) if summary["total"] else 100.0,
        progress_text=progress_text(summary), issue_rate=rate,
        issue_rate_text="–" if rate is None else formatted(rate, "pct"),
        cost=None if total.known == "unknown" else total.usd, cost_text=cost_text(total), created_at=e["created_at"], open=bool(summary["pending"] or summary["in_progress"]),
        segments=status_segments(summary),
    )


def _sort_key(key: str, descending: bool) -> Any:
    def missing_last(value: float | None) -> tuple[bool, float]:  # in either order (the sort is reversed for desc)
        return ((value is None) != descending, value or 0.0)

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
    return sorted(chosen, key=_sort_key(sort if sort in SORT_KEYS else "created", descending), reverse=descending)
