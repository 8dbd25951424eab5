"""Browsing and removing experiments: pages of experiments and items, a summary for `show`, delete.

Pages follow the hosted API's list-experiments page: `{"next_page_cursor", "query", "has_more", "items"}`. Cursors
are opaque keysets (urlsafe base64 of a JSON array: `[created_at, id]` for experiments, `[position]` for
items), so a walk through the pages sees every row once even while new experiments are being created.
"""

import base64
import binascii
import json
from collections.abc import Callable
from dataclasses import dataclass
from itertools import chain, repeat
from typing import Any, TypeVar

from sqlmodel import Session

from experiment_runner import jsonlimits
from experiment_runner.engine.lease import ensure_free, holder_state
from experiment_runner.errors import BadInputError, NotFoundError
from experiment_runner.results.documents import (
    BatchView,
    CacheSummary,
    EvaluationSummary,
    ExperimentObject,
    ExperimentSummary,
    ExportItem,
    Page,
    RecentError,
    RunState,
)
from experiment_runner.results.export import TargetCost, experiment_object, item_page, priced
from experiment_runner.results.metrics import per_1k, ratio, status_summary
from experiment_runner.store import Store
from experiment_runner.store.queries import batches as batches_q
from experiment_runner.store.queries import cache as cache_q
from experiment_runner.store.queries import experiments as q
from experiment_runner.store.queries import results as results_q
from experiment_runner.store.queries.experiments import require_experiment
from experiment_runner.store.tables import Experiment
from experiment_runner.store.timeutil import to_rfc3339

DEFAULT_LIMIT = 50
MAX_LIMIT = 100
RECENT_ERRORS = 5

T = TypeVar("T")


def _check_limit(limit: Any) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise BadInputError(f"limit must be between 1 and {MAX_LIMIT}", loc=("query", "limit"))
    return limit


def encode_cursor(key: list[Any]) -> str:
    """An opaque cursor for a keyset."""
    return base64.urlsafe_b64encode(json.dumps(key, separators=(",", ":")).encode()).decode().rstrip("=")


def decode_cursor(cursor: str, types: tuple[type, ...]) -> list[Any]:
    """The keyset inside `cursor`, checked against `types`; `BadInputError` for anything else."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        key = jsonlimits.loads(raw.decode())
    except (binascii.Error, ValueError, UnicodeDecodeError):
        key = None
    valid = (
        isinstance(key, list)
        and len(key) == len(types)
        and all(isinstance(v, t) and not isinstance(v, bool) for v, t in zip(key, types, strict=True))
    )
    if not valid:
        raise BadInputError("invalid cursor: pass the next_page_cursor of a previous page", loc=("query", "cursor"))
    checked: list[Any] = key
    return checked


def _page(items: list[T], limit: int, cursor: str | None, next_key: list[Any] | None) -> Page[T]:
    """The page shape of the hosted API's list-experiments page; `next_key` is the keyset of the next page, if any."""
    return {
        "next_page_cursor": encode_cursor(next_key) if next_key is not None else None,
        "query": {"limit": limit, "cursor": cursor},
        "has_more": next_key is not None,
        "items": items,
    }


def _experiments_page(
    store: Store, limit: int, cursor: str | None, read: Callable[[Session, list[Experiment]], list[T]]
) -> Page[T]:
    """One page of experiments, newest first (by created_at, then id), each as `read` gives it."""
    _check_limit(limit)
    before: tuple[str, str] | None = None
    if cursor is not None:
        created_at, experiment_id = decode_cursor(cursor, (str, str))
        before = (created_at, experiment_id)
    with store.read() as session:
        rows = q.experiment_page(session, limit + 1, before)
        shown = rows[:limit]
        items = read(session, shown)
    next_key = [shown[-1].created_at, shown[-1].id] if len(rows) > limit else None
    return _page(items, limit, cursor, next_key)


def list_experiments(store: Store, *, limit: int = DEFAULT_LIMIT, cursor: str | None = None) -> Page[ExperimentObject]:
    """One page of experiments, newest first (by created_at, then id), each as the export's experiment object."""
    return _experiments_page(store, limit, cursor, lambda session, shown: [experiment_object(session, row) for row in shown])


@dataclass(frozen=True)
class ExperimentLine:
    """What `list` shows of an experiment: the figures of its export object that the table prints, no more."""

    id: str
    name: str
    model: str
    created_at: str | None
    status_summary: dict[str, int]
    evaluations_received: int
    issue_rate: float
    cost: TargetCost


def _lines(session: Session, shown: list[Experiment]) -> list[ExperimentLine]:
    """`ExperimentLine`s from one aggregate query over the page's items (no item is read into Python)."""
    by_experiment: dict[str, list[Any]] = {}
    for row in results_q.overview_rows(session.connection(), [e.id for e in shown]):
        by_experiment.setdefault(row.experiment_id, []).append(row)
    lines = []
    for experiment in shown:
        rows = by_experiment.get(experiment.id, [])
        summary = status_summary(chain.from_iterable(repeat(r.status, r.n) for r in rows))
        done = next((r for r in rows if r.status == "completed"), None)
        evaluated, with_issues = sum(r.evaluated for r in rows), sum(r.with_issues for r in rows)
        completed = summary["completed"]
        cost = priced(per_1k(done.cost_usd if done else 0, completed), completed, done.unpriced if done else 0)
        lines.append(ExperimentLine(
            id=experiment.id, name=experiment.name, model=experiment.model, created_at=to_rfc3339(experiment.created_at),
            status_summary=summary, evaluations_received=sum(r.received for r in rows),
            issue_rate=ratio(with_issues, evaluated), cost=cost,
        ))
    return lines


def list_overview(store: Store, *, limit: int = DEFAULT_LIMIT, cursor: str | None = None) -> Page[ExperimentLine]:
    """`list_experiments`' page (same order, cursors and limits) with each experiment as an `ExperimentLine`:
    what `list` prints, read with one aggregate query per page instead of every item's metrics."""
    return _experiments_page(store, limit, cursor, _lines)


def list_items(
    store: Store, experiment_id: str, *, limit: int = DEFAULT_LIMIT, cursor: str | None = None
) -> Page[ExportItem]:
    """One page of an experiment's items in position order, each as in the export."""
    _check_limit(limit)
    after = decode_cursor(cursor, (int,))[0] if cursor is not None else -1
    with store.read() as session:
        require_experiment(session, experiment_id)
        page = item_page(session, experiment_id, after=after, limit=limit + 1)
    shown = page[:limit]
    next_key = [shown[-1][0]] if len(page) > limit else None
    return _page([item for _, item in shown], limit, cursor, next_key)


def experiment_summary(store: Store, experiment_id: str) -> ExperimentSummary:
    """What `show` prints: the experiment object, evaluator settings and the latest item errors."""
    from experiment_runner.evaluation.evaluator import EvaluatorConfig

    with store.read() as session:
        experiment = require_experiment(session, experiment_id)
        summary = experiment_object(session, experiment)
        errors = q.recent_errors(session.connection(), experiment_id, RECENT_ERRORS)
        recent: list[RecentError] = [{"item_id": r.id, "position": r.position, "error_message": r.error_message} for r in errors]
        evaluations = evaluation_summary(session.connection(), experiment_id)
        cache = cache_summary(session.connection(), experiment_id)
        batches = batch_summary(session.connection(), experiment_id)
        spent = q.spent_usd(session.connection(), experiment_id, replayed=not experiment.pass_through)
    evaluator = EvaluatorConfig.from_experiment(experiment)
    return {
        **summary,
        "api_base": experiment.api_base,
        "evaluator_model": experiment.evaluator_model,
        "evaluator_api_base": experiment.evaluator_api_base,
        "labels": [label["name"] for label in evaluator.labels] if evaluator else [],
        "rules": (experiment.labels or {}).get("rules") or [],
        "source_experiment_id": experiment.source_experiment_id,
        "structured_output": experiment.structured_output or {},
        "recent_errors": recent,
        "evaluation_summary": evaluations,
        "cache": cache,
        "batches": batches,
        "run": run_state(store, experiment, spent),
    }


def run_state(store: Store, experiment: Experiment, spent_usd: float) -> RunState:
    """Where the experiment's runs stand: `state` (running, complete, stopped, crashed, not running), who
    ran it last, why it stopped, its budget and what its results cost, and the settings `resume` changed."""
    holder = holder_state(store, experiment.id)
    if holder == "running":
        state = "running"
    elif experiment.completed_at:
        state = "complete"
    elif experiment.stop_reason:
        state = "stopped"
    else:
        state = holder or "not running"  # "crashed": a runner died holding the lease
    return {
        "state": state,
        "runner": experiment.runner,
        "stop_reason": experiment.stop_reason,
        "stop_detail": experiment.stop_detail,
        "stopped_at": experiment.stopped_at,
        "max_cost_usd": experiment.max_cost_usd,
        "spent_usd": round(spent_usd, 8),
        "setting_changes": experiment.setting_changes or [],
    }


def batch_summary(conn: Any, experiment_id: str) -> list[BatchView]:
    """The experiment's provider batch jobs: role, provider id, state, requests, when submitted and its age."""
    from datetime import UTC, datetime

    def age(stamp: str) -> float:
        then = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
        return round(max(0.0, (datetime.now(UTC) - then).total_seconds()), 1)

    return [
        {"role": j.role, "model": j.model, "batch_id": j.provider_batch_id, "status": j.status, "requests": j.request_count,
         "created_at": j.created_at, "age_seconds": age(j.created_at), "collected_at": j.collected_at, "error_message": j.error_message}
        for j in batches_q.jobs(conn, experiment_id)
    ]


def cache_summary(conn: Any, experiment_id: str) -> CacheSummary:
    """Calls of this experiment the response cache answered (replies and evaluator calls), and what they saved."""
    usage = cache_q.experiment_usage(conn, experiment_id)
    (target, target_saved), (evaluator, evaluator_saved) = usage["target"], usage["evaluator"]
    return {"calls": target + evaluator, "target_calls": target, "evaluator_calls": evaluator,
            "saved_usd": round(target_saved + evaluator_saved, 8)}


def evaluation_summary(conn: Any, experiment_id: str) -> EvaluationSummary:
    """What the evaluator did: evaluations by status, its tokens and cost, annotations dropped and why,
    the modes it answered in, and the latest errors of failed evaluations."""
    totals = results_q.evaluation_totals(conn, experiment_id)
    costs = [r.cost_usd for r in totals if r.cost_usd is not None]
    failed = results_q.failed_evaluations(conn, experiment_id, RECENT_ERRORS)
    return {
        "by_status": {r.status: r.n for r in totals},
        "input_tokens": sum(r.input_tokens for r in totals),
        "output_tokens": sum(r.output_tokens for r in totals),
        "cost_usd": round(sum(costs), 8) if costs else None,
        "dropped": results_q.dropped_counts(conn, experiment_id),
        "response_formats": results_q.evaluation_formats(conn, experiment_id),
        "recent_errors": [{"item_id": r.item_id, "position": r.position, "error_message": r.error_message} for r in failed],
    }


@dataclass(frozen=True)
class Deletion:
    """What `delete_experiment` removed: the experiment (its name) and how many of its rows."""

    name: str
    rows: q.DeletedRows


def delete_experiment(store: Store, experiment_id: str) -> Deletion:
    """Remove an experiment with its items, evaluations, annotations and the result conversations only it uses.

    One transaction, under the run lease: while a live runner holds it, `ExperimentBusyError` names that
    runner and nothing is deleted (a crashed runner's stale lease goes with the experiment). Result
    conversations that another experiment's items still point at (a re-evaluation shares them) are
    kept, and so are all source conversations.
    """
    with store.write() as session:
        name = require_experiment(session, experiment_id).name
        ensure_free(session.connection(), experiment_id)
        rows = q.delete_experiment(session.connection(), experiment_id)
    return Deletion(name, rows)


MIN_PREFIX = 4  # as git: a shorter id is only ever taken whole
SHOWN_MATCHES = 5


def resolve_experiment_id(store: Store, given: str) -> str:
    """The id of the experiment `given` names: an id, or a prefix of one (at least `MIN_PREFIX` characters) that
    no other experiment shares. `NotFoundError` when none matches; `BadInputError` when the prefix is ambiguous,
    or shorter than `MIN_PREFIX` while some id starts with it."""
    with store.read() as session:
        if q.get_experiment(session, given) is not None:
            return given
        matches = q.ids_with_prefix(session.connection(), given, SHOWN_MATCHES + 1) if given else []
    if matches and len(given) < MIN_PREFIX:
        raise BadInputError(f"experiment id prefix {given!r} is too short: give at least {MIN_PREFIX} characters of the id")
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise NotFoundError(f"no experiment with id {given!r}")
    shown = ", ".join(matches[:SHOWN_MATCHES]) + (" and more" if len(matches) > SHOWN_MATCHES else "")
    raise BadInputError(f"experiment id prefix {given!r} is ambiguous: {shown} all start with it; give more characters")
