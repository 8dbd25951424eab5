"""Paired statistics for comparing two experiments on the same items (pure functions, no I/O, no numpy).

Two tests, both two-sided at 95% by default, each returning a difference (B - A), a confidence
interval and a p-value that agree with each other: the interval excludes 0 exactly when p < alpha.

* **Yes/no per item** (has an issue, has a span of label L): the exact McNemar test. Only discordant
  pairs carry information: `worse` items are yes in B and no in A, `better` the reverse. Under "no
  change" `worse` ~ Binomial(worse + better, 1/2); p = twice the smaller tail, capped at 1. The
  interval is the exact (Clopper-Pearson) interval for the share theta = worse / discordant, mapped to
  the difference (discordant / n) * (2 * theta - 1): conditional on the number of discordant pairs,
  and it excludes 0 exactly when the test rejects.
* **Numbers per item** (issues per message): a seeded paired bootstrap of the mean difference.
  Items are resampled with replacement as pairs; the interval is the percentile interval, and
  p = 2 * (the smaller share of resampled means on either side of 0, counted with +1 smoothing),
  capped at 1. Its order statistics are chosen so that the interval excludes 0 exactly when p < alpha.
  Like every percentile bootstrap it is optimistic on a handful of changed items (then the yes/no
  metrics' exact test is the safer read).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, TypedDict, cast

ALPHA = 0.05
RESAMPLES = 2000
SEED = 20240601


class PairedDict(TypedDict):
    """`PairedResult.as_dict`: a paired metric as JSON."""

    a: float
    b: float
    difference: float
    ci_low: float
    ci_high: float
    p_value: float
    significant: bool
    method: str


@dataclass(frozen=True)
class Paired:
    """One metric on paired items: A's and B's value, B - A, its interval, p-value and the test used."""

    a: float
    b: float
    difference: float
    ci_low: float
    ci_high: float
    p_value: float
    significant: bool
    method: str

    def as_dict(self) -> PairedDict:
        return cast(PairedDict, asdict(self))


# --- binomial tails ------------------------------------------------------------------------------


def _log_pmf(n: int, k: int, p: float) -> float:
    if p <= 0.0:
        return 0.0 if k == 0 else -math.inf
    if p >= 1.0:
        return 0.0 if k == n else -math.inf
    log_choose = math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
    return log_choose + k * math.log(p) + (n - k) * math.log1p(-p)


def binomial_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p), summed in log space (exact integers when p = 1/2 and n is small)."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    if p == 0.5 and n <= 1000:
        return float(sum(math.comb(n, i) for i in range(k + 1)) / 2**n)  # int / int: correctly rounded
    logs = [_log_pmf(n, i, p) for i in range(k + 1)]
    top = max(logs)
    if top == -math.inf:
        return 0.0
    return min(1.0, math.exp(top) * sum(math.exp(x - top) for x in logs))


def binomial_sf(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p)."""
    return binomial_cdf(n - k, n, 1.0 - p)  # X >= k  <=>  n - X <= n - k, and n - X ~ Binomial(n, 1 - p)


def _solve(function: Any, target: float) -> float:
    """The p in [0, 1] where the increasing `function(p)` reaches `target` (bisection)."""
    low, high = 0.0, 1.0
    for _ in range(60):
        middle = (low + high) / 2
        if function(middle) < target:
            low = middle
        else:
            high = middle
    return (low + high) / 2


def clopper_pearson(successes: int, trials: int, alpha: float = ALPHA) -> tuple[float, float]:
    """The exact two-sided (1 - alpha) interval for a binomial proportion."""
    if trials == 0:
        return 0.0, 1.0
    low = 0.0 if successes == 0 else _solve(lambda p: binomial_sf(successes, trials, p), alpha / 2)
    high = 1.0 if successes == trials else _solve(lambda p: 1.0 - binomial_cdf(successes, trials, p), 1.0 - alpha / 2)
    return low, high


def mcnemar_exact(worse: int, better: int) -> float:
    """Two-sided exact McNemar p-value for `worse` vs `better` discordant pairs (1.0 when there are none)."""
    discordant = worse + better
    if discordant == 0:
        return 1.0
    return min(1.0, 2 * binomial_cdf(min(worse, better), discordant, 0.5))


# --- the two paired tests ------------------------------------------------------------------------


def paired_binary(a: Sequence[bool], b: Sequence[bool], alpha: float = ALPHA) -> Paired:
    """Shares of yes in A and B over the same items, B - A, exact McNemar p-value and interval."""
    if len(a) != len(b):
        raise ValueError("paired samples must have the same length")
    n = len(a)
    if n == 0:
        return Paired(0.0, 0.0, 0.0, 0.0, 0.0, 1.0, False, "mcnemar_exact")
    worse = sum(1 for x, y in zip(a, b, strict=True) if y and not x)
    better = sum(1 for x, y in zip(a, b, strict=True) if x and not y)
    discordant = worse + better
    p_value = mcnemar_exact(worse, better)
    low, high = clopper_pearson(worse, discordant, alpha) if discordant else (0.5, 0.5)
    scale = discordant / n
    share_a, share_b = sum(map(bool, a)) / n, sum(map(bool, b)) / n
    return Paired(
        share_a, share_b, (worse - better) / n, scale * (2 * low - 1), scale * (2 * high - 1),
        p_value, p_value < alpha, "mcnemar_exact",
    )


def paired_bootstrap(
    a: Sequence[float], b: Sequence[float], *, resamples: int = RESAMPLES, seed: int = SEED, alpha: float = ALPHA
) -> Paired:
    """Means of A and B over the same items, B - A, and a seeded paired percentile bootstrap of it."""
    if len(a) != len(b):
        raise ValueError("paired samples must have the same length")
    n = len(a)
    if n == 0:
        return Paired(0.0, 0.0, 0.0, 0.0, 0.0, 1.0, False, "paired_bootstrap")
    differences = [y - x for x, y in zip(a, b, strict=True)]
    rng = random.Random(seed)
    means = sorted(sum(rng.choices(differences, k=n)) / n for _ in range(resamples))
    k = max(0, math.ceil(alpha / 2 * resamples) - 1)  # chosen so that "excludes 0" matches "p < alpha"
    low, high = means[k], means[resamples - 1 - k]
    at_or_below = sum(1 for m in means if m <= 0)
    at_or_above = sum(1 for m in means if m >= 0)
    p_value = min(1.0, 2 * (min(at_or_below, at_or_above) + 1) / (resamples + 1))
    return Paired(
        sum(a) / n, sum(b) / n, sum(differences) / n, low, high, p_value, low > 0 or high < 0, "paired_bootstrap"
    )
