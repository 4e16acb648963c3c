"""Paired statistics for comparing two methods over seeds: a test, an interval consistent with it, a verdict
adjusted for the family of comparisons it belongs to, and the seeds a named effect needs.

Every method of a seed shares its initial weights, rewind weights and data order, so the per-seed
differences d_i = b_i - a_i are the unit of analysis (a paired design).

- The TEST is the paired sign-flip permutation test of the mean difference: under "no difference" each d_i is
  as likely to be +|d_i| as -|d_i|, so all 2^n sign patterns are equally likely, and the two-sided p-value is
  the share of patterns whose sum is at least as far from 0 as the observed one. It assumes only that the
  differences are symmetric about 0 under the null, not that they are normal. Accuracies are counts of
  correct test examples, so the test runs on the integer differences of those counts
  (`exact_sign_flip_pvalue`): the null distribution of the signed sum is convolved exactly in integers, so a
  tie is an integer equality and the p-value an exact fraction, at any n. On float accuracies (a store that
  predates the counts) ties are a matter of rounding; that test is scipy's `permutation_test` (exact up to
  16 pairs, seeded Monte Carlo beyond) and the result says it ran on floats (`test_on`).
- The INTERVAL for the mean difference inverts that same test (Hartigan's subset means): a shift δ is in the
  1 - alpha interval exactly when the test of d - δ does not reject at alpha, so "the interval excludes 0" and
  "p < alpha" are one statement. Its bounds are order statistics of the 2^n - 1 means of nonempty subsets
  of the differences; enumerated up to EXACT_INTERVAL_LIMIT pairs, beyond which the paired t interval is
  used (`interval` says which). When fewer pairs are available than the test needs to reject at all, the
  interval is unbounded: no shift can be excluded. The t interval is kept alongside (t_low, t_high).
- MULTIPLICITY: a table of verdicts is a family; `adjust` gives Holm's step-down adjusted p-values (they
  control the chance of any false verdict in the family) or Benjamini-Hochberg q-values (the expected share
  of false verdicts among the verdicts), and `smallest_rejecting_n` the fewest pairs at which the adjusted
  test can reject anything.
- POWER: `seeds_for_power_range` gives the pairs needed to detect an effect the user names with 80 % power,
  from the sd of the differences and its chi-square interval (a range), never from the observed mean.

The exact test has a floor: the observed pattern and its mirror image are at best the two most extreme of
2^n, so p >= 2 / 2^n. With n <= 5 pairs that is >= 2/32 = 6.25 %, so no data at all can reach p < 0.05;
6 pairs are the least that can (2/64 = 3.1 %). `min_p` and `can_reject` report this for the n at hand.

Only numpy is imported here; scipy is imported inside the functions that use it, so the driver, which imports
orchestrator modules, does not pay for it.
"""
from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

# 2^16 sign patterns: the float test is exact for up to 16 pairs, and Monte Carlo with this many beyond.
DEFAULT_RESAMPLES = 2 ** 16
# The inverted-test interval enumerates the 2^n - 1 subset means (8 MB at 20 pairs); the t interval beyond.
EXACT_INTERVAL_LIMIT = 20
POWER = 0.80
# seeds_for_power gives up (None) beyond this: no sweep will run more seeds than that.
POWER_SEARCH_LIMIT = 100_000
ADJUSTMENTS = ("holm", "bh", "none")
DEFAULT_ADJUST = "holm"
# The effect the power figures of `compare` and `report` plan for, in accuracy points, unless --min-effect
# names another: a difference smaller than a point rarely changes which method a paper recommends.
DEFAULT_MIN_EFFECT_POINTS = 1.0
# What a seed whose run failed, diverged or was skipped counts as in a comparison (orchestrator/analysis/compare.py).
FAILURES = ("chance", "exclude")

A_BETTER, B_BETTER, NO_DIFFERENCE = "A better", "B better", "no difference detected"
# n <= 1, or fewer pairs than the (adjusted) test needs to reject anything: not "no difference".
TOO_FEW = "too few seeds"


@dataclass(frozen=True)
class PairedResult:
    """The comparison of paired samples a and b (difference b - a; higher is better).

    n: pairs used. dropped: pairs left out because a or b was NaN or infinite. alpha: the test's level; the
    interval's level is 1 - alpha.
    mean_diff, sd_diff (ddof=1), effect_size (mean_diff / sd_diff; ±inf when every pair differs by the same
    nonzero amount, 0 when every difference is 0): the differences. On counts the "same amount" is exact; on
    floats it is equality to 1e-9 relative (a float difference of equal accuracies is not always 0.0).
    ci_low, ci_high: the interval consistent with the test (`interval`: "sign-flip", the inverted test; "t"
    beyond EXACT_INTERVAL_LIMIT pairs; "none" for n < 2); ±inf when n is too small for the test to reject.
    t_low, t_high: the paired t interval, for reference (NaN for n < 2).
    p_value: two-sided sign-flip test (NaN for n < 2), not adjusted for multiplicity. test: "exact",
    "monte-carlo" or "none". test_on: "counts" (integer correct-example counts, exact) or "floats".
    verdict: A_BETTER, B_BETTER, NO_DIFFERENCE or TOO_FEW, from p_value < alpha and the sign of mean_diff
    (a comparison in a family gets its verdict from the adjusted p-value instead: orchestrator/analysis/compare.py).
    min_p: the smallest p-value the test can give with these pairs: 2 / 2^m for m nonzero differences (a
    zero difference has no sign to flip), and at least 2 / (n_resamples + 1) Monte Carlo. can_reject:
    min_p < alpha, the verdict's rule.
    min_effect: the effect (in the metric's units) the power figures are for, or NaN when none was named.
    seeds_for_power, seeds_for_power_low, seeds_for_power_high: pairs needed to detect min_effect with 80 %
    power, from the sd of the differences, and from the ends of its 95 % chi-square interval
    (`seeds_for_power_range`); None without min_effect, for n < 2, or beyond POWER_SEARCH_LIMIT.
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
    interval: str
    t_low: float
    t_high: float
    p_value: float
    test: str
    test_on: str
    verdict: str
    min_p: float
    can_reject: bool
    min_effect: float
    seeds_for_power: int | None
    seeds_for_power_low: int | None
    seeds_for_power_high: int | None
    note: str


def paired_difference(a, b, *, alpha: float = 0.05, counts=None, min_effect: float | None = None,
                      power_alpha: float | None = None, n_resamples: int = DEFAULT_RESAMPLES,
                      seed: int = 0) -> PairedResult:
    """Compare paired samples a and b (same length, pair i = seed i) by their differences b - a.

    `counts`: optionally (count_a, count_b, unit), integer arrays with a = count_a / unit and b = count_b /
    unit (correct examples out of `unit` test examples): the test and the zero checks then run on the integer
    differences, exactly; the float accuracies are ignored. `min_effect`: an effect in a's and b's units for
    the power figures, computed at `power_alpha` (default alpha; a family adjusted by Holm needs less).

    Pairs where either side is NaN or infinite are dropped and counted. Never raises for small or degenerate
    samples: n < 2 gives no interval and no test, and the note says so. Raises ValueError only for arrays of
    different lengths or an alpha outside (0, 1).
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be between 0 and 1, got {alpha!r}")
    a, b = np.asarray(a, dtype=float).ravel(), np.asarray(b, dtype=float).ravel()
    if a.shape != b.shape:
        raise ValueError(f"paired samples need the same length, got {a.size} and {b.size}")
    keep = np.isfinite(a) & np.isfinite(b)
    infinite = int((~keep & ~(np.isnan(a) | np.isnan(b))).sum())
    n, dropped = int(keep.sum()), int((~keep).sum())
    exact = None
    if counts is not None:
        count_a, count_b, unit = counts
        exact = [int(y) - int(x) for x, y, k in zip(count_a, count_b, keep) if k]
        d = np.array([Fraction(v, unit) for v in exact], dtype=object)
        mean = float(Fraction(sum(exact), n * unit)) if n else math.nan
        d = d.astype(float)
    else:
        d = b[keep] - a[keep]
        mean = float(d.mean()) if n else math.nan
    floor_n = smallest_rejecting_n(alpha)
    notes = [f"{dropped} pair(s) with a missing value left out"] if dropped > infinite else []
    if infinite:
        notes.append(f"{infinite} pair(s) with an infinite value left out")
    empty_power = {"min_effect": math.nan if min_effect is None else float(min_effect), "seeds_for_power": None,
                   "seeds_for_power_low": None, "seeds_for_power_high": None}
    if n < 2:
        notes.append(f"n={n}: an interval needs >= 2 pairs and the test >= {floor_n}")
        return PairedResult(n=n, dropped=dropped, alpha=alpha, mean_diff=mean, sd_diff=math.nan,
                            effect_size=math.nan, ci_low=math.nan, ci_high=math.nan, interval="none",
                            t_low=math.nan, t_high=math.nan, p_value=math.nan, test="none",
                            test_on="counts" if exact is not None else "floats", verdict=TOO_FEW, min_p=math.nan,
                            can_reject=False, **empty_power, note="; ".join(notes))
    if exact is not None:
        all_equal = len(set(exact)) == 1
        nonzero = sum(1 for v in exact if v != 0)
        sd = 0.0 if all_equal else _exact_sd(exact, unit)
        p, test = exact_sign_flip_pvalue(exact), "exact"
    else:
        all_equal = bool(np.allclose(d, d[0], rtol=1e-9, atol=1e-12))
        nonzero = int(np.count_nonzero(~np.isclose(d, 0.0, rtol=0.0, atol=1e-12)))
        sd = 0.0 if all_equal else float(d.std(ddof=1))
        p, test = sign_flip_pvalues(d, n_resamples=n_resamples, seed=seed)
        p = float(p)
    if all_equal and nonzero == 0:
        mean = 0.0
    t_low, t_high = (mean, mean) if sd == 0.0 else (float(v) for v in t_bounds(mean, sd, n, 1.0 - alpha))
    if n <= EXACT_INTERVAL_LIMIT:
        low, high = sign_flip_interval(exact if exact is not None else d, alpha)
        if exact is not None:
            low, high = low / unit, high / unit
        interval = "sign-flip"
    else:
        low, high, interval = t_low, t_high, "t"
        notes.append(f"interval: paired t (more than {EXACT_INTERVAL_LIMIT} pairs)")
    min_p = max(2.0 / 2 ** nonzero, 2.0 / 2 ** n if test == "exact" else 2.0 / (n_resamples + 1))
    can_reject = min_p < alpha
    if not can_reject:
        verdict = TOO_FEW if nonzero else NO_DIFFERENCE
    elif p < alpha:
        verdict = B_BETTER if mean > 0 else A_BETTER
    else:
        verdict = NO_DIFFERENCE
    effect = _effect_size(mean, sd)
    power = empty_power
    if min_effect is not None:
        needed = seeds_for_power_range(min_effect, sd, n, alpha=power_alpha or alpha)
        if 0 < nonzero < n:  # ties recur at the same rate in more seeds
            needed = tuple(None if v is None else max(v, math.ceil(v * n / nonzero)) for v in needed)
        power = {"min_effect": float(min_effect), "seeds_for_power": needed[0], "seeds_for_power_low": needed[1],
                 "seeds_for_power_high": needed[2]}
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
        notes.append("all differences are zero" if nonzero == 0 else "every pair differs by the same amount")
    return PairedResult(n=n, dropped=dropped, alpha=alpha, mean_diff=mean, sd_diff=sd, effect_size=effect,
                        ci_low=float(low), ci_high=float(high), interval=interval, t_low=t_low, t_high=t_high,
                        p_value=p, test=test, test_on="counts" if exact is not None else "floats",
                        verdict=verdict, min_p=min_p, can_reject=can_reject, **power, note="; ".join(notes))


def _exact_sd(diffs: list[int], unit: int) -> float:
    n = len(diffs)
    variance = Fraction(n * sum(v * v for v in diffs) - sum(diffs) ** 2, n * (n - 1) * unit * unit)
    return math.sqrt(variance)


def _effect_size(mean: float, sd: float) -> float:
    if sd > 0:
        return mean / sd
    return 0.0 if mean == 0 else math.copysign(math.inf, mean)


# ---- the exact sign-flip test on integers ----------------------------------------------------------------

def exact_sign_flip_pvalue(diffs: Sequence[int]) -> float:
    """The two-sided paired sign-flip p-value of integer differences, exactly: the share of the 2^n sign
    patterns s whose |Σ s_i·d_i| is at least |Σ d_i|, as a float of the exact fraction
    (`exact_sign_flip_fraction`).

    Zero differences are kept: flipping a zero changes no sum, so they double the patterns and the extreme
    ones alike, and the p-value is the same as with them dropped. No differences at all give 1.0.
    Raises TypeError for a non-integer value (a float that happens to be whole is accepted)."""
    return float(exact_sign_flip_fraction(diffs))


def exact_sign_flip_fraction(diffs: Sequence[int]) -> Fraction:
    """`exact_sign_flip_pvalue` as a Fraction: the null distribution of Σ s_i·|d_i| convolved in integers
    (int64 counts up to 62 pairs, Python integers beyond), so ties are exact integer equalities."""
    values = [_as_int(v) for v in diffs]
    magnitudes = [abs(v) for v in values if v != 0]
    if not magnitudes:
        return Fraction(1)
    g = math.gcd(*magnitudes)  # the test is scale-free: smaller sums, same patterns
    magnitudes = [m // g for m in magnitudes]
    observed = abs(sum(values)) // g
    total = sum(magnitudes)
    dtype = np.int64 if len(magnitudes) <= 62 else object
    # ways[j]: sign patterns of the pairs so far whose signed sum is j - (their total).
    ways, span = np.ones(1, dtype=dtype), 0
    for m in magnitudes:
        grown = np.zeros(span + 2 * m + 1, dtype=dtype)
        grown[:span + 1] += ways
        grown[2 * m:] += ways
        ways, span = grown, span + 2 * m
    sums = np.arange(-total, total + 1)
    extreme = int(ways[np.abs(sums) >= observed].sum())
    return Fraction(extreme, 2 ** len(magnitudes))


def counts_with_failures(correct, failed, examples: int, num_classes: int) -> tuple[np.ndarray, int]:
    """(counts, unit): correct-example counts out of `examples` with every `failed` run at chance (examples /
    num_classes correct, the accuracy of a model that learned nothing), all as integers out of one unit. The
    unit is `examples` when the chance count is whole (10 000 / 10), else examples scaled by the least factor
    that makes it whole. What `compare` and `submit --until-decided` count a failed seed as (FAILURES[0]);
    vectorised, so simulations count failures through it too."""
    correct, failed = np.asarray(correct), np.asarray(failed, dtype=bool)
    scale = num_classes // math.gcd(int(examples), int(num_classes)) if failed.any() else 1
    unit = int(examples) * scale
    return np.where(failed, unit // num_classes, correct.astype(np.int64) * scale).astype(np.int64), unit


def _as_int(value) -> int:
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return int(value)
    raise TypeError(f"the exact sign-flip test needs integer differences, got {value!r}")


def exact_sign_flip_pvalues(rows) -> np.ndarray:
    """`exact_sign_flip_pvalue` of every row of a 2-D integer array (one simulated sweep a row), by
    enumerating the 2^n sign patterns: for simulations, n <= 16. The sums are formed in float64, which holds
    every integer below 2^53 exactly, so the comparisons are exact integer comparisons."""
    d = np.asarray(rows)
    if not np.issubdtype(d.dtype, np.integer):
        raise TypeError(f"exact_sign_flip_pvalues needs an integer array, got {d.dtype}")
    d = np.atleast_2d(d)
    n = d.shape[-1]
    if n > 16:
        raise ValueError(f"enumerating sign patterns is for n <= 16 pairs, got {n}; use exact_sign_flip_pvalue")
    if np.abs(d).sum(axis=-1).max(initial=0) >= 2 ** 53:
        raise ValueError("differences too large for exact float64 sums")
    patterns = 1.0 - 2.0 * ((np.arange(2 ** n)[:, None] >> np.arange(n)) & 1)
    magnitude = np.abs(d).astype(float)
    observed = np.abs(d.sum(axis=-1)).astype(float)
    out = np.empty(d.shape[0])
    step = max(1, 2 ** 22 // 2 ** n)
    for i in range(0, d.shape[0], step):
        sums = np.abs(magnitude[i:i + step] @ patterns.T)
        out[i:i + step] = (sums >= observed[i:i + step, None]).sum(axis=1) / 2 ** n
    return out


# ---- the interval that inverts the test ------------------------------------------------------------------

def sign_flip_interval(diffs, alpha: float = 0.05) -> tuple[float, float]:
    """The 1 - alpha interval for the shift δ of the differences that inverts the two-sided sign-flip test:
    every δ at which the test of d - δ gives p >= alpha, and no other (Hartigan 1969).

    The test of d - δ counts the sign patterns at least as extreme; a pattern that flips the nonempty subset
    F is at least as extreme on the upper side exactly when mean_F(d) <= δ. So with the 2^n - 1 subset means
    sorted, m_(1) <= ... <= m_(K), and c = ceil(alpha · 2^(n-1)), the interval is [m_(c-1), m_(K-c+2)];
    (-inf, inf) when c <= 1 (too few pairs for the test to reject anything). Integer differences give the
    bounds in the same units, from exact integer subset sums; n <= EXACT_INTERVAL_LIMIT."""
    d = np.asarray(diffs, dtype=object if _all_int(diffs) else float).ravel()
    n = d.size
    if n < 2:
        return math.nan, math.nan
    if n > EXACT_INTERVAL_LIMIT:
        raise ValueError(f"the subset-mean interval enumerates 2^n subsets; n <= {EXACT_INTERVAL_LIMIT}, got {n}")
    c = math.ceil(Fraction(alpha) * 2 ** (n - 1))
    if c <= 1:
        return -math.inf, math.inf
    means = _subset_means(d[None, :])[0]
    k = means.size
    lower, upper = np.partition(means, [c - 2, k - c + 1])[[c - 2, k - c + 1]]
    return float(lower), float(upper)


def sign_flip_bounds(rows, alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """`sign_flip_interval` of every row of a 2-D array (one simulated sweep a row)."""
    d = np.atleast_2d(np.asarray(rows))
    n = d.shape[-1]
    c = math.ceil(Fraction(alpha) * 2 ** (n - 1))
    if c <= 1:
        return np.full(d.shape[0], -np.inf), np.full(d.shape[0], np.inf)
    k = 2 ** n - 1
    low, high = np.empty(d.shape[0]), np.empty(d.shape[0])
    step = max(1, 2 ** 22 // 2 ** n)  # rows per batch: ~32 MB of subset means at a time
    for i in range(0, d.shape[0], step):
        part = np.partition(_subset_means(d[i:i + step]), [c - 2, k - c + 1], axis=1)
        low[i:i + step], high[i:i + step] = part[:, c - 2], part[:, k - c + 1]
    return low, high


def _all_int(values) -> bool:
    return all(isinstance(v, (int, np.integer)) for v in np.asarray(values, dtype=object).ravel())


def _subset_means(d) -> np.ndarray:
    """(rows, 2^n - 1): the mean of every nonempty subset of each row. Integer rows are summed in int64 (exact)
    and divided once, so equal rational means give equal floats."""
    n = d.shape[-1]
    member = ((np.arange(1, 2 ** n)[:, None] >> np.arange(n)) & 1).astype(np.int64)
    sizes = member.sum(axis=1)
    if d.dtype == object or np.issubdtype(d.dtype, np.integer):
        sums = d.astype(np.int64) @ member.T
    else:
        sums = d.astype(float) @ member.T
    return sums / sizes


# ---- multiplicity ----------------------------------------------------------------------------------------

def adjust(p_values, method: str = "holm") -> np.ndarray:
    """Adjusted p-values for a family: "holm" (step-down; controls the family-wise error rate), "bh"
    (Benjamini-Hochberg q-values, `scipy.stats.false_discovery_control`; controls the false discovery rate
    for independent or positively dependent tests) or "none". NaN entries (no test) are not in the family and
    stay NaN."""
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, np.nan)
    tested = ~np.isnan(p)
    if method not in ADJUSTMENTS:
        raise ValueError(f"unknown adjustment {method!r}; known: {', '.join(ADJUSTMENTS)}")
    if not tested.any():
        return out
    if method == "none":
        out[tested] = p[tested]
    elif method == "holm":
        out[tested] = holm(p[tested])
    else:
        from scipy import stats

        out[tested] = stats.false_discovery_control(p[tested], method="bh")
    return out


def holm(p_values) -> np.ndarray:
    """Holm's step-down adjusted p-values: with p sorted ascending, the i-th (from 1) is
    max_{j <= i} min(1, (m - j + 1) · p_(j))."""
    p = np.asarray(p_values, dtype=float)
    m = p.size
    order = np.argsort(p, kind="stable")
    stepped = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out = np.empty(m)
    out[order] = stepped
    return out


def smallest_rejecting_n(alpha: float = 0.05, family: int = 1, method: str = "none") -> int:
    """The fewest pairs at which the exact two-sided sign-flip test can give p < alpha (2 / 2^n < alpha, the
    verdict's rule); 6 for alpha = 0.05. In a family of `family` comparisons adjusted by Holm, the smallest
    adjusted p-value is family · 2 / 2^n, so anything can be rejected only from the n where that is below
    alpha (9 for 12 comparisons at 5 %); Benjamini-Hochberg gives every comparison its raw p when all are at the
    floor, so its smallest n is the unadjusted one."""
    level = alpha / max(1, family) if method == "holm" else alpha
    n = 1
    while 2.0 / 2 ** n >= level:
        n += 1
    return n


def power_level(alpha: float, family: int, method: str) -> float:
    """The per-comparison level the power figures are computed at: Holm's first step, alpha / family, the
    hardest its verdicts face; alpha unadjusted or for Benjamini-Hochberg (whose step depends on how many other
    comparisons reject: alpha is its most favourable level)."""
    return alpha / max(1, family) if method == "holm" else alpha


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
    estimate or one pair more: tests/stats/test_stats.py); never below `smallest_rejecting_n(alpha)`,
    because below that the permutation test cannot reject whatever the effect. None for a zero or undefined
    effect, or when more than POWER_SEARCH_LIMIT pairs would be needed. Give it an effect the user names
    over an sd estimate (`seeds_for_power_range`), never an observed effect: that one is itself the noise the
    test tries to see through, and planning on it inflates false alarms.
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


def seeds_for_power_range(min_effect: float, sd: float, n: int, *, alpha: float = 0.05, power: float = POWER,
                          level: float = 0.95) -> tuple[int | None, int | None, int | None]:
    """(point, low, high): the pairs needed to detect a true mean difference of `min_effect` with `power` at
    `alpha`, for the sd of the differences estimated from `n` pairs, and for the two ends of that sd's `level`
    chi-square interval, sd·sqrt((n-1)/χ²_{n-1}) (the low end of the sd gives the low seed count).

    The observed mean plays no part. (None, None, None) for n < 2, a NaN sd or a non-positive min_effect; an
    end is None beyond POWER_SEARCH_LIMIT pairs. An sd of 0 (every difference the same) gives the test's
    floor at every end: that estimate carries no spread to widen."""
    from scipy import stats

    if n < 2 or not math.isfinite(sd) or not min_effect > 0:
        return None, None, None
    tail = (1.0 - level) / 2.0
    sd_low = sd * math.sqrt((n - 1) / stats.chi2.ppf(1.0 - tail, n - 1))
    sd_high = sd * math.sqrt((n - 1) / stats.chi2.ppf(tail, n - 1))
    return tuple(seeds_for_power(min_effect / s if s > 0 else math.inf, alpha=alpha, power=power)
                 for s in (sd, sd_low, sd_high))


def bootstrap_interval(a, b, *, level: float = 0.95, n_resamples: int = 9999, method: str = "BCa",
                       seed: int = 0) -> tuple[float, float]:
    """A bootstrap interval for the mean of b - a, `scipy.stats.bootstrap(..., paired=True)`, NaN pairs
    dropped; (nan, nan) for n < 2.

    An alternative to the t interval when the differences are far from normal, but it UNDER-COVERS at the
    seed counts sweeps use: resampling 5 values cannot show how wide the tails are. tests/stats/test_stats.py
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
