"""Browsing the store a page at a time (the web UI's reads): experiments, filtered items, conversation search.

Items come back in the export's shape (`export_items`, `export_evaluations`), so what the UI shows of an
item is what `export` gives; their evaluation is the item's latest one, as the metrics count it.
"""

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypedDict, cast

from experiment_runner.conversation import Conversation
from experiment_runner.errors import BadInputError, NotFoundError
from experiment_runner.results.documents import ExperimentObject, ExportEvaluation, ExportItem
from experiment_runner.results.export import experiment_object, export_evaluations, export_items, target_cost
from experiment_runner.store import Store
from experiment_runner.store.queries import browse as q
from experiment_runner.store.queries import conversations as conversation_queries
from experiment_runner.store.queries import experiments as experiment_queries
from experiment_runner.store.queries.experiments import require_experiment

EXPERIMENTS_PAGE = 100
TEXT_WIDTH = 120

# What the item filter `show=` may be: item statuses, the latest evaluation's outcome, issues or none.
ITEM_FILTERS: dict[str, q.ItemConditions] = {
    "": q.ItemConditions(),
    "pending": q.ItemConditions(status="pending"),
    "in_progress": q.ItemConditions(status="in_progress"),
    "completed": q.ItemConditions(status="completed"),
    "failed": q.ItemConditions(status="failed"),
    "evaluation_failed": q.ItemConditions(evaluation_status="failed"),
    "with_issues": q.ItemConditions(has_issues=True),
    "issue_free": q.ItemConditions(has_issues=False),
}


@dataclass(frozen=True)
class ExperimentEntry:
    """One experiment for a listing: the export's experiment object and the evaluator it names."""

    experiment: ExperimentObject
    evaluator_model: str | None


@dataclass(frozen=True)
class ItemPage:
    """A page of matching items (`(position, export item)`), their latest evaluations by message id, the match count."""

    items: list[tuple[int, ExportItem]]
    evaluations: dict[str, ExportEvaluation]
    matched: int
    next_after: int | None  # the position to continue after, when more items match


@dataclass(frozen=True)
class ConversationRow:
    """A source conversation in a listing."""

    id: str
    messages: int
    first_user_text: str
    created_at: str


@dataclass(frozen=True)
class ConversationPage:
    """A page of a conversation search and how many matched in all."""

    rows: list[ConversationRow]
    total: int
    offset: int
    limit: int


@dataclass(frozen=True)
class Cost:
    """An amount in USD and how far it is known: `known`, `partial` (a lower bound: some calls had no price,
    counted as $0) or `unknown` (no call had a price: the amount means nothing)."""

    usd: float
    known: str


@dataclass(frozen=True)
class ExperimentCost:
    """What an experiment's calls cost: the target's (total and per 1k items), the evaluator's (None when no
    evaluation was received, so no call to price), and the two together."""

    target: Cost
    per_1k: Cost
    evaluator: Cost | None
    total: Cost


def combined_cost(parts: Sequence[Cost]) -> Cost:
    """The sum of costs: known when every part is, unknown when none is priced, else at least the priced parts."""
    amount = round(sum(p.usd for p in parts if p.known != "unknown"), 8)
    if all(p.known == "known" for p in parts):
        return Cost(amount, "known")
    if all(p.known == "unknown" for p in parts):
        return Cost(0.0, "unknown")
    return Cost(amount, "partial")


def experiment_cost(experiment: Mapping[str, Any]) -> ExperimentCost:
    """The costs of an experiment object (the export's shape): the target's as `target_cost` reads its
    `unpriced_items_count`, the evaluator's from `evaluator_cost_usd` (None there after an evaluation means
    litellm priced none of its calls: unknown, not free)."""
    target = target_cost(experiment)
    evaluator: Cost | None = None
    if experiment.get("evaluator_cost_usd") is not None:
        evaluator = Cost(experiment["evaluator_cost_usd"], "known")
    elif experiment.get("evaluations_received"):
        evaluator = Cost(0.0, "unknown")
    spent = Cost(round(target.total_usd, 8), target.known)
    total = combined_cost([spent] if evaluator is None else [spent, evaluator])
    return ExperimentCost(spent, Cost(target.per_1k_usd, target.known), evaluator, total)


def experiment_entries(store: Store, ids: Sequence[str] | None = None) -> list[ExperimentEntry]:
    """Every experiment, newest first; or only those named in `ids` that exist, in that order."""
    entries: list[ExperimentEntry] = []
    with store.read() as session:
        if ids is not None:
            rows = [row for i in ids if (row := experiment_queries.get_experiment(session, i)) is not None]
        else:
            rows, before = [], None
            while page := experiment_queries.experiment_page(session, EXPERIMENTS_PAGE, before):
                rows += page
                before = (page[-1].created_at, page[-1].id)
        for row in rows:
            entries.append(ExperimentEntry(experiment_object(session, row), row.evaluator_model))
    return entries


def live_entries(store: Store, ids: Sequence[str], since: str, limit: int = EXPERIMENTS_PAGE) -> list[ExperimentEntry]:
    """What a live list polls: the experiments in `ids` (the open rows it shows), those created after `since`
    (the newest it shows) and every one with items still open (run or resumed since), newest first."""
    with store.read() as session:
        found = q.open_or_newer_experiments(session.connection(), since, limit)
    return experiment_entries(store, list(dict.fromkeys([*found, *ids])))


def filtered_item_page(
    store: Store, experiment_id: str, *, show: str = "", label: str | None = None, after: int = -1, limit: int = 25
) -> ItemPage:
    """The items matching `show` (a key of `ITEM_FILTERS`) and `label`, after position `after`."""
    if show not in ITEM_FILTERS:
        raise BadInputError(f"unknown item filter {show!r}: use one of {', '.join(k for k in ITEM_FILTERS if k)}")
    where = replace(ITEM_FILTERS[show], label=label or None)
    with store.read() as session:
        require_experiment(session, experiment_id)
        conn = session.connection()
        rows = q.filtered_items(conn, experiment_id, where, after, limit + 1)
        shown = rows[:limit]
        items = export_items(conn, shown)
        evaluations = dict(export_evaluations(conn, q.latest_evaluations(conn, [r.id for r in shown])))
        matched = q.count_filtered_items(conn, experiment_id, where)
    return ItemPage(items, evaluations, matched, shown[-1].position if len(rows) > limit else None)


def _first_text(parts_json: str | None) -> str:
    parts = json.loads(parts_json) if parts_json else []
    text = " ".join(" ".join(p["content"] for p in parts if p.get("type") == "text").split())
    return text if len(text) <= TEXT_WIDTH else text[: TEXT_WIDTH - 1] + "…"


def search_conversations(store: Store, words: str = "", *, limit: int = 50, offset: int = 0) -> ConversationPage:
    """Imported conversations whose id or messages contain `words` (case-insensitive for ASCII), in import order."""
    pattern = q.like_pattern(words.strip()) if words.strip() else None
    with store.read() as session:
        conn = session.connection()
        rows = q.search_conversations(conn, pattern, limit, offset)
        total = q.count_conversations(conn, pattern)
    listed = [ConversationRow(r.id, r.n, _first_text(r.first_user_parts), r.created_at) for r in rows]
    return ConversationPage(listed, total, offset, limit)


class ExperimentUse(TypedDict):
    """An experiment with an item on a conversation: the experiment, and its item's status and position."""

    id: str
    name: str
    model: str
    created_at: str
    status: str
    position: int


def conversation_detail(store: Store, conversation_id: str) -> tuple[Conversation, list["ExperimentUse"]]:
    """A conversation (export shape; `NotFoundError` if unknown) and the experiments with an item on it."""
    with store.read() as session:
        conversation = conversation_queries.conversation(session.connection(), conversation_id)
        if conversation is None or conversation["type"] != "source":
            raise NotFoundError(f"no imported conversation with id {conversation_id!r}")
        used = [cast(ExperimentUse, dict(r._mapping)) for r in q.experiments_using(session.connection(), conversation_id)]
    return conversation, used
