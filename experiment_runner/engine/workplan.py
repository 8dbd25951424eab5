"""Which items a run still has to do, and the conversations they need (read in pages)."""

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text

from experiment_runner.store import Store
from experiment_runner.store.tables import Experiment


@dataclass(frozen=True)
class WorkUnit:
    """One item to process: replay its source conversation, or only evaluate its stored result."""

    item_id: str
    conversation_id: str  # the source conversation (replay) or the result conversation (evaluation only)
    needs_replay: bool
    discard_result_id: str | None = None  # a failed attempt's result, replaced by the new one


_ITEMS = text(
    """
    SELECT i.id, i.status, i.source_conversation_id AS source, i.result_conversation_id AS result,
           e.status AS evaluation
    FROM item i LEFT JOIN evaluation e ON e.item_id = i.id
    WHERE i.experiment_id = :experiment ORDER BY i.position
    """
)


def plan_work(store: Store, experiment: Experiment, retry_failed: bool) -> list[WorkUnit]:
    """The units of work left: unfinished items, missing evaluations, and (if asked) failed ones again."""
    evaluates = experiment.evaluator_model is not None
    reevaluation = experiment.source_experiment_id is not None
    with store.read() as session:
        rows = session.connection().execute(_ITEMS, {"experiment": experiment.id}).all()
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
                units.append(WorkUnit(row.id, row.source, needs_replay=True, discard_result_id=row.result))
        elif row.result:  # pending/in_progress with a reply already stored: evaluate only
            units.append(WorkUnit(row.id, row.result, needs_replay=False))
        else:
            units.append(WorkUnit(row.id, row.source, needs_replay=True))
    return units


_MESSAGES = "SELECT conversation_id, id, role, parts, sequence_number, generation FROM message WHERE conversation_id IN ({}) ORDER BY conversation_id, sequence_number"


def load_units(store: Store, units: list[WorkUnit]) -> list[tuple[WorkUnit, list[dict[str, Any]]]]:
    """Each unit with its conversation's messages (native dicts), read in one query."""
    ids = list({u.conversation_id for u in units})
    by_conversation: dict[str, list[dict[str, Any]]] = {i: [] for i in ids}
    with store.read() as session:
        rows = session.connection().exec_driver_sql(_MESSAGES.format(",".join("?" * len(ids))), tuple(ids)).all()
    for row in rows:
        by_conversation[row.conversation_id].append(
            {
                "id": row.id,
                "role": row.role,
                "parts": json.loads(row.parts),
                "sequence_number": row.sequence_number,
                "generation": json.loads(row.generation) if row.generation else None,
            }
        )
    return [(u, by_conversation[u.conversation_id]) for u in units]
