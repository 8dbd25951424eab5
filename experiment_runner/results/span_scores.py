"""Scoring predicted problem spans against human gold spans (pure functions, no I/O).

Used to calibrate an evaluator: read a gold JSONL file line by line with `parse_gold_line`,
pair each gold reply with the evaluator's spans for the same reply, and pass the
``(predicted, gold)`` pairs to `score_spans`, which reads them once and keeps only counts.

Decisions:

* Two matching notions. *Exact*: same part and identical ``[start, end)`` offsets. *Overlap*:
  same part and the character ranges intersect (overlap length > 0, so touching spans such as
  [0, 5) and [5, 9) do not match). Under ``overall`` and ``per_label`` the label must match
  too; ``overall_any_label`` ignores labels (did the evaluator find the right text at all?).
* Matching is "at least one partner", counted from each side: ``tp_pred`` = predictions that
  match some gold span, ``tp_gold`` = gold spans matched by some prediction. Precision =
  tp_pred / predicted, recall = tp_gold / gold. So one long prediction covering two nested or
  adjacent gold spans counts once for precision and twice for recall. Every pair only counts
  within its own message.
* Identical spans within one message (same label, part and offsets, on the same side) are
  collapsed to one before counting: a span listed twice is one fact. For the any-label view,
  spans with the same part and offsets are collapsed whatever their labels. Nested or merely
  overlapping gold spans are kept as separate spans.
* ``gold_labels`` (optional) keeps only gold spans with those labels, e.g. to drop non-error
  labels such as "Benign". Predictions are never filtered: a prediction with another label is a
  false positive, and it gets its own ``per_label`` row.
* Precision is 0 when there are no predictions, recall is 0 when there is no gold, F1 is 0 when
  P + R = 0; the raw counts are returned alongside so a reader can tell "0 of 0" from "0 of 10".
* `parse_gold_line` returns the line's ``conversation_id`` (a caller pairing gold with
  predictions by reply can also read ``message_index``, which is validated here) and the spans,
  all in the line's ``part_index`` (default 0). It raises ValueError naming the bad field.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypedDict

NOTIONS: tuple[str, ...] = ("exact", "overlap")
"""The matching notions, in the order they appear in the result."""


@dataclass(frozen=True)
class LabelledSpan:
    """A labelled character range ``[start, end)`` in one part of a message."""

    label: str
    start: int
    end: int  # end-exclusive
    part_index: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.start <= self.end:
            raise ValueError(
                f"invalid span offsets: start={self.start}, end={self.end} (need 0 <= start <= end)"
            )


# --- parsing ---------------------------------------------------------------------------------


def _require_int(value: Any, what: str) -> int:
    """Return `value` if it is a non-negative int (bools refused), else raise ValueError."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{what} must be a non-negative integer, got {value!r}")
    return value


def parse_gold_line(obj: Mapping[str, Any]) -> tuple[str, list[LabelledSpan]]:
    """Turn one decoded gold JSONL line into ``(conversation_id, spans)``.

    Expected shape: ``{"conversation_id": str, "message_index": int, "part_index": int
    (optional, default 0), "annotations": [{"label": str, "start_offset": int,
    "end_offset": int, ...}, ...]}``. An empty ``annotations`` list means the reply has no
    problem. Raises ValueError with a message naming the offending field.
    """
    if not isinstance(obj, Mapping):
        raise ValueError(f"gold line must be a JSON object, got {type(obj).__name__}")
    conversation_id = obj.get("conversation_id")
    if not isinstance(conversation_id, str) or not conversation_id:
        raise ValueError(f"gold line needs a non-empty string 'conversation_id', got {conversation_id!r}")
    where = f"gold line for {conversation_id!r}"
    if "message_index" not in obj:
        raise ValueError(f"{where}: missing 'message_index'")
    _require_int(obj["message_index"], f"{where}: 'message_index'")
    part_index = _require_int(obj.get("part_index", 0), f"{where}: 'part_index'")
    annotations = obj.get("annotations")
    if not isinstance(annotations, list):
        raise ValueError(f"{where}: 'annotations' must be a list, got {annotations!r}")

    spans: list[LabelledSpan] = []
    for i, annotation in enumerate(annotations):
        at = f"{where}: annotations[{i}]"
        if not isinstance(annotation, Mapping):
            raise ValueError(f"{at} must be an object, got {annotation!r}")
        label = annotation.get("label")
        if not isinstance(label, str) or not label:
            raise ValueError(f"{at} needs a non-empty string 'label', got {label!r}")
        for key in ("start_offset", "end_offset"):
            if key not in annotation:
                raise ValueError(f"{at}: missing '{key}'")
        start = _require_int(annotation["start_offset"], f"{at}: 'start_offset'")
        end = _require_int(annotation["end_offset"], f"{at}: 'end_offset'")
        if end <= start:
            raise ValueError(f"{at}: 'end_offset' ({end}) must be greater than 'start_offset' ({start})")
        spans.append(LabelledSpan(label=label, start=start, end=end, part_index=part_index))
    return conversation_id, spans


# --- matching --------------------------------------------------------------------------------

# A span reduced to what matching looks at: (part_index, start, end).
_Range = tuple[int, int, int]


def _matches(a: _Range, b: _Range, notion: str) -> bool:
    """Whether two ranges match under `notion` ("exact" or "overlap")."""
    if a[0] != b[0]:
        return False
    if notion == "exact":
        return a[1] == b[1] and a[2] == b[2]
    return max(a[1], b[1]) < min(a[2], b[2])


def _count(predicted: set[_Range], gold: set[_Range], notion: str) -> tuple[int, int]:
    """(predictions matching some gold range, gold ranges matched by some prediction)."""
    tp_pred = sum(1 for p in predicted if any(_matches(p, g, notion) for g in gold))
    tp_gold = sum(1 for g in gold if any(_matches(p, g, notion) for p in predicted))
    return tp_pred, tp_gold


def _by_label(spans: Iterable[LabelledSpan]) -> dict[str, set[_Range]]:
    """Group spans by label, collapsing identical ranges."""
    groups: dict[str, set[_Range]] = {}
    for span in spans:
        groups.setdefault(span.label, set()).add((span.part_index, span.start, span.end))
    return groups


class SpanScore(TypedDict):
    """Precision, recall, F1 and the raw counts behind them, for one notion of a match."""

    precision: float
    recall: float
    f1: float
    tp_pred: int
    predicted: int
    tp_gold: int
    gold: int


class SpanScores(TypedDict):
    """`score_spans`: per notion (`exact`, `overlap`), over every label, any label, and per label."""

    messages: int
    overall: dict[str, SpanScore]
    overall_any_label: dict[str, SpanScore]
    per_label: dict[str, dict[str, SpanScore]]


class GoldScores(SpanScores):
    """`score --gold`: which replies were scored and why others were skipped, then the scores."""

    experiment_id: str
    scored: int
    skipped_reply_differs: int
    skipped_not_evaluated: int
    gold_without_item: int


def _new_counts() -> dict[str, Counter[str]]:
    """Empty tp_pred/predicted/tp_gold/gold counters, one per notion."""
    return {notion: Counter() for notion in NOTIONS}


def _add(counts: dict[str, Counter[str]], predicted: set[_Range], gold: set[_Range]) -> None:
    """Add one message's counts (for one label, or for all labels) to `counts`."""
    for notion in NOTIONS:
        tp_pred, tp_gold = _count(predicted, gold, notion)
        counts[notion].update(tp_pred=tp_pred, predicted=len(predicted), tp_gold=tp_gold, gold=len(gold))


def _summary(counts: Counter[str]) -> SpanScore:
    """Precision, recall, F1 and the raw counts behind them."""
    tp_pred, predicted = counts["tp_pred"], counts["predicted"]
    tp_gold, gold = counts["tp_gold"], counts["gold"]
    precision = tp_pred / predicted if predicted else 0.0
    recall = tp_gold / gold if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "tp_pred": tp_pred,
        "predicted": predicted,
        "tp_gold": tp_gold,
        "gold": gold,
    }


def _report(counts: dict[str, Counter[str]]) -> dict[str, SpanScore]:
    return {notion: _summary(counts[notion]) for notion in NOTIONS}


def score_spans(
    pairs: Iterable[tuple[Sequence[LabelledSpan], Sequence[LabelledSpan]]],
    *,
    gold_labels: Collection[str] | None = None,
) -> SpanScores:
    """Score ``(predicted, gold)`` span lists, one pair per message, reading `pairs` once.

    Returns ``{"messages": n, "overall": {...}, "overall_any_label": {...},
    "per_label": {label: {...}}}``, where each ``{...}`` is ``{"exact": s, "overlap": s}`` and
    ``s`` holds precision, recall, f1, tp_pred, predicted, tp_gold and gold. ``per_label`` has
    a row for every label seen in predictions or in the (filtered) gold, sorted by label.
    """
    if isinstance(gold_labels, str):
        raise TypeError("gold_labels must be a collection of labels, not a single string")
    keep = None if gold_labels is None else frozenset(gold_labels)

    messages = 0
    overall = _new_counts()
    any_label = _new_counts()
    per_label: dict[str, dict[str, Counter[str]]] = {}

    for predicted, gold in pairs:
        messages += 1
        if keep is not None:
            gold = [span for span in gold if span.label in keep]
        predicted_groups = _by_label(predicted)
        gold_groups = _by_label(gold)
        for label in predicted_groups.keys() | gold_groups.keys():
            label_predicted = predicted_groups.get(label, set())
            label_gold = gold_groups.get(label, set())
            _add(overall, label_predicted, label_gold)
            _add(per_label.setdefault(label, _new_counts()), label_predicted, label_gold)
        all_predicted = set().union(*predicted_groups.values())
        all_gold = set().union(*gold_groups.values())
        _add(any_label, all_predicted, all_gold)

    return {
        "messages": messages,
        "overall": _report(overall),
        "overall_any_label": _report(any_label),
        "per_label": {label: _report(per_label[label]) for label in sorted(per_label)},
    }
