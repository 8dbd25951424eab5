"""Paired statistics (issue 24): known answers checked by hand, and the interval agreeing with the p-value."""

import math
from fractions import Fraction

import pytest

from experiment_runner.results.stats import (
    binomial_cdf,
    binomial_sf,
    clopper_pearson,
    mcnemar_exact,
    paired_binary,
    paired_bootstrap,
)


def test_binomial_tails_by_hand() -> None:
    assert binomial_cdf(0, 10, 0.5) == 1 / 1024
    assert binomial_cdf(2, 10, 0.5) == (1 + 10 + 45) / 1024
    assert binomial_cdf(3, 10, 0.3) == pytest.approx(0.6496107184, abs=1e-12)  # sum of C(10,k) .3^k .7^(10-k), k<=3
    assert binomial_sf(10, 10, 0.5) == 1 / 1024
    assert binomial_sf(0, 7, 0.2) == 1.0
    # beyond the exact-integer path (n > 1000): the log-space sum, against P(X <= n/2) = 1/2 + P(X = n/2)/2
    assert binomial_cdf(1500, 3000, 0.5) == pytest.approx(0.5 + float(Fraction(math.comb(3000, 1500), 2**3001)), rel=1e-9)


def test_mcnemar_exact_known_p_values() -> None:
    assert mcnemar_exact(10, 0) == 2 / 1024 == 0.001953125
    assert mcnemar_exact(0, 10) == 0.001953125
    assert mcnemar_exact(5, 0) == 0.0625  # 2 / 32: five changed items are not enough
    assert mcnemar_exact(8, 2) == pytest.approx(2 * (1 + 10 + 45) / 1024)  # 0.109375
    assert mcnemar_exact(3, 3) == 1.0
    assert mcnemar_exact(0, 0) == 1.0


def test_clopper_pearson_known_intervals() -> None:
    low, high = clopper_pearson(10, 10)
    assert low == pytest.approx(0.025 ** (1 / 10), abs=1e-12) and high == 1.0  # 0.6915...
    low, high = clopper_pearson(0, 5)
    assert low == 0.0 and high == pytest.approx(1 - 0.025 ** (1 / 5), abs=1e-12)  # 0.5218...
    low, high = clopper_pearson(3, 10)  # published table value: 0.0667 to 0.6525
    assert (round(low, 4), round(high, 4)) == (0.0667, 0.6525)


def test_paired_binary_ten_more_issues_in_forty() -> None:
    """10 of 40 items go from no issue to an issue: +25 points, exact p = 2/1024, CI by hand."""
    result = paired_binary([False] * 40, [True] * 10 + [False] * 30)
    theta_low = 0.025 ** (1 / 10)
    assert (result.a, result.b, result.difference) == (0.0, 0.25, 0.25)
    assert result.p_value == 0.001953125
    assert result.ci_low == pytest.approx(0.25 * (2 * theta_low - 1), abs=1e-12)  # 0.0958
    assert result.ci_high == pytest.approx(0.25)
    assert result.significant and result.method == "mcnemar_exact"


def test_paired_binary_identical_and_balanced_are_not_significant() -> None:
    same = paired_binary([True, False, True], [True, False, True])
    assert (same.difference, same.ci_low, same.ci_high, same.p_value, same.significant) == (0.0, 0.0, 0.0, 1.0, False)
    balanced = paired_binary([True] * 3 + [False] * 3, [False] * 3 + [True] * 3)
    assert balanced.difference == 0.0 and balanced.p_value == 1.0 and not balanced.significant
    assert balanced.ci_low < 0 < balanced.ci_high


def test_paired_binary_interval_excludes_zero_exactly_when_p_is_below_alpha() -> None:
    for worse in range(0, 13):
        for better in range(0, 13):
            r = paired_binary([False] * worse + [True] * better + [False] * 20, [True] * worse + [False] * better + [False] * 20)
            assert (r.ci_low > 0 or r.ci_high < 0) == r.significant == (r.p_value < 0.05), (worse, better)


def test_bootstrap_constant_difference_and_no_difference() -> None:
    same = paired_bootstrap([1, 2, 0], [1, 2, 0])
    assert (same.difference, same.ci_low, same.ci_high, same.p_value, same.significant) == (0.0, 0.0, 0.0, 1.0, False)
    shifted = paired_bootstrap([0, 1, 2, 3], [1, 2, 3, 4])  # every pair +1: every resample's mean is +1
    assert (shifted.difference, shifted.ci_low, shifted.ci_high) == (1.0, 1.0, 1.0)
    assert shifted.p_value == pytest.approx(2 / 2001) and shifted.significant


def test_bootstrap_two_items_by_hand() -> None:
    """Differences (0, 1): resampled means 0, 0.5, 1 with chances 1/4, 1/2, 1/4, so the CI is [0, 1] and p ~ 0.5."""
    result = paired_bootstrap([0, 0], [0, 1])
    assert (result.a, result.b, result.difference) == (0.0, 0.5, 0.5)
    assert (result.ci_low, result.ci_high) == (0.0, 1.0)
    assert result.p_value == pytest.approx(0.5, abs=0.05) and not result.significant


def test_bootstrap_is_seeded_and_agrees_with_its_p_value() -> None:
    a, b = [0, 1, 0, 2, 1, 0, 0, 1] * 5, [1, 1, 0, 3, 1, 1, 0, 2] * 5
    assert paired_bootstrap(a, b) == paired_bootstrap(a, b)
    noisy_a, noisy_b = [0, 1, 0, 2, 1, 0, 0, 1] * 2, [1, 0, 0, 3, 1, 1, 0, 0] * 2
    assert paired_bootstrap(noisy_a, noisy_b, seed=1).p_value != paired_bootstrap(noisy_a, noisy_b, seed=2).p_value
    for shift in range(0, 12):
        r = paired_bootstrap([0] * 40, [1] * shift + [0] * (40 - shift) if shift % 2 else [1] * shift + [-1] * 3 + [0] * (37 - shift))
        assert r.significant == (r.p_value < 0.05), shift


def test_unequal_lengths_are_refused() -> None:
    with pytest.raises(ValueError):
        paired_binary([True], [])
    with pytest.raises(ValueError):
        paired_bootstrap([1.0], [])
