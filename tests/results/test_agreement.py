"""Character-level Cohen's kappa (issue 24): hand-computed small cases."""

from collections import Counter

import pytest

from experiment_runner.results.agreement import char_kappa, joint_counts, kappa
from experiment_runner.results.span_scores import LabelledSpan as S


def test_identical_spans_give_kappa_one() -> None:
    result = char_kappa([([10], [S("F", 0, 5)], [S("F", 0, 5)])])
    assert result["overall"] == {"kappa": 1.0, "observed_agreement": 1.0, "expected_agreement": 0.5, "characters": 10}
    assert result["per_label"]["F"]["kappa"] == 1.0


def test_disjoint_halves_give_kappa_minus_one() -> None:
    result = char_kappa([([10], [S("F", 0, 5)], [S("F", 5, 10)])])
    assert result["overall"]["observed_agreement"] == 0.0
    assert result["overall"]["expected_agreement"] == 0.5
    assert result["overall"]["kappa"] == -1.0


def test_nested_spans_by_hand() -> None:
    """A marks [0,4), B marks [0,2) of 10 characters: p_o = 0.8, p_e = .4*.2 + .6*.8 = 0.56, kappa = 0.24/0.44."""
    result = char_kappa([([10], [S("F", 0, 4)], [S("F", 0, 2)])])
    assert result["overall"]["observed_agreement"] == pytest.approx(0.8)
    assert result["overall"]["expected_agreement"] == pytest.approx(0.56)
    assert result["overall"]["kappa"] == pytest.approx(0.24 / 0.44)


def test_labels_must_match_overall_but_each_label_is_yes_no() -> None:
    """Same characters, other labels: overall disagreement there; per label each side's marks alone."""
    result = char_kappa([([4], [S("F", 0, 2)], [S("R", 0, 2)])])
    # overall categories {F},{} vs {R},{}: p_o = 2/4; p_e = (2*0 + 2*2 + 0*2)/16 = 0.25 -> kappa = (0.5-0.25)/0.75
    assert result["overall"]["kappa"] == pytest.approx(1 / 3)
    # label F: A yes on 2, B never: p_o = 0.5, p_e = 0.5*0 + 0.5*1 = 0.5 -> kappa 0
    assert result["per_label"]["F"]["kappa"] == pytest.approx(0.0)
    assert sorted(result["per_label"]) == ["F", "R"]


def test_parts_are_separate_units_and_spans_are_clipped() -> None:
    joint = joint_counts([([3, 4], [S("F", 0, 3, part_index=1)], [S("F", 1, 99, part_index=1)])])
    none, f = frozenset[str](), frozenset({"F"})
    assert joint == Counter({(none, none): 3 + 0, (f, none): 1, (f, f): 2, (none, f): 1})


def test_nothing_marked_anywhere_is_perfect_agreement_and_no_characters_is_undefined() -> None:
    assert char_kappa([([5], [], [])])["overall"]["kappa"] == 1.0
    assert kappa(Counter())["kappa"] is None
