"""Tests for experiment_runner.results.span_scores: small cases whose P/R/F1 are worked out in comments."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from experiment_runner.results.span_scores import LabelledSpan, parse_gold_line, score_spans

FAB = "Fabrication"
CON = "Contradiction"


def S(label: str, start: int, end: int, part: int = 0) -> LabelledSpan:
    return LabelledSpan(label=label, start=start, end=end, part_index=part)


def row(result: Mapping[str, Any], *path: str) -> tuple[Any, ...]:
    """(precision, recall, f1, tp_pred, predicted, tp_gold, gold) at `path` in the result."""
    node = result
    for key in path:
        node = node[key]
    return tuple(node[k] for k in ("precision", "recall", "f1", "tp_pred", "predicted", "tp_gold", "gold"))


def approx_row(p: float, r: float, f1: float, tp_pred: int, predicted: int, tp_gold: int, gold: int):
    return (pytest.approx(p), pytest.approx(r), pytest.approx(f1), tp_pred, predicted, tp_gold, gold)


# 3 messages, 4 gold spans, 4 predictions.
#   A: gold Fab[10,20) Fab[30,40); pred Fab[10,20) (exact hit), Fab[35,50) (overlaps [30,40) only)
#   B: gold Con[0,10);             pred Fab[0,10)  (right text, wrong label)
#   C: gold Fab[5,15);             pred Fab[14,30) (overlaps by one character, 14)
SMALL_CASE = [
    ([S(FAB, 10, 20), S(FAB, 35, 50)], [S(FAB, 10, 20), S(FAB, 30, 40)]),
    ([S(FAB, 0, 10)], [S(CON, 0, 10)]),
    ([S(FAB, 14, 30)], [S(FAB, 5, 15)]),
]


def test_small_case_overall() -> None:
    result = score_spans(SMALL_CASE)
    assert result["messages"] == 3
    # Exact, label must match: only A's Fab[10,20). P = 1/4, R = 1/4, F1 = 1/4.
    assert row(result, "overall", "exact") == approx_row(1 / 4, 1 / 4, 1 / 4, 1, 4, 1, 4)
    # Overlap, label must match: A's two predictions and C's. P = 3/4, R = 3/4, F1 = 3/4.
    assert row(result, "overall", "overlap") == approx_row(3 / 4, 3 / 4, 3 / 4, 3, 4, 3, 4)


def test_small_case_any_label() -> None:
    result = score_spans(SMALL_CASE)
    # Exact, labels ignored: A's Fab[10,20) and B's [0,10). P = R = F1 = 2/4.
    assert row(result, "overall_any_label", "exact") == approx_row(1 / 2, 1 / 2, 1 / 2, 2, 4, 2, 4)
    # Overlap, labels ignored: all four. P = R = F1 = 1.
    assert row(result, "overall_any_label", "overlap") == approx_row(1, 1, 1, 4, 4, 4, 4)


def test_small_case_per_label() -> None:
    result = score_spans(SMALL_CASE)
    assert list(result["per_label"]) == [CON, FAB]
    # Fabrication: 4 predictions, 3 gold (A twice, C).
    #   exact:   P = 1/4, R = 1/3, F1 = 2 * (1/12) / (7/12) = 2/7
    #   overlap: P = 3/4, R = 3/3, F1 = 2 * (3/4) / (7/4)  = 6/7
    assert row(result, "per_label", FAB, "exact") == approx_row(1 / 4, 1 / 3, 2 / 7, 1, 4, 1, 3)
    assert row(result, "per_label", FAB, "overlap") == approx_row(3 / 4, 1, 6 / 7, 3, 4, 3, 3)
    # Contradiction: 1 gold, never predicted -> all zero, counts show 0 of 1.
    assert row(result, "per_label", CON, "exact") == approx_row(0, 0, 0, 0, 0, 0, 1)
    assert row(result, "per_label", CON, "overlap") == approx_row(0, 0, 0, 0, 0, 0, 1)


def test_result_shape() -> None:
    result = score_spans(SMALL_CASE)
    assert list(result) == ["messages", "overall", "overall_any_label", "per_label"]
    for section in (result["overall"], result["overall_any_label"], *result["per_label"].values()):
        assert list(section) == ["exact", "overlap"]
        for scores in section.values():
            assert list(scores) == ["precision", "recall", "f1", "tp_pred", "predicted", "tp_gold", "gold"]


def test_no_pairs() -> None:
    result = score_spans([])
    assert result["messages"] == 0
    assert result["per_label"] == {}
    for notion in ("exact", "overlap"):
        assert row(result, "overall", notion) == (0.0, 0.0, 0.0, 0, 0, 0, 0)
        assert row(result, "overall_any_label", notion) == (0.0, 0.0, 0.0, 0, 0, 0, 0)


def test_no_predictions() -> None:
    result = score_spans([([], [S(FAB, 0, 5)]), ([], [S(FAB, 1, 9), S(CON, 2, 4)])])
    # P = 0 (no predictions), R = 0 of 3, F1 = 0.
    for notion in ("exact", "overlap"):
        assert row(result, "overall", notion) == (0.0, 0.0, 0.0, 0, 0, 0, 3)
        assert row(result, "overall_any_label", notion) == (0.0, 0.0, 0.0, 0, 0, 0, 3)
    assert row(result, "per_label", FAB, "exact") == (0.0, 0.0, 0.0, 0, 0, 0, 2)


def test_no_gold() -> None:
    # Two clean replies (gold annotations []), the evaluator flagged one span anyway.
    result = score_spans([([S(FAB, 0, 5)], []), ([], [])])
    assert result["messages"] == 2
    # P = 0 of 1, R = 0 (no gold; counts show gold == 0), F1 = 0.
    for notion in ("exact", "overlap"):
        assert row(result, "overall", notion) == (0.0, 0.0, 0.0, 0, 1, 0, 0)
    assert list(result["per_label"]) == [FAB]


def test_gold_labels_filter_drops_benign() -> None:
    pairs = [
        ([S(FAB, 20, 30), S("Benign", 0, 10)], [S("Benign", 0, 10), S(FAB, 20, 30)]),
        ([], [S("Benign", 40, 50)]),
    ]
    unfiltered = score_spans(pairs)
    # Without the filter: 2 of 2 predictions right, 2 of 3 gold found.
    assert row(unfiltered, "overall", "exact") == approx_row(1, 2 / 3, 0.8, 2, 2, 2, 3)

    filtered = score_spans(pairs, gold_labels={FAB, CON})
    # Benign gold dropped -> 1 gold. The Benign prediction is kept and is now a false positive:
    # P = 1/2, R = 1/1, F1 = 2 * (1/2) / (3/2) = 2/3.
    assert row(filtered, "overall", "exact") == approx_row(1 / 2, 1, 2 / 3, 1, 2, 1, 1)
    # Per-label rows: every label seen in predictions or filtered gold (CON seen in neither).
    assert list(filtered["per_label"]) == ["Benign", FAB]
    assert row(filtered, "per_label", "Benign", "exact") == (0.0, 0.0, 0.0, 0, 1, 0, 0)
    assert row(filtered, "per_label", FAB, "exact") == approx_row(1, 1, 1, 1, 1, 1, 1)
    # Any-label view: gold is still filtered (1 span), both predictions counted.
    assert row(filtered, "overall_any_label", "exact") == approx_row(1 / 2, 1, 2 / 3, 1, 2, 1, 1)


def test_gold_labels_must_not_be_a_string() -> None:
    with pytest.raises(TypeError):
        score_spans([], gold_labels=FAB)


def test_duplicate_and_nested_gold() -> None:
    # Gold: Fab[0,50) with Fab[10,20) nested inside it, and Fab[10,20) listed twice.
    # Duplicates collapse, so there are 2 gold spans. One prediction Fab[5,25).
    pairs = [([S(FAB, 5, 25)], [S(FAB, 0, 50), S(FAB, 10, 20), S(FAB, 10, 20)])]
    result = score_spans(pairs)
    # exact: nothing identical. P = 0/1, R = 0/2.
    assert row(result, "overall", "exact") == (0.0, 0.0, 0.0, 0, 1, 0, 2)
    # overlap: the prediction meets both gold spans: P = 1/1, R = 2/2.
    assert row(result, "overall", "overlap") == approx_row(1, 1, 1, 1, 1, 2, 2)


def test_duplicate_gold_exact_hit() -> None:
    # A gold span listed twice and predicted once (and a prediction listed twice): 1 of 1 each way.
    result = score_spans([([S(FAB, 3, 9), S(FAB, 3, 9)], [S(FAB, 3, 9), S(FAB, 3, 9)])])
    assert row(result, "overall", "exact") == approx_row(1, 1, 1, 1, 1, 1, 1)


def test_same_range_different_labels_any_label_collapses() -> None:
    # Two gold labels on the same text; predicted once with one of them.
    result = score_spans([([S(FAB, 0, 10)], [S(FAB, 0, 10), S(CON, 0, 10)])])
    # Label-matched: P = 1/1, R = 1/2, F1 = 2/3.
    assert row(result, "overall", "exact") == approx_row(1, 1 / 2, 2 / 3, 1, 1, 1, 2)
    # Labels ignored: one range each side -> 1 of 1.
    assert row(result, "overall_any_label", "exact") == approx_row(1, 1, 1, 1, 1, 1, 1)


def test_one_prediction_covering_two_gold_and_two_predictions_on_one_gold() -> None:
    pairs = [
        ([S(FAB, 0, 100)], [S(FAB, 10, 20), S(FAB, 30, 40)]),  # 1 pred -> 2 gold
        ([S(FAB, 0, 5), S(FAB, 3, 8)], [S(FAB, 0, 10)]),  # 2 preds -> 1 gold
    ]
    result = score_spans(pairs)
    # overlap: tp_pred = 1 + 2 = 3 of 3, tp_gold = 2 + 1 = 3 of 3.
    assert row(result, "overall", "overlap") == approx_row(1, 1, 1, 3, 3, 3, 3)


def test_touching_spans_and_other_parts_do_not_overlap() -> None:
    pairs = [
        ([S(FAB, 5, 9)], [S(FAB, 0, 5)]),  # touching at 5: overlap length 0
        ([S(FAB, 0, 5, part=1)], [S(FAB, 0, 5, part=0)]),  # same offsets, different part
    ]
    result = score_spans(pairs)
    for section in ("overall", "overall_any_label"):
        for notion in ("exact", "overlap"):
            assert row(result, section, notion) == (0.0, 0.0, 0.0, 0, 2, 0, 2)


def test_matches_stay_within_a_message() -> None:
    # The same span in two different messages is not a match.
    result = score_spans([([S(FAB, 0, 5)], []), ([], [S(FAB, 0, 5)])])
    assert row(result, "overall", "exact") == (0.0, 0.0, 0.0, 0, 1, 0, 1)


def test_streaming_generator() -> None:
    pulled = 0

    def stream() -> Iterator[tuple[list[LabelledSpan], list[LabelledSpan]]]:
        nonlocal pulled
        for pair in SMALL_CASE:
            pulled += 1
            yield pair

    source = stream()
    assert score_spans(source) == score_spans(SMALL_CASE)
    assert pulled == 3
    assert next(source, None) is None


def test_deterministic() -> None:
    first = score_spans(SMALL_CASE)
    assert first == score_spans(SMALL_CASE)
    assert list(score_spans(list(reversed(SMALL_CASE)))["per_label"]) == list(first["per_label"])


def test_span_validation() -> None:
    with pytest.raises(ValueError):
        LabelledSpan(FAB, 5, 4)
    with pytest.raises(ValueError):
        LabelledSpan(FAB, -1, 4)


# --- parse_gold_line ---------------------------------------------------------------------------

GOOD_LINE: dict[str, Any] = {
    "conversation_id": "ragtruth-15175",
    "message_index": 1,
    "part_index": 0,
    "annotations": [
        {
            "label": FAB,
            "source_label": "Evident Baseless Info",
            "start_offset": 59,
            "end_offset": 80,
            "text": "of an unknown illness",
        },
        {"label": "Benign", "source_label": "x", "start_offset": 0, "end_offset": 4, "text": "Some"},
    ],
}


def test_parse_gold_line() -> None:
    conversation_id, spans = parse_gold_line(GOOD_LINE)
    assert conversation_id == "ragtruth-15175"
    assert spans == [S(FAB, 59, 80), S("Benign", 0, 4)]


def test_parse_gold_line_empty_annotations_and_part_index() -> None:
    assert parse_gold_line({"conversation_id": "c", "message_index": 0, "annotations": []}) == ("c", [])
    line = {"conversation_id": "c", "message_index": 3, "part_index": 2,
            "annotations": [{"label": FAB, "start_offset": 1, "end_offset": 2}]}
    assert parse_gold_line(line) == ("c", [S(FAB, 1, 2, part=2)])


def _with(**changes) -> dict:
    line = {**GOOD_LINE, "annotations": [dict(a) for a in GOOD_LINE["annotations"]]}
    line.update(changes)
    return line


def _with_annotation(**changes) -> dict:
    line = _with()
    line["annotations"][0].update(changes)
    return line


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ([1, 2], "JSON object"),
        ({k: v for k, v in GOOD_LINE.items() if k != "conversation_id"}, "conversation_id"),
        (_with(conversation_id=""), "conversation_id"),
        (_with(conversation_id=15175), "conversation_id"),
        ({k: v for k, v in GOOD_LINE.items() if k != "message_index"}, "message_index"),
        (_with(message_index="1"), "message_index"),
        (_with(message_index=True), "message_index"),
        (_with(message_index=-1), "message_index"),
        (_with(part_index=None), "part_index"),
        (_with(annotations=None), "annotations"),
        ({k: v for k, v in GOOD_LINE.items() if k != "annotations"}, "annotations"),
        (_with(annotations=["Fabrication"]), r"annotations\[0\]"),
        (_with_annotation(label=None), r"annotations\[0\].*label"),
        (_with_annotation(label=""), "label"),
        (_with_annotation(start_offset="59"), "start_offset"),
        (_with_annotation(end_offset=80.0), "end_offset"),
        (_with_annotation(start_offset=-3), "start_offset"),
        (_with_annotation(end_offset=59), "greater than"),
        (_with_annotation(end_offset=10), "greater than"),
    ],
)
def test_parse_gold_line_errors(obj, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_gold_line(obj)


def test_parse_gold_line_missing_offset() -> None:
    line = _with()
    del line["annotations"][1]["end_offset"]
    with pytest.raises(ValueError, match=r"annotations\[1\]: missing 'end_offset'"):
        parse_gold_line(line)
