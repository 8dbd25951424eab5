"""Which items a run still has to do, and the conversations they need (read in pages)."""

from dataclasses import dataclass, replace

from experiment_runner.conversation import Message, ToolDefinition
from experiment_runner.evaluation.rules import rules_of
from experiment_runner.store import Store
from experiment_runner.store.queries import conversations, runs
from experiment_runner.store.tables import Experiment


@dataclass(frozen=True)
class WorkUnit:
    """One item to process: replay its source conversation, or only evaluate its stored result."""

    item_id: str
    conversation_id: str  # the source conversation (replay) or the result conversation (evaluation only)
    needs_replay: bool  # (a failed attempt's result is replaced by the writer, in the transaction storing the new one)
    tools: list[ToolDefinition] | None = None  # the source's stored tool definitions (set by `load_units`)


def plan_work(store: Store, experiment: Experiment, retry_failed: bool) -> list[WorkUnit]:
    """The units of work left: unfinished items, missing evaluations, and (if asked) failed ones again."""
    evaluates = experiment.evaluator_model is not None or bool(rules_of(experiment))
    reevaluation = experiment.source_experiment_id is not None
    with store.read() as session:
        rows = runs.work_items(session.connection(), experiment.id)
    units = []
    for row in rows:
        eval_missing = evaluates and (row.evaluation is None or (retry_failed and row.evaluation == "failed"))
        if row.status == "completed":
            if eval_missing and row.result:
                units.append(WorkUnit(row.id, row.result, needs_replay=False))
        elif row.status == "failed":
            if not retry_failed:
                continue
            if reevaluation and row.result:
                units.append(WorkUnit(row.id, row.result, needs_replay=False))
            else:
                units.append(WorkUnit(row.id, row.source, needs_replay=True))
        elif row.result:  # pending/in_progress with a reply already stored: evaluate only
            units.append(WorkUnit(row.id, row.result, needs_replay=False))
        else:
            units.append(WorkUnit(row.id, row.source, needs_replay=True))
    return units


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
