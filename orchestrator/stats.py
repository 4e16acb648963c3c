"""Paired statistics for comparing two methods over seeds: an interval, a test, a verdict and a seed count.

Every method of a seed shares its initial weights, rewind weights and data order, so the per-seed
differences d_i = b_i - a_i are the unit of analysis (a paired design). Two different methods answer two
different questions here, on purpose:

- the INTERVAL for the mean difference is the paired Student t interval, mean(d) ± t_{n-1} · sd(d)/√n (what
  `scipy.stats.ttest_rel(b, a).confidence_interval()` gives). It assumes roughly normal differences and is
  exact for them at any n >= 2.
- the TEST (p-value, verdict) is the exact paired sign-flip permutation test of the mean difference,
  `scipy.stats.permutation_test(..., permutation_type="samples")`: under "no difference" each d_i is as
  likely to be +|d_i| as -|d_i|, so all 2^n sign patterns are equally likely, and the two-sided p-value is the
  share of patterns whose mean is at least as far from 0 as the observed one. It assumes only that the
  differences are symmetric about 0 under the null, not that they are normal. Up to 16 pairs every pattern
  is enumerated ("exact"); beyond, a seeded Monte Carlo sample of patterns is used ("monte-carlo").

Because they are different procedures they can disagree near the boundary: the t interval may just exclude
0 while the permutation p-value is just above alpha, or the reverse (an outlier widens the t interval but
hardly moves the sign-pattern rank). The verdict follows the permutation test alone; the interval says how
large the difference plausibly is.

The exact test has a floor: the observed pattern and its mirror image are at best the two most extreme of
2^n, so p >= 2 / 2^n. With n <= 5 pairs that is >= 2/32 = 6.25 %, so no data at all can reach p < 0.05;
6 pairs are the least that can (2/64 = 3.1 %). `min_p` and `can_reject` report this for the n at hand.

Only numpy is imported here; scipy is imported inside the functions that use it, so the driver, which imports
orchestrator modules, does not pay for it.
"""
from __future__ import annotations

import inspect
import math
from dataclasses import dataclass

import numpy as np

# 2^16 sign patterns: the test is exact for up to 16 pairs, and Monte Carlo with this many patterns beyond.
DEFAULT_RESAMPLES = 2 ** 16
POWER = 0.80
# seeds_for_power gives up (None) beyond this: no sweep will run more seeds than that.
POWER_SEARCH_LIMIT = 100_000

A_BETTER, B_BETTER, NO_DIFFERENCE = "A better", "B better", "no difference detected"


@dataclass(frozen=True)
class PairedResult:
    """The comparison of paired samples a and b (difference b - a; higher is better).

    n: pairs used. dropped: pairs left out because a or b was NaN. alpha: the test's level; the interval's
    level is 1 - alpha.
    mean_diff, sd_diff (ddof=1), effect_size (mean_diff / sd_diff; ±inf when every pair differs by the same
    nonzero amount): the differences.
    ci_low, ci_high: the paired t interval (NaN for n < 2; zero width when every difference is the same).
    p_value: two-sided sign-flip permutation test (NaN for n < 2). test: "exact", "monte-carlo" or "none".
    verdict: A_BETTER, B_BETTER or NO_DIFFERENCE, from p_value < alpha and the sign of mean_diff.
    min_p: the smallest p-value the test can give with these pairs: 2 / 2^m for m nonzero differences (a
    zero difference has no sign to flip), and at least 2 / (n_resamples + 1) Monte Carlo. can_reject:
    min_p < alpha, the verdict's rule.
    seeds_for_power: when no difference was detected, the pairs needed to detect a difference of the
    observed effect size with 80 % power (`seeds_for_power()`); None when a difference was detected, the
    observed difference is zero, or more than POWER_SEARCH_LIMIT pairs would be needed.
    note: why a field is missing or the verdict is limited, in words ("" when there is nothing to say).
    """

    n: int
    dropped: int
    alpha: float
    mean_diff: float
    sd_diff: float
    effect_size: float
    ci_low: float
    ci_high: float
    p_value: float
    test: str
    verdict: str
    min_p: float
    can_reject: bool
    seeds_for_power: int | None
    note: str


def paired_difference(a, b, *, alpha: float = 0.05, n_resamples: int = DEFAULT_RESAMPLES,
                      seed: int = 0) -> PairedResult:
    """Compare paired samples a and b (same length, pair i = seed i) by their differences b - a.

    Pairs where either side is NaN are dropped and counted. Never raises for small or degenerate samples:
    n < 2 gives no interval and no test, and the note says so. Raises ValueError only for arrays of
    different lengths or an alpha outside (0, 1).
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be between 0 and 1, got {alpha!r}")
    a, b = np.asarray(a, dtype=float).ravel(), np.asarray(b, dtype=float).ravel()
    if a.shape != b.shape:
        raise ValueError(f"paired samples need the same length, got {a.size} and {b.size}")
    keep = ~(np.isnan(a) | np.isnan(b))
    d = b[keep] - a[keep]
    n, dropped = int(d.size), int((~keep).sum())
    floor_n = smallest_rejecting_n(alpha)
    notes = [f"{dropped} pair(s) with a missing value left out"] if dropped else []
    mean = float(d.mean()) if n else math.nan
    if n < 2:
        notes.append(f"n={n}: an interval needs >= 2 pairs and the test >= {floor_n}")
        return PairedResult(n=n, dropped=dropped, alpha=alpha, mean_diff=mean, sd_diff=math.nan,
                            effect_size=math.nan, ci_low=math.nan, ci_high=math.nan, p_value=math.nan,
                            test="none", verdict=NO_DIFFERENCE, min_p=math.nan, can_reject=False,
                            seeds_for_power=None, note="; ".join(notes))
    sd = float(d.std(ddof=1))
    low, high = t_bounds(mean, sd, n, 1.0 - alpha)
    p, test = sign_flip_pvalues(d, n_resamples=n_resamples, seed=seed)
    p = float(p)
    # Flipping a zero difference changes nothing, so only the nonzero pairs count towards the smallest p.
    nonzero = int(np.count_nonzero(d))
    min_p = max(2.0 / 2 ** nonzero, 2.0 / 2 ** n if test == "exact" else 2.0 / (n_resamples + 1))
    can_reject = min_p < alpha
    if p < alpha:
        verdict = B_BETTER if mean > 0 else A_BETTER
    else:
        verdict = NO_DIFFERENCE
    effect = _effect_size(mean, sd)
    needed = None
    if verdict == NO_DIFFERENCE:
        needed = seeds_for_power(effect, alpha=alpha)
        if needed is not None and 0 < nonzero < n:  # ties recur at the same rate in more seeds
            needed = max(needed, math.ceil(floor_n * n / nonzero))
    if can_reject or nonzero == 0:
        pass  # all-zero differences are said below
    elif test == "exact" and n < floor_n:
        notes.append(f"n={n} can never reach p<{alpha:g}; needs >= {floor_n} seeds")
    elif nonzero < floor_n:
        notes.append(f"n={n} with {n - nonzero} zero difference(s): {nonzero} nonzero pair(s) can never reach "
                     f"p<{alpha:g}; needs >= {floor_n} pairs that differ")
    else:
        notes.append(f"{n_resamples} Monte Carlo sign patterns can never reach p<{alpha:g}")
    if sd == 0.0:
        notes.append("all differences are zero" if mean == 0.0
                     else "every pair differs by the same amount")
    return PairedResult(n=n, dropped=dropped, alpha=alpha, mean_diff=mean, sd_diff=sd, effect_size=effect,
                        ci_low=float(low), ci_high=float(high), p_value=p, test=test, verdict=verdict,
                        min_p=min_p, can_reject=can_reject, seeds_for_power=needed, note="; ".join(notes))


def _effect_size(mean: float, sd: float) -> float:
    if sd > 0:
        return mean / sd
    return 0.0 if mean == 0 else math.copysign(math.inf, mean)


def mean_interval(values, level: float = 0.95) -> tuple[float, float]:
    """The Student t interval of the mean of `values` (one per seed), NaNs dropped; (nan, nan) for n < 2."""
    x = np.asarray(values, dtype=float).ravel()
    x = x[~np.isnan(x)]
    if x.size < 2:
        return math.nan, math.nan
    low, high = t_bounds(x.mean(), x.std(ddof=1), x.size, level)
    return float(low), float(high)


def t_bounds(mean, sd, n, level: float = 0.95):
    """mean ± t_{n-1, (1+level)/2} · sd / √n, elementwise over arrays (scipy.stats.t for the quantile).

    The same numbers as `scipy.stats.ttest_rel(b, a).confidence_interval(level)` for the differences, but
    vectorised, and well defined (zero width) when sd is 0, where ttest_rel returns NaN."""
    from scipy import stats

    mean, sd, n = np.asarray(mean, dtype=float), np.asarray(sd, dtype=float), np.asarray(n, dtype=float)
    half = stats.t.ppf(0.5 + level / 2.0, n - 1) * sd / np.sqrt(n)
    return mean - half, mean + half


def _mean(x, axis):
    return np.mean(x, axis=axis)


def sign_flip_pvalues(diffs, *, n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0):
    """Two-sided paired sign-flip permutation p-values of the mean of `diffs` along its last axis.

    One call tests every row of a 2-D array (one simulated sweep a row) with the same sign patterns;
    `paired_difference` calls it with one row. Exact when 2^n <= n_resamples, else Monte Carlo with a
    generator seeded by `seed`. Returns (p-values with the leading shape, "exact" or "monte-carlo")."""
    from scipy import stats

    d = np.asarray(diffs, dtype=float)
    n = d.shape[-1]
    test = "exact" if 2 ** n <= n_resamples else "monte-carlo"
    result = stats.permutation_test((d,), _mean, permutation_type="samples", vectorized=True,
                                    n_resamples=n_resamples, batch=_batch(d.size, n, min(n_resamples, 2 ** n)),
                                    alternative="two-sided", axis=-1,
                                    **_rng_argument(stats.permutation_test, seed))
    return result.pvalue, test


def _batch(size: int, n: int, resamples: int) -> int:
    # Bounded memory: scipy evaluates `batch` resamples of every row at once (~128 MiB of float64 here).
    rows = max(1, size // max(1, n))
    return max(1, min(resamples, 2 ** 24 // (rows * max(1, n))))


def _rng_argument(func, seed: int) -> dict:
    # scipy >= 1.15 calls it `rng`; older releases (we allow >= 1.11) only know `random_state`.
    name = "rng" if "rng" in inspect.signature(func).parameters else "random_state"
    return {name: np.random.default_rng(seed)}


def smallest_rejecting_n(alpha: float = 0.05) -> int:
    """The fewest pairs at which the exact two-sided sign-flip test can give p < alpha (2 / 2^n < alpha, the
    verdict's rule); 6 for alpha = 0.05."""
    n = 1
    while 2.0 / 2 ** n >= alpha:
        n += 1
    return n


def t_test_power(effect_size: float, n, alpha: float = 0.05):
    """Power of the two-sided paired t test at `n` pairs for a true effect size mean/sd, from the noncentral
    t distribution (scipy.stats.nct): P(|T| > t_{n-1, 1-alpha/2}) with T ~ nct(n-1, effect_size·√n)."""
    from scipy import stats

    n = np.asarray(n, dtype=float)
    df = n - 1
    crit = stats.t.ppf(1.0 - alpha / 2.0, df)
    nc = abs(effect_size) * np.sqrt(n)
    power = stats.nct.sf(crit, df, nc) + stats.nct.cdf(-crit, df, nc)
    # scipy's nct gives NaN for large noncentralities (~> 40), where the normal limit is exact to many
    # digits (and the power is 1 for any practical purpose).
    return np.where(np.isnan(power), stats.norm.sf(crit - nc) + stats.norm.cdf(-crit - nc), power)


def seeds_for_power(effect_size: float, *, alpha: float = 0.05, power: float = POWER) -> int | None:
    """The fewest pairs at which a true difference of `effect_size` (mean/sd of the differences) is detected
    with probability `power` at `alpha`.

    Estimated with the paired t test's power (noncentral t), which the sign-flip permutation test matches
    closely for normal differences once it can reject at all (simulated, the permutation test needs the
    estimate or one pair more: tests/test_stats.py); never below `smallest_rejecting_n(alpha)`,
    because below that the permutation test cannot reject whatever the effect. None for a zero or undefined
    effect, or when more than POWER_SEARCH_LIMIT pairs would be needed. Computed from an observed effect
    size this is a planning figure: at small n the observed effect is itself uncertain.
    """
    floor_n = smallest_rejecting_n(alpha)
    if math.isnan(effect_size) or effect_size == 0.0:
        return None
    if math.isinf(effect_size):
        return floor_n
    if t_test_power(effect_size, floor_n, alpha) >= power:
        return floor_n
    low, high = floor_n, 2 * floor_n
    while t_test_power(effect_size, high, alpha) < power:  # doubling keeps the noncentrality moderate
        if high >= POWER_SEARCH_LIMIT:
            return None
        low, high = high, min(2 * high, POWER_SEARCH_LIMIT)
    # power(low) < target <= power(high), and power grows with n.
    while high - low > 1:
        mid = (low + high) // 2
        if t_test_power(effect_size, mid, alpha) >= power:
            high = mid
        else:
            low = mid
    return high


def bootstrap_interval(a, b, *, level: float = 0.95, n_resamples: int = 9999, method: str = "BCa",
                       seed: int = 0) -> tuple[float, float]:
    """A bootstrap interval for the mean of b - a, `scipy.stats.bootstrap(..., paired=True)`, NaN pairs
    dropped; (nan, nan) for n < 2.

    An alternative to the t interval when the differences are far from normal, but it UNDER-COVERS at the
    seed counts sweeps use: resampling 5 values cannot show how wide the tails are. tests/test_stats.py
    measures 82 % coverage for a nominal 95 % BCa interval at n = 5 normal pairs and 91 % at n = 10 (the
    t interval: 95 % at both); prefer the t interval at these seed counts."""
    a, b = np.asarray(a, dtype=float).ravel(), np.asarray(b, dtype=float).ravel()
    if a.shape != b.shape:
        raise ValueError(f"paired samples need the same length, got {a.size} and {b.size}")
    keep = ~(np.isnan(a) | np.isnan(b))
    a, b = a[keep], b[keep]
    if a.size < 2:
        return math.nan, math.nan
    d = b - a
    if np.all(d == d[0]):
        return float(d[0]), float(d[0])  # every resample has the same mean; scipy would warn and give NaN
    low, high = bootstrap_bounds(a, b, level=level, n_resamples=n_resamples, method=method, seed=seed)
    return float(low), float(high)


def _mean_difference(b, a, axis):
    return np.mean(b - a, axis=axis)


def bootstrap_bounds(a, b, *, level: float = 0.95, n_resamples: int = 9999, method: str = "BCa",
                     seed: int = 0):
    """`bootstrap_interval` without the NaN handling, along the last axis of 2-D arrays too (one row per
    simulated sweep). Returns (low, high) arrays."""
    from scipy import stats

    b, a = np.asarray(b, dtype=float), np.asarray(a, dtype=float)
    result = stats.bootstrap((b, a), _mean_difference, n_resamples=n_resamples,
                             batch=_batch(b.size, b.shape[-1], n_resamples), vectorized=True, paired=True, axis=-1,
                             confidence_level=level, method=method, **_rng_argument(stats.bootstrap, seed))
    return result.confidence_interval.low, result.confidence_interval.high
