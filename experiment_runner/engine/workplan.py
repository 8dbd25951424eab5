"""Which items a run still has to do, claimed a page at a time by each worker, and the conversations they need."""

from dataclasses import dataclass, replace
from typing import Any

from experiment_runner.conversation import Message, ToolDefinition
from experiment_runner.engine.lease import Lease, reap_dead
from experiment_runner.evaluation.rules import rules_of
from experiment_runner.store import Store
from experiment_runner.store.queries import claims, conversations, runs
from experiment_runner.store.tables import Experiment
from experiment_runner.store.timeutil import now


@dataclass(frozen=True)
class WorkUnit:
    """One item to process: replay its source conversation, or only evaluate its stored result."""

    item_id: str
    conversation_id: str  # the source conversation (replay) or the result conversation (evaluation only)
    needs_replay: bool  # (a failed attempt's result is replaced by the writer, in the transaction storing the new one)
    tools: list[ToolDefinition] | None = None  # the source's stored tool definitions (set by `load_units`)


def plan_work(store: Store, experiment: Experiment, retry_failed: bool) -> list[WorkUnit]:
    """The units of work left: unfinished items, missing evaluations, and (if asked) failed ones again."""
    with store.read() as session:
        rows = runs.work_items(session.connection(), experiment.id)
    evaluated = evaluates(experiment)
    return [unit for row in rows if (unit := unit_of(row, experiment, retry_failed, evaluated)) is not None]


def evaluates(experiment: Experiment) -> bool:
    """Whether the experiment's items are evaluated: by an evaluator model or by rules."""
    return experiment.evaluator_model is not None or bool(rules_of(experiment.labels))


def unit_of(row: Any, experiment: Experiment, retry_failed: bool, evaluated: bool) -> WorkUnit | None:
    """What is left to do for one item row (`id, status, source, result, evaluation`), or None (`evaluated`:
    `evaluates(experiment)`)."""
    eval_missing = evaluated and (row.evaluation is None or (retry_failed and row.evaluation == "failed"))
    if row.status == "completed":
        return WorkUnit(row.id, row.result, needs_replay=False) if eval_missing and row.result else None
    if row.status == "failed":
        if not retry_failed:
            return None
        if experiment.source_experiment_id is not None and row.result:  # a re-evaluation never replays
            return WorkUnit(row.id, row.result, needs_replay=False)
        return WorkUnit(row.id, row.source, needs_replay=True)
    if row.result:  # pending/in_progress with a reply already stored: evaluate only
        return WorkUnit(row.id, row.result, needs_replay=False)
    return WorkUnit(row.id, row.source, needs_replay=True)


def claim_work(store: Store, experiment: Experiment, lease: Lease, size: int, retry_before: str | None) -> list[WorkUnit]:
    """Claim the next page of up to `size` items for this worker, in one short write transaction (renewing its
    row, removing dead workers so their items can be taken); nothing once the experiment was stopped.
    `retry_before` (a stamp: `--retry-failed`) also takes items that failed before it, never ones failed since."""
    evaluated = evaluates(experiment)
    with store.write() as session:
        conn = session.connection()
        lease.check(conn)
        if claims.lock_experiment(conn, experiment.id, lock=False) is not None:  # (no row lock: claims stay concurrent)
            return []
        reap_dead(conn, experiment.id, lease.timings)
        rows = claims.claim_page(conn, experiment.id, lease.owner, size, evaluates=evaluated, retry_before=retry_before, stamp=now())
    return [unit for row in rows if (unit := unit_of(row, experiment, retry_before is not None, evaluated)) is not None]


def held_elsewhere(store: Store, experiment: Experiment, lease: Lease, retry_before: str | None) -> int:
    """How many items with work left other workers hold now (0 once the experiment was stopped)."""
    with store.read() as session:
        conn = session.connection()
        if claims.lock_experiment(conn, experiment.id, lock=False) is not None:
            return 0
        return claims.held_elsewhere(conn, experiment.id, lease.owner, evaluates=evaluates(experiment), retry_before=retry_before)


def count_left(store: Store, experiment: Experiment, retry_before: str | None) -> int:
    """How many items still have work by the claim rule, whoever holds them."""
    with store.read() as session:
        return claims.count_to_do(session.connection(), experiment.id, evaluates=evaluates(experiment), retry_before=retry_before)


def work_left(store: Store, experiment: Experiment, retry_failed: bool) -> int:
    """How many units a run would do now (0: the experiment is complete, as far as this run goes)."""
    return len(plan_work(store, experiment, retry_failed))


def load_units(store: Store, units: list[WorkUnit]) -> list[tuple[WorkUnit, list[Message]]]:
    """Each unit (with its source's tool definitions) and its conversation's messages (native dicts),
    read a chunk of conversations per query."""
    ids = list({u.conversation_id for u in units})
    with store.read() as session:
        by_conversation = conversations.messages_by_conversation(session.connection(), ids)
        tools = conversations.tools_by_conversation(session.connection(), [u.conversation_id for u in units if u.needs_replay])
    return [(replace(u, tools=tools.get(u.conversation_id)), by_conversation[u.conversation_id]) for u in units]
