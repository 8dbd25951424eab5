"""The export of one experiment (`export.schema.json`), streamed item by item from the stored rows.

Everything is read in one read transaction (a consistent snapshot) with a few set-based queries per
page of items, so memory stays flat however many items an experiment has. Every query has a total
order (item position, sequence number, annotation position, ids), so a stored experiment exports to
the same text every time. The text is exactly `json.dumps(document, ensure_ascii=False)`.
"""

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib import resources
from itertools import chain, repeat
from pathlib import Path
from typing import Any, TextIO, cast

from sqlmodel import Session

from experiment_runner import jsonlimits
from experiment_runner.conversation import Annotation, Conversation, JSONObject
from experiment_runner.files import write_text_atomic
from experiment_runner.results.documents import ExperimentObject, ExportDocument, ExportEvaluation, ExportItem
from experiment_runner.results.metrics import (
    AnnotationFacts,
    EvaluationFacts,
    ItemFacts,
    PriceCoverage,
    compute_metrics,
    cost_known,
    status_summary,
)
from experiment_runner.store import Store
from experiment_runner.store.queries import conversations as conversation_queries
from experiment_runner.store.queries import results as q
from experiment_runner.store.queries.common import decode_json
from experiment_runner.store.queries.experiments import require_experiment
from experiment_runner.store.tables import Experiment
from experiment_runner.store.timeutil import to_rfc3339

PAGE = 200  # items (or evaluations) per query page
FACTS_PAGE = 1000  # items per page when only metrics facts are read
SCHEMA_FILE = "export.schema.json"


def _dumps(value: Any) -> str:
    return jsonlimits.dumps(value, ensure_ascii=False)  # strict JSON: never a bare NaN or Infinity


# --- metrics facts -----------------------------------------------------------------------------


def item_facts(session: Session, experiment_id: str) -> Iterator[ItemFacts]:
    """What `compute_metrics` needs about each item, in position order, read a page at a time."""
    conn = session.connection()
    after = -1
    while True:
        rows = q.fact_rows(conn, experiment_id, after, FACTS_PAGE)
        if not rows:
            return
        ids = [r.evaluation_id for r in rows if r.evaluation_status == "completed"]
        annotations: dict[str, list[AnnotationFacts]] = {}
        for a in q.fact_annotations(conn, ids):
            annotations.setdefault(a.evaluation_id, []).append(AnnotationFacts(a.label, a.tool_name, a.parameter_name))
        for row in rows:
            evaluation = None
            if row.evaluation_id is not None:
                evaluation = EvaluationFacts(row.evaluation_status, tuple(annotations.get(row.evaluation_id, ())))
            yield ItemFacts(status=row.status, generation=decode_json(row.generation), evaluation=evaluation)
        after = rows[-1].position


# --- the experiment object ---------------------------------------------------------------------


def experiment_object(session: Session, experiment: Experiment) -> ExperimentObject:
    """The export's `experiment` object: settings, counts, status summary and metrics, in the schema's order."""
    conn = session.connection()
    counts = q.status_counts(conn, experiment.id)
    received = q.evaluations_received(conn, experiment.id)
    summary = status_summary(chain.from_iterable(repeat(r.status, r.n) for r in counts))
    coverage = PriceCoverage()
    metrics = compute_metrics(coverage.watch(item_facts(session, experiment.id)))
    return {
        "id": experiment.id,
        "name": experiment.name,
        "model": experiment.model,
        "pass_through": bool(experiment.pass_through),
        "conversation_ids": experiment.conversation_ids,
        "reasoning_config": experiment.reasoning_config,
        "system_prompt_override": experiment.system_prompt_override,
        "output_schema": experiment.output_schema,
        "created_by_user_id": experiment.created_by_user_id,
        "created_by_user_name": experiment.created_by_user_name,
        "created_by_service_account_id": experiment.created_by_service_account_id,
        "created_by_service_account_name": experiment.created_by_service_account_name,
        "created_at": to_rfc3339(experiment.created_at),
        "completed_at": to_rfc3339(experiment.completed_at),
        "total_items_count": summary["total"],
        "completed_items_count": summary["completed"],
        "evaluations_expected": sum(r.expected for r in counts),
        "evaluations_received": received,
        "status_summary": summary,
        "metrics": metrics,  # in the schema's order (`vocabulary.METRIC_KEYS`)
        # Beyond the hosted API's fields: what the evaluator calls cost (litellm's price; None when none was priced),
        # beside the target's metrics.cost_per_1k, and how many completed replies have no known cost (counted
        # as $0 in cost_per_1k, which the schema requires to be a number: all of them means the cost is unknown).
        "evaluator_cost_usd": evaluator_cost(conn, experiment.id),
        "unpriced_items_count": coverage.unpriced,
    }


@dataclass(frozen=True)
class TargetCost:
    """What an experiment's target calls cost, as people read it: `known` is `known`, `partial` (some replies
    had no price; the totals count them as $0) or `unknown` (none had one: the totals' $0 means unknown)."""

    total_usd: float
    per_1k_usd: float
    known: str


def target_cost(experiment: Mapping[str, Any]) -> TargetCost:
    """The target cost of an experiment object (the export's shape)."""
    return priced(experiment["metrics"]["cost_per_1k"], experiment["completed_items_count"], experiment.get("unpriced_items_count", 0))


def priced(per_1k_usd: float, completed: int, unpriced: int) -> TargetCost:
    """The target cost from `cost_per_1k`, the completed items and how many of their replies had no price."""
    return TargetCost(per_1k_usd * completed / 1000, per_1k_usd, cost_known(completed, unpriced))


def evaluator_cost(conn: Any, experiment_id: str) -> float | None:
    """The summed cost of the experiment's evaluator calls, or None when litellm priced none of them."""
    costs = [r.cost_usd for r in q.evaluation_totals(conn, experiment_id) if r.cost_usd is not None]
    return round(sum(costs), 8) if costs else None


# --- items ---------------------------------------------------------------------------------------


def item_page(
    session: Session, experiment_id: str, *, after: int = -1, limit: int = PAGE
) -> list[tuple[int, ExportItem]]:
    """Up to `limit` items after position `after`, as `(position, export item)` pairs, with their conversations."""
    conn = session.connection()
    return export_items(conn, q.item_rows(conn, experiment_id, after, limit))


def export_items(conn: Any, rows: list[Any]) -> list[tuple[int, ExportItem]]:
    """Item rows (the columns of `item_rows`) as `(position, export item)` pairs, their conversations loaded."""
    ids = {r.source_conversation_id for r in rows} | {
        r.result_conversation_id for r in rows if r.result_conversation_id
    }
    conversations = conversation_queries.conversations(conn, sorted(ids))
    page = []
    for r in rows:
        source: Conversation = conversations.get(r.source_conversation_id) or {
            "id": r.source_conversation_id,
            "type": "source",
            "messages": [],
        }
        item: ExportItem = {
            "id": r.id,
            "status": r.status,
            "error_message": r.error_message,
            "evaluations_expected": r.evaluations_expected,
            "evaluations_received": r.received,
            "created_at": to_rfc3339(r.created_at),
            "updated_at": to_rfc3339(r.updated_at),
            "source_conversation": source,
            "result_conversation": conversations.get(r.result_conversation_id) if r.result_conversation_id else None,
        }
        page.append((r.position, item))
    return page


def _items(session: Session, experiment_id: str) -> Iterator[ExportItem]:
    after = -1
    while page := item_page(session, experiment_id, after=after):
        for _, item in page:
            yield item
        after = page[-1][0]


# --- evaluations ---------------------------------------------------------------------------------

# fmt: off
_ANNOTATION_KEYS = (
    "id", "label", "text", "explanation", "message_part_index", "start_offset", "end_offset", "tool_name",
    "parameter_name",
)
_EVALUATION_KEYS = (
    "id", "message_id", "status", "model", "input_tokens", "output_tokens", "detection_duration_ms",
    "total_duration_ms", "error_message",
)
# fmt: on


def _evaluations(session: Session, experiment_id: str) -> Iterator[tuple[str, ExportEvaluation]]:
    """`(message_id, evaluation)` in item order; a message evaluated twice keeps its first evaluation."""
    conn = session.connection()
    after, after_id = -1, ""
    seen: set[str] = set()
    while True:
        rows = q.evaluation_rows(conn, experiment_id, (after, after_id), PAGE)
        if not rows:
            return
        for message_id, evaluation in export_evaluations(conn, rows):
            if message_id not in seen:
                seen.add(message_id)
                yield message_id, evaluation
        after, after_id = rows[-1].position, rows[-1].id


def export_evaluations(conn: Any, rows: list[Any]) -> list[tuple[str, ExportEvaluation]]:
    """Evaluation rows (the export's evaluation columns) as `(message_id, export evaluation)`, annotations loaded."""
    annotations: dict[str, list[Annotation]] = {}
    for a in q.annotation_rows(conn, [r.id for r in rows]):
        annotations.setdefault(a.evaluation_id, []).append(cast(Annotation, {key: getattr(a, key) for key in _ANNOTATION_KEYS}))
    return [
        (r.message_id, cast(ExportEvaluation, {**{key: getattr(r, key) for key in _EVALUATION_KEYS}, "annotations": annotations.get(r.id, [])}))
        for r in rows
    ]


# --- the document --------------------------------------------------------------------------------


@dataclass
class ExportStats:
    """What an export wrote."""

    items: int = 0
    bytes: int = 0


def _stream(store: Store, experiment_id: str, stats: ExportStats) -> Iterator[str]:
    with store.read() as session:
        experiment = require_experiment(session, experiment_id)  # again: it may have been deleted since the check
        yield '{"experiment": ' + _dumps(experiment_object(session, experiment)) + ', "items": ['
        for item in _items(session, experiment_id):
            yield (", " if stats.items else "") + _dumps(item)
            stats.items += 1
        yield '], "evaluations": {'
        for n, (message_id, evaluation) in enumerate(_evaluations(session, experiment_id)):
            yield (", " if n else "") + _dumps(message_id) + ": " + _dumps(evaluation)
        yield "}}"


def _chunks(store: Store, experiment_id: str, stats: ExportStats) -> Iterator[str]:
    with store.read() as session:
        require_experiment(session, experiment_id)
    return _stream(store, experiment_id, stats)


def export_chunks(store: Store, experiment_id: str) -> Iterator[str]:
    """The export document as JSON text chunks (one per item); `NotFoundError` is raised before any chunk."""
    return _chunks(store, experiment_id, ExportStats())


def export_document(store: Store, experiment_id: str) -> ExportDocument:
    """The whole export as a dict (for small experiments and tests; `export_chunks` streams)."""
    document: ExportDocument = json.loads("".join(export_chunks(store, experiment_id)))
    return document


def write_export(store: Store, experiment_id: str, target: str | Path | TextIO) -> ExportStats:
    """Write the export to a text stream, or to a file atomically (a temp file beside it, then renamed)."""
    stats = ExportStats()
    chunks = _chunks(store, experiment_id, stats)
    if not isinstance(target, (str, Path)):
        for chunk in chunks:
            target.write(chunk)
            stats.bytes += len(chunk.encode("utf-8"))
        return stats
    path = Path(target)
    write_text_atomic(path, chunks)
    stats.bytes = path.stat().st_size
    return stats


def load_export_schema() -> JSONObject:
    """The JSON Schema of the export, as shipped in the package."""
    schema: JSONObject = json.loads(resources.files("experiment_runner.results").joinpath(SCHEMA_FILE).read_text(encoding="utf-8"))
    return schema
