"""The export of one experiment (`export.schema.json`), streamed item by item from the stored rows.

Everything is read in one read transaction (a consistent snapshot) with a few set-based queries per
page of items, so memory stays flat however many items an experiment has. Every query has a total
order (item position, sequence number, annotation position, ids), so a stored experiment exports to
the same text every time. The text is exactly `json.dumps(document, ensure_ascii=False)`.
"""

import json
import os
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from itertools import chain, repeat
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy import bindparam, text
from sqlmodel import Session

from experiment_runner.engine.experiments import require_experiment
from experiment_runner.errors import BadInputError
from experiment_runner.results.metrics import (
    AnnotationFacts,
    EvaluationFacts,
    ItemFacts,
    compute_metrics,
    status_summary,
)
from experiment_runner.store import Store
from experiment_runner.store.tables import Experiment
from experiment_runner.store.timeutil import to_rfc3339

PAGE = 200  # items (or evaluations) per query page
FACTS_PAGE = 1000  # items per page when only metrics facts are read
SCHEMA_FILE = "export.schema.json"

# fmt: off
METRIC_KEYS: tuple[str, ...] = (
    "issue_rate", "total_issues", "cost_per_1k", "issue_labels", "total_input_tokens", "total_output_tokens",
    "avg_input_tokens", "avg_output_tokens", "avg_issues_per_evaluated_message", "issue_free_message_count",
    "total_generation_time_ms", "avg_response_latency_ms", "max_response_latency_ms", "parameter_issues",
)
# fmt: on


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _loads(value: str | None) -> Any:
    return None if value is None else json.loads(value)


# --- metrics facts -----------------------------------------------------------------------------

_FACTS = text(
    """
    SELECT i.position, i.status, e.id AS evaluation_id, e.status AS evaluation_status,
           (SELECT m.generation FROM message m
             WHERE m.conversation_id = i.result_conversation_id AND m.role = 'assistant'
             ORDER BY m.sequence_number DESC LIMIT 1) AS generation
    FROM item i
    LEFT JOIN evaluation e ON e.id = (SELECT e2.id FROM evaluation e2 WHERE e2.item_id = i.id
                                      ORDER BY e2.created_at DESC, e2.id DESC LIMIT 1)
    WHERE i.experiment_id = :experiment AND i.position > :after
    ORDER BY i.position LIMIT :limit
    """
)

_FACT_ANNOTATIONS = text(
    """
    SELECT evaluation_id, label, tool_name, parameter_name FROM annotation
    WHERE evaluation_id IN :ids ORDER BY evaluation_id, position, id
    """
).bindparams(bindparam("ids", expanding=True))


def item_facts(session: Session, experiment_id: str) -> Iterator[ItemFacts]:
    """What `compute_metrics` needs about each item, in position order, read a page at a time."""
    conn = session.connection()
    after = -1
    while True:
        rows = conn.execute(_FACTS, {"experiment": experiment_id, "after": after, "limit": FACTS_PAGE}).all()
        if not rows:
            return
        ids = [r.evaluation_id for r in rows if r.evaluation_status == "completed"]
        annotations: dict[str, list[AnnotationFacts]] = {}
        if ids:
            for a in conn.execute(_FACT_ANNOTATIONS, {"ids": ids}):
                annotations.setdefault(a.evaluation_id, []).append(
                    AnnotationFacts(a.label, a.tool_name, a.parameter_name)
                )
        for row in rows:
            evaluation = None
            if row.evaluation_id is not None:
                evaluation = EvaluationFacts(row.evaluation_status, tuple(annotations.get(row.evaluation_id, ())))
            yield ItemFacts(status=row.status, generation=_loads(row.generation), evaluation=evaluation)
        after = rows[-1].position


# --- the experiment object ---------------------------------------------------------------------

_COUNTS = text(
    """
    SELECT status, count(*) AS n, coalesce(sum(evaluations_expected), 0) AS expected
    FROM item WHERE experiment_id = :experiment GROUP BY status ORDER BY status
    """
)

_RECEIVED = text(
    """
    SELECT count(*) FROM evaluation e JOIN item i ON i.id = e.item_id
    WHERE i.experiment_id = :experiment AND e.status = 'completed'
    """
)


def experiment_object(session: Session, experiment: Experiment) -> dict[str, Any]:
    """The export's `experiment` object: settings, counts, status summary and metrics, in the schema's order."""
    conn = session.connection()
    counts = conn.execute(_COUNTS, {"experiment": experiment.id}).all()
    received = conn.execute(_RECEIVED, {"experiment": experiment.id}).scalar_one()
    summary = status_summary(chain.from_iterable(repeat(r.status, r.n) for r in counts))
    metrics = compute_metrics(item_facts(session, experiment.id))
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
        "metrics": {key: metrics[key] for key in METRIC_KEYS},
    }


# --- items ---------------------------------------------------------------------------------------

_ITEMS = text(
    """
    SELECT i.id, i.position, i.status, i.error_message, i.evaluations_expected, i.created_at, i.updated_at,
           i.source_conversation_id, i.result_conversation_id,
           (SELECT count(*) FROM evaluation e WHERE e.item_id = i.id AND e.status = 'completed') AS received
    FROM item i WHERE i.experiment_id = :experiment AND i.position > :after
    ORDER BY i.position LIMIT :limit
    """
)

_CONVERSATIONS = text(
    """
    SELECT c.id AS conversation_id, c.type, m.id, m.role, m.parts, m.sequence_number, m.generation
    FROM conversation c LEFT JOIN message m ON m.conversation_id = c.id
    WHERE c.id IN :ids ORDER BY c.id, m.sequence_number
    """
).bindparams(bindparam("ids", expanding=True))


def _conversations(session: Session, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The named conversations in the export's shape, read in one query."""
    found: dict[str, dict[str, Any]] = {}
    if not ids:
        return found
    for row in session.connection().execute(_CONVERSATIONS, {"ids": list(ids)}):
        conv = found.setdefault(row.conversation_id, {"id": row.conversation_id, "type": row.type, "messages": []})
        if row.id is not None:
            conv["messages"].append(
                {
                    "id": row.id,
                    "role": row.role,
                    "parts": json.loads(row.parts),
                    "sequence_number": row.sequence_number,
                    "generation": _loads(row.generation),
                }
            )
    return found


def item_page(
    session: Session, experiment_id: str, *, after: int = -1, limit: int = PAGE
) -> list[tuple[int, dict[str, Any]]]:
    """Up to `limit` items after position `after`, as `(position, export item)` pairs, with their conversations."""
    rows = session.connection().execute(_ITEMS, {"experiment": experiment_id, "after": after, "limit": limit}).all()
    ids = {r.source_conversation_id for r in rows} | {
        r.result_conversation_id for r in rows if r.result_conversation_id
    }
    conversations = _conversations(session, sorted(ids))
    page = []
    for r in rows:
        source = conversations.get(r.source_conversation_id) or {
            "id": r.source_conversation_id,
            "type": "source",
            "messages": [],
        }
        item = {
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


def _items(session: Session, experiment_id: str) -> Iterator[dict[str, Any]]:
    after = -1
    while page := item_page(session, experiment_id, after=after):
        for _, item in page:
            yield item
        after = page[-1][0]


# --- evaluations ---------------------------------------------------------------------------------

_EVALUATIONS = text(
    """
    SELECT e.id, e.message_id, e.status, e.model, e.input_tokens, e.output_tokens, e.detection_duration_ms,
           e.total_duration_ms, e.error_message, i.position
    FROM evaluation e JOIN item i ON i.id = e.item_id
    WHERE i.experiment_id = :experiment AND (i.position > :after OR (i.position = :after AND e.id > :after_id))
    ORDER BY i.position, e.id LIMIT :limit
    """
)

_ANNOTATIONS = text(
    """
    SELECT evaluation_id, id, label, text, explanation, message_part_index, start_offset, end_offset,
           tool_name, parameter_name
    FROM annotation WHERE evaluation_id IN :ids ORDER BY evaluation_id, position, id
    """
).bindparams(bindparam("ids", expanding=True))

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


def _evaluations(session: Session, experiment_id: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """`(message_id, evaluation)` in item order; a message evaluated twice keeps its first evaluation."""
    conn = session.connection()
    after, after_id = -1, ""
    seen: set[str] = set()
    while True:
        params = {"experiment": experiment_id, "after": after, "after_id": after_id, "limit": PAGE}
        rows = conn.execute(_EVALUATIONS, params).all()
        if not rows:
            return
        annotations: dict[str, list[dict[str, Any]]] = {}
        for a in conn.execute(_ANNOTATIONS, {"ids": [r.id for r in rows]}):
            annotations.setdefault(a.evaluation_id, []).append({key: getattr(a, key) for key in _ANNOTATION_KEYS})
        for r in rows:
            if r.message_id not in seen:
                seen.add(r.message_id)
                yield (
                    r.message_id,
                    {**{key: getattr(r, key) for key in _EVALUATION_KEYS}, "annotations": annotations.get(r.id, [])},
                )
        after, after_id = rows[-1].position, rows[-1].id


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


def export_document(store: Store, experiment_id: str) -> dict[str, Any]:
    """The whole export as a dict (for small experiments and tests; `export_chunks` streams)."""
    return json.loads("".join(export_chunks(store, experiment_id)))


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
    if not path.parent.is_dir():
        raise BadInputError(f"cannot write {path}: folder {path.parent} does not exist", loc=("output",))
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with open(fd, "w", encoding="utf-8") as out:
            for chunk in chunks:
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
    except OSError as exc:
        raise BadInputError(f"cannot write {path}: {exc.strerror or exc}", loc=("output",)) from None
    finally:
        temp.unlink(missing_ok=True)
    stats.bytes = path.stat().st_size
    return stats


def load_export_schema() -> dict[str, Any]:
    """The JSON Schema of the export, as shipped in the package."""
    return json.loads(resources.files("experiment_runner.results").joinpath(SCHEMA_FILE).read_text(encoding="utf-8"))
