"""`score`: compare an experiment's annotations with human gold spans (calibrating an evaluator).

A gold line names a source conversation, the index of the labelled message in it and a part index;
its offsets index that part's text. It is joined on the item whose SOURCE conversation it names. The
item is scored only when its result's final assistant message has the same text in that part (a
pass-through copy or a re-evaluation of one does; a replayed reply with other words cannot be scored
against offsets into the original) and it has a completed evaluation of that message. The counting
itself is `span_scores.score_spans`.
"""

import json
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from sqlalchemy import Connection

from experiment_runner import jsonlimits
from experiment_runner.conversation import Part
from experiment_runner.errors import BadInputError, InputLimitError
from experiment_runner.results.span_scores import GoldScores, LabelledSpan, parse_gold_line, score_spans
from experiment_runner.store import Store
from experiment_runner.store.queries import results as q
from experiment_runner.store.queries.experiments import require_experiment


@dataclass(frozen=True)
class GoldLine:
    """One parsed gold line."""

    conversation_id: str
    message_index: int
    part_index: int
    spans: list[LabelledSpan]


def read_gold_file(path: str | Path) -> Iterator[tuple[str, Any]]:
    """`("file:line", decoded object)` for each non-blank line of a gold JSONL file."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
    with path.open(encoding="utf-8-sig") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                yield f"{path}:{number}", jsonlimits.loads(line)
            except json.JSONDecodeError as exc:
                raise BadInputError(f"{path}:{number}: invalid JSON ({exc.msg})") from None
            except jsonlimits.JSONLimitError as exc:
                raise InputLimitError(f"{path}:{number}: {exc}") from None


def parse_gold(lines: Iterable[tuple[str, Any]]) -> list[GoldLine]:
    """Every gold line parsed and checked; `BadInputError` names the first bad one's file:line."""
    parsed = []
    for where, obj in lines:
        try:
            conversation_id, spans = parse_gold_line(obj)
        except ValueError as exc:
            raise BadInputError(f"{where}: {exc}") from None
        parsed.append(GoldLine(conversation_id, obj["message_index"], obj.get("part_index", 0), spans))
    return parsed


def _part_text(parts: list[Part], index: int) -> str | None:
    """The text gold offsets index in `parts[index]` (a text part's content), or None."""
    content = parts[index].get("content") if index < len(parts) else None
    return content if isinstance(content, str) else None


Pair = tuple[list[LabelledSpan], list[LabelledSpan]]


def item_spans(conn: Connection, item_ids: list[str]) -> dict[tuple[str, str], list[LabelledSpan]]:
    """`{(item id, evaluated message id): spans}` of the items' completed evaluations."""
    predictions: dict[tuple[str, str], list[LabelledSpan]] = {}
    for r in q.predictions(conn, item_ids):
        spans = predictions.setdefault((r.item_id, r.message_id), [])
        if r.label is not None:
            spans.append(LabelledSpan(r.label, r.start_offset, r.end_offset, r.message_part_index))
    return predictions


def _pairs(conn: Connection, experiment_id: str, gold_lines: list[GoldLine], counts: dict[str, int]) -> list[Pair]:
    """The (predicted, gold) pairs of the gold lines, counting what is skipped and why."""
    sources = sorted({g.conversation_id for g in gold_lines})
    items = {r.source: r for r in q.gold_items(conn, experiment_id, sources)}
    source_parts = {
        (r.conversation_id, r.sequence_number): json.loads(r.parts) for r in q.message_parts(conn, sorted(items))
    }
    predictions = item_spans(conn, sorted(r.id for r in items.values()))
    pairs = []
    for gold in gold_lines:
        item = items.get(gold.conversation_id)
        if item is None:
            counts["gold_without_item"] += 1
            continue
        predicted = predictions.get((item.id, item.message_id))
        if item.message_id is None or predicted is None:
            counts["skipped_not_evaluated"] += 1
            continue
        original = source_parts.get((gold.conversation_id, gold.message_index))
        reply = _part_text(json.loads(item.reply_parts), gold.part_index)
        if original is None or reply is None or reply != _part_text(original, gold.part_index):
            counts["skipped_reply_differs"] += 1
            continue
        counts["scored"] += 1
        pairs.append((predicted, gold.spans))
    return pairs


def score_experiment(
    store: Store, experiment_id: str, gold_lines: Iterable[tuple[str, Any]], gold_labels: Collection[str] | None = None
) -> GoldScores:
    """Score an experiment's annotations against gold lines (`("file:line", object)` pairs).

    Returns `{"experiment_id", "scored", "skipped_reply_differs", "skipped_not_evaluated",
    "gold_without_item", **score_spans(...)}`. An item without a completed evaluation of its final
    reply counts as not evaluated (checked before whether the reply's text matches the gold's).
    """
    gold = parse_gold(gold_lines)
    counts = dict.fromkeys(("scored", "skipped_reply_differs", "skipped_not_evaluated", "gold_without_item"), 0)
    with store.read() as session:
        require_experiment(session, experiment_id)
        pairs = _pairs(session.connection(), experiment_id, gold, counts)
    return cast(GoldScores, {"experiment_id": experiment_id, **counts, **score_spans(pairs, gold_labels=gold_labels)})
