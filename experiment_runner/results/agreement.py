"""Character-level agreement between two sets of labelled spans on the same replies (pure functions).

Every character of every scored reply part is one unit; each of the two annotators (A, and B the
reference) gives it the set of labels whose spans cover it (empty: no issue). Cohen's kappa is
(p_o - p_e) / (1 - p_e), with p_o the share of characters given the same set and p_e the agreement
expected by chance from each side's own shares of each set.

* ``overall``: the categories are the label sets, so two spans agree only where their labels match.
* ``per_label[L]``: yes/no per character, "covered by a span labelled L".
* When chance agreement is 1 (both sides put every character in the same single category, e.g. no
  span anywhere), kappa is 1.0 if they agree everywhere (they must): reported, not undefined.

Spans are clipped to their part's length. Counting walks the segments between span boundaries, so
the cost grows with the number of spans, not of characters.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any, TypedDict

from experiment_runner.results.span_scores import LabelledSpan

Reply = tuple[Sequence[int], Sequence[LabelledSpan], Sequence[LabelledSpan]]
"""One reply: the length of each part, A's spans, B's spans."""

Cell = tuple[frozenset[str], frozenset[str]]


def _segments(length: int, a: Sequence[LabelledSpan], b: Sequence[LabelledSpan]) -> Iterable[tuple[int, Cell]]:
    """(characters, (A's labels, B's labels)) for each run of characters with the same labels on both sides."""
    spans = [(max(0, s.start), min(length, s.end), s.label, side) for side, group in ((0, a), (1, b)) for s in group]
    spans = [s for s in spans if s[0] < s[1]]
    points = sorted({0, length, *(s[0] for s in spans), *(s[1] for s in spans)})
    for start, end in zip(points, points[1:], strict=False):
        labels = (frozenset(s[2] for s in spans if s[3] == 0 and s[0] <= start and end <= s[1]),
                  frozenset(s[2] for s in spans if s[3] == 1 and s[0] <= start and end <= s[1]))
        yield end - start, labels


def joint_counts(replies: Iterable[Reply]) -> Counter[Cell]:
    """Characters per (A's label set, B's label set) over every part of every reply."""
    joint: Counter[Cell] = Counter()
    for lengths, a, b in replies:
        for index, length in enumerate(lengths):
            mine = [s for s in a if s.part_index == index]
            theirs = [s for s in b if s.part_index == index]
            for size, cell in _segments(length, mine, theirs):
                joint[cell] += size
    return joint


class Kappa(TypedDict):
    kappa: float | None
    observed_agreement: float | None
    expected_agreement: float | None
    characters: int


class CharKappa(TypedDict):
    overall: Kappa  # over label sets
    per_label: dict[str, Kappa]  # yes/no per label


def kappa(joint: Counter[Any]) -> Kappa:
    """Cohen's kappa from counts of (A's category, B's category) pairs, with p_o, p_e and the number of units."""
    total = sum(joint.values())
    if total == 0:
        return {"kappa": None, "observed_agreement": None, "expected_agreement": None, "characters": 0}
    observed = sum(n for (x, y), n in joint.items() if x == y) / total
    share_a: Counter[Any] = Counter()
    share_b: Counter[Any] = Counter()
    for (x, y), n in joint.items():
        share_a[x] += n
        share_b[y] += n
    expected = sum(share_a[k] * share_b[k] for k in share_a) / total**2
    value = 1.0 if expected >= 1.0 else (observed - expected) / (1.0 - expected)
    return {"kappa": value, "observed_agreement": observed, "expected_agreement": expected, "characters": total}


def char_kappa(replies: Iterable[Reply]) -> CharKappa:
    """`{"overall": kappa over label sets, "per_label": {label: yes/no kappa}}`, labels sorted."""
    joint = joint_counts(replies)
    labels = sorted({label for a, b in joint for label in a | b})
    per_label: dict[str, Kappa] = {}
    for label in labels:
        binary: Counter[tuple[bool, bool]] = Counter()
        for (a, b), n in joint.items():
            binary[(label in a, label in b)] += n
        per_label[label] = kappa(binary)
    return {"overall": kappa(joint), "per_label": per_label}
