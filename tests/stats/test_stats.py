"""The paired statistics, proven on simulated sweeps with a known answer and on hand-computed tiny cases.

The simulations are vectorised (thousands of simulated sweeps at once) through the same scipy-backed
functions paired_difference uses (t_bounds, sign_flip_pvalues, bootstrap_bounds), and each check first
shows those agree with paired_difference itself on a few samples. Every generator is seeded. The measured
figures are printed (pytest -s) for the README.
"""
import itertools
from fractions import Fraction
import math
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats as sps

from orchestrator.analysis.stats import (A_BETTER, B_BETTER, NO_DIFFERENCE, POWER_SEARCH_LIMIT, TOO_FEW, adjust,
                                bootstrap_bounds, bootstrap_interval, exact_sign_flip_fraction,
                                exact_sign_flip_pvalue, exact_sign_flip_pvalues, holm, mean_interval,
                                paired_difference, seeds_for_power, seeds_for_power_range, sign_flip_bounds,
                                sign_flip_interval, sign_flip_pvalues, smallest_rejecting_n, t_bounds, t_test_power)

SWEEPS = 2000  # simulated sweeps per check: a 95 % coverage has a standard error of 0.49 points


def _report(label: str, value: float) -> None:
    print(f"[stats] {label}: {100 * value:.2f} %")


@pytest.mark.slow
def test_importing_stats_pulls_in_neither_pandas_nor_scipy():
    code = ("import sys, orchestrator.analysis.stats\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'pandas', 'scipy'}))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


# ---- hand-computed cases ---------------------------------------------------------------------------------

def test_exact_p_value_and_t_interval_by_hand_for_four_pairs():
    a = np.array([0.80, 0.70, 0.60, 0.90])
    d = np.array([0.01, 0.02, 0.03, -0.005])
    b = a + d
    # Enumerate the 16 sign patterns: |sum| >= |0.055| for (+,+,+,-), (+,+,+,+) and their mirrors.
    observed = abs(d.sum())
    extreme = sum(abs(np.dot(signs, d)) >= observed - 1e-12 for signs in itertools.product((1, -1), repeat=4))
    assert extreme == 4
    mean = d.mean()
    sd = math.sqrt(((d - mean) ** 2).sum() / 3)
    half = 3.182446305284263 * sd / math.sqrt(4)  # t_{0.975, 3}, from the tables

    r = paired_difference(a, b)
    assert r.n == 4 and r.dropped == 0 and r.test == "exact"
    assert r.p_value == pytest.approx(4 / 16)
    assert r.mean_diff == pytest.approx(0.01375)
    assert r.sd_diff == pytest.approx(sd)
    assert (r.t_low, r.t_high) == pytest.approx((mean - half, mean + half))
    scipy_ci = sps.ttest_rel(b, a).confidence_interval(0.95)
    assert (r.t_low, r.t_high) == pytest.approx((scipy_ci.low, scipy_ci.high))
    # The interval that inverts the test: 4 pairs can never reject, so no shift is excluded.
    assert (r.ci_low, r.ci_high, r.interval) == (-math.inf, math.inf, "sign-flip")
    assert r.verdict == TOO_FEW and r.min_p == pytest.approx(2 / 16) and not r.can_reject
    assert r.note == "n=4 can never reach p<0.05; needs >= 6 seeds"


def test_ties_in_float_accuracies_count_as_ties():
    # Differences of 1, 1, -1 and 2 points, as accuracies give them (0.83 - 0.82 is not exactly 0.01).
    a = np.array([0.82, 0.75, 0.91, 0.60])
    b = np.array([0.83, 0.76, 0.90, 0.62])
    # Integer points: a pattern's sum is 2 * (sum of the entries kept positive) - 5; |sum| >= 3 when those
    # sum to 0 (1 subset), 1 (3), 4 (3) or 5 (1): 8 of 16.
    units = [1, 1, -1, 2]
    extreme = sum(abs(np.dot(signs, units)) >= 3 for signs in itertools.product((1, -1), repeat=4))
    assert extreme == 8
    assert paired_difference(a, b).p_value == pytest.approx(8 / 16)
    assert paired_difference([0.81, 0.83, 0.85, 0.80], [0.82, 0.82, 0.86, 0.79]).p_value == 1.0  # mean 0


def test_six_consistent_pairs_reject_five_never_can():
    a = np.array([0.70, 0.72, 0.71, 0.69, 0.73, 0.70])
    up = paired_difference(a, a + [0.01, 0.02, 0.015, 0.03, 0.01, 0.02])
    assert up.p_value == pytest.approx(2 / 64) and up.verdict == B_BETTER and up.can_reject
    assert up.seeds_for_power is None and up.note == ""  # no --min-effect named
    down = paired_difference(a, a - [0.01, 0.02, 0.015, 0.03, 0.01, 0.02])
    assert down.p_value == pytest.approx(2 / 64) and down.verdict == A_BETTER
    five = paired_difference(a[:5], a[:5] + 0.05 + np.arange(5) * 0.01)
    assert five.p_value == pytest.approx(2 / 32) and five.verdict == TOO_FEW and not five.can_reject
    assert five.min_p == pytest.approx(2 / 32)
    # The t interval excludes 0 while the test cannot reject; the interval shown inverts the test instead.
    assert five.t_low > 0 and five.ci_low == -math.inf
    five = paired_difference(a[:5], a[:5] + 0.05 + np.arange(5) * 0.01, min_effect=0.05)
    assert five.seeds_for_power == 6  # a huge effect: the test's floor, not the t-test's 2 or 3
    assert "needs >= 6 seeds" in five.note


@pytest.mark.parametrize("n, min_p, can", [(1, 1.0, False), (3, 0.25, False), (5, 0.0625, False),
                                           (6, 0.03125, True), (8, 2 / 256, True)])
def test_min_p_and_can_reject_follow_two_over_two_to_the_n(n, min_p, can):
    r = paired_difference(np.zeros(n), np.arange(1, n + 1, dtype=float))
    if n >= 2:
        assert r.min_p == pytest.approx(min_p) and r.can_reject is can
        assert r.p_value == pytest.approx(min_p)  # all differences positive: the most extreme pattern
    else:
        assert r.test == "none" and not r.can_reject


def test_smallest_rejecting_n():
    assert smallest_rejecting_n(0.05) == 6
    assert smallest_rejecting_n(0.01) == 8    # 2/128 = 1.6 % > 1 %, 2/256 = 0.8 %
    assert smallest_rejecting_n(0.5) == 3     # 2/4 = 50 % is not below 50 %: the verdict needs p < alpha
    assert smallest_rejecting_n(0.0625) == 6  # the same boundary: 2/32 cannot give a verdict at 6.25 %


def test_zero_differences_have_no_sign_and_raise_the_smallest_p():
    """Accuracies are counts, so exact ties happen: 5 nonzero differences of 6 can never reach 5 %."""
    r = paired_difference(np.zeros(6), [0.0, 0.01, 0.01, 0.01, 0.01, 0.01], min_effect=0.05)
    assert r.p_value == pytest.approx(2 / 32) and r.min_p == pytest.approx(2 / 32) and not r.can_reject
    assert "5 nonzero pair(s) can never reach p<0.05" in r.note
    assert r.seeds_for_power >= 8   # one tie in six recurs: 6 nonzero pairs take about 7.2 seeds
    eight = paired_difference(np.zeros(8), [0.0, 0.0, 0.01, 0.012, 0.011, 0.01, 0.013, 0.01])
    assert eight.min_p == pytest.approx(2 / 64) and eight.can_reject and eight.p_value == pytest.approx(2 / 64)


def test_mean_interval_by_hand():
    low, high = mean_interval([1.0, 2.0, 3.0, math.nan])
    half = 4.302652729911275 / math.sqrt(3)  # t_{0.975, 2} * sd(=1) / sqrt(3)
    assert (low, high) == pytest.approx((2 - half, 2 + half))
    assert all(math.isnan(v) for v in mean_interval([0.5]))
    assert all(math.isnan(v) for v in mean_interval([]))
    low90, high90 = mean_interval([1.0, 2.0, 3.0], level=0.90)
    assert low < low90 < high90 < high


# ---- edge cases ------------------------------------------------------------------------------------------

def test_fewer_than_two_pairs_give_no_interval_and_no_test():
    for a, b, n, dropped in (([0.5], [0.6], 1, 0), ([], [], 0, 0), ([0.5, math.nan], [math.nan, 0.7], 0, 2)):
        r = paired_difference(a, b)
        assert (r.n, r.dropped, r.test, r.verdict) == (n, dropped, "none", TOO_FEW)  # not "no difference"
        assert math.isnan(r.ci_low) and math.isnan(r.ci_high) and math.isnan(r.p_value)
        assert r.seeds_for_power is None and not r.can_reject
        assert f"n={n}: an interval needs >= 2 pairs and the test >= 6" in r.note


def test_nan_pairs_are_dropped_and_counted():
    a = [0.7, 0.8, math.nan, 0.6, 0.75, 0.65, 0.7, 0.72]
    b = [0.72, math.nan, 0.9, 0.62, 0.76, 0.69, 0.71, 0.75]
    r = paired_difference(a, b)
    assert r.n == 6 and r.dropped == 2
    assert r.mean_diff == pytest.approx(np.mean([0.02, 0.02, 0.01, 0.04, 0.01, 0.03]))
    assert r.p_value == pytest.approx(2 / 64) and r.verdict == B_BETTER
    assert r.note.startswith("2 pair(s) with a missing value left out")


def test_all_differences_zero():
    r = paired_difference([0.7, 0.8, 0.75, 0.6, 0.9, 0.5], [0.7, 0.8, 0.75, 0.6, 0.9, 0.5])
    assert r.p_value == 1.0 and r.verdict == NO_DIFFERENCE
    assert r.ci_low == r.ci_high == 0.0 and r.sd_diff == 0.0 and r.effect_size == 0.0
    assert r.seeds_for_power is None and r.note == "all differences are zero"


def test_constant_difference_needs_the_tests_floor_for_an_interval_of_no_width():
    r = paired_difference([1.0, 2.0, 3.0], [1.5, 2.5, 3.5], min_effect=0.1)
    assert r.t_low == r.t_high == pytest.approx(0.5)
    assert (r.ci_low, r.ci_high) == (-math.inf, math.inf)  # 3 pairs exclude nothing, not "exactly 0.5"
    assert r.effect_size == math.inf and r.p_value == pytest.approx(0.25)
    assert r.seeds_for_power == 6
    assert "every pair differs by the same amount" in r.note
    two = paired_difference([0.5, 0.6], [0.55, 0.65])  # issue 25: a zero-width interval was printed at n = 2
    assert (two.ci_low, two.ci_high) == (-math.inf, math.inf) and two.verdict == TOO_FEW
    six = paired_difference(np.arange(6.0), np.arange(6.0) + 0.5)
    assert six.ci_low == six.ci_high == pytest.approx(0.5) and six.p_value == 2 / 64  # every subset mean is 0.5


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="same length, got 2 and 3"):
        paired_difference([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="alpha must be between 0 and 1"):
        paired_difference([1, 2], [1, 2], alpha=1.5)


def test_monte_carlo_beyond_sixteen_pairs_is_seeded_and_close_to_exact():
    rng = np.random.default_rng(7)
    a = rng.normal(0.8, 0.01, 18)
    b = a + rng.normal(0.004, 0.01, 18)
    mc = paired_difference(a, b, seed=3)
    assert mc.test == "monte-carlo" and mc.min_p == pytest.approx(2 / (2 ** 16 + 1))
    assert paired_difference(a, b, seed=3).p_value == mc.p_value  # same seed, same answer
    exact = paired_difference(a, b, n_resamples=2 ** 18)
    assert exact.test == "exact"
    # Monte Carlo p-value with 65536 patterns: standard error sqrt(p(1-p)/65536) < 0.002
    assert abs(mc.p_value - exact.p_value) < 0.01
    assert 0.0 < exact.p_value < 1.0
    few = paired_difference(a, b, n_resamples=19)
    assert few.min_p == pytest.approx(0.1) and not few.can_reject
    assert few.note == "19 Monte Carlo sign patterns can never reach p<0.05"


# ---- simulations: coverage, false alarms, power ----------------------------------------------------------

def _diffs(kind: str, n: int, mu: float, seed: int, sweeps: int = SWEEPS) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "normal":
        return mu + 0.02 * rng.standard_normal((sweeps, n))
    if kind == "t3":  # heavy tails: Student t with 3 degrees of freedom
        return mu + 0.02 * rng.standard_t(3, (sweeps, n))
    raise ValueError(kind)


def _agrees_with_paired_difference(d: np.ndarray, low, high, p=None) -> None:
    for i in range(3):
        r = paired_difference(np.zeros(d.shape[1]), d[i])
        assert (r.t_low, r.t_high) == pytest.approx((low[i], high[i]))
        if p is not None:
            assert r.p_value == pytest.approx(p[i])


@pytest.mark.parametrize("n", [5, 10])
def test_t_interval_covers_the_true_difference_95_percent_of_the_time(n):
    mu = 0.01
    d = _diffs("normal", n, mu, seed=100 + n)
    low, high = t_bounds(d.mean(axis=1), d.std(axis=1, ddof=1), n, 0.95)
    _agrees_with_paired_difference(d, low, high)
    coverage = np.mean((low <= mu) & (mu <= high))
    _report(f"t interval coverage, normal differences, n={n}, {SWEEPS} sweeps", coverage)
    assert 0.93 <= coverage <= 0.97


@pytest.mark.parametrize("n", [5, 10])
def test_t_interval_coverage_with_heavy_tails_is_reported(n):
    mu = 0.01
    d = _diffs("t3", n, mu, seed=200 + n)
    low, high = t_bounds(d.mean(axis=1), d.std(axis=1, ddof=1), n, 0.95)
    coverage = np.mean((low <= mu) & (mu <= high))
    _report(f"t interval coverage, t(3) differences, n={n}, {SWEEPS} sweeps", coverage)
    assert coverage >= 0.90  # robust enough for symmetric heavy tails; the exact figure is printed


def _exact_size(n: int, alpha: float) -> float:
    """The exact false-alarm rate of the two-sided sign-flip test with continuous differences: the observed
    mean's rank among the 2^n flips is uniform under the null, and p = 2 min(rank, 2^n + 1 - rank) / 2^n."""
    per_tail = math.ceil(alpha * 2 ** (n - 1)) - 1
    return 2 * per_tail / 2 ** n


@pytest.mark.parametrize("n", [3, 5, 6, 10])
def test_false_alarms_with_no_true_difference(n):
    sweeps = 2 * SWEEPS  # the rate near 5 % has a standard error of 0.34 points
    d = _diffs("normal", n, 0.0, seed=300 + n, sweeps=sweeps)
    p, test = sign_flip_pvalues(d)
    assert test == "exact"
    for i in range(3):
        assert paired_difference(np.zeros(n), d[i]).p_value == pytest.approx(p[i])
    rate = np.mean(p < 0.05)
    _report(f"false alarms (p<0.05, no true difference), n={n}, {sweeps} sweeps", rate)
    if n <= 5:
        assert rate == 0.0  # 2/2^n > 5 %: never
        return
    size = _exact_size(n, 0.05)
    assert size <= 0.05
    # The simulated rate is the exact size up to binomial noise (3 standard errors).
    assert abs(rate - size) <= 3 * math.sqrt(size * (1 - size) / sweeps)


def test_exact_size_formula_matches_small_cases():
    assert _exact_size(6, 0.05) == pytest.approx(2 / 64)
    assert _exact_size(10, 0.05) == pytest.approx(50 / 1024)
    assert _exact_size(5, 0.05) == 0.0


def _simulated_power(effect: float, seed: int, sweeps: int = 1000, n_resamples: int = 2 ** 16) -> dict:
    """Permutation-test power (share of simulated sweeps with p < 0.05) at each n, from the test's floor up
    to the first n with >= 80 %."""
    power = {}
    for n in range(smallest_rejecting_n(0.05), 60):
        d = effect + np.random.default_rng(seed + n).standard_normal((sweeps, n))
        p, _ = sign_flip_pvalues(d, n_resamples=n_resamples, seed=n)
        power[n] = float(np.mean(p < 0.05))
        if power[n] >= 0.80:
            return power
    raise AssertionError(f"no power at effect size {effect}")


@pytest.mark.parametrize("effect, n_resamples", [(1.0, 2 ** 16), (1.5, 2 ** 16), (0.6, 999)])
def test_seeds_for_power_matches_the_simulated_permutation_test(effect, n_resamples):
    power = _simulated_power(effect, seed=400, n_resamples=n_resamples)
    simulated = max(power)
    estimate = seeds_for_power(effect)
    at_estimate = power.get(estimate, 1.0)
    print(f"[stats] seeds for 80 % power at effect size {effect}: estimate {estimate} (simulated power there "
          f"{100 * at_estimate:.1f} %, t-test power {100 * float(t_test_power(effect, estimate)):.1f} %), "
          f"simulated {simulated}")
    assert simulated / 1.5 <= estimate <= simulated * 1.5


def test_seeds_for_power_plans_for_the_named_effect_over_the_sd_and_its_range():
    d = np.array([-0.5, 0.5, 1.5, 2.5])
    d = (d - d.mean()) / d.std(ddof=1)  # sd exactly 1
    for shift in (0.0, 1.0, 5.0):  # the observed mean plays no part
        r = paired_difference(np.zeros(4), d + shift, min_effect=1.0)
        assert r.seeds_for_power == seeds_for_power(1.0) == 10
        assert (r.seeds_for_power_low, r.seeds_for_power_high) == seeds_for_power_range(1.0, 1.0, 4)[1:]
    chi2 = sps.chi2.ppf([0.975, 0.025], 3)
    assert seeds_for_power_range(1.0, 1.0, 4) == (10, seeds_for_power(1.0 / math.sqrt(3 / chi2[0])),
                                                  seeds_for_power(1.0 / math.sqrt(3 / chi2[1])))
    assert paired_difference(np.zeros(4), d).seeds_for_power is None  # nothing named, nothing planned
    assert seeds_for_power_range(1.0, 1.0, 1) == (None, None, None)


def test_seeds_for_power_shape():
    assert seeds_for_power(0.0) is None and seeds_for_power(math.nan) is None
    assert seeds_for_power(-0.5) == seeds_for_power(0.5)
    assert seeds_for_power(5.0) == 6 and seeds_for_power(math.inf) == 6
    assert seeds_for_power(1e-3) is None  # ~7.8 million pairs: beyond POWER_SEARCH_LIMIT
    counts = [seeds_for_power(e) for e in (0.2, 0.3, 0.5, 0.8, 1.2)]
    assert counts == sorted(counts, reverse=True)
    # Large n: the t test's power meets the normal approximation, n = ((z_.975 + z_.8) / d)^2 + ~2.
    normal = ((sps.norm.ppf(0.975) + sps.norm.ppf(0.8)) / 0.2) ** 2
    assert normal < seeds_for_power(0.2) <= normal + 3
    n = seeds_for_power(0.2)
    assert t_test_power(0.2, n) >= 0.8 > t_test_power(0.2, n - 1)
    assert seeds_for_power(0.01) < POWER_SEARCH_LIMIT
    assert float(t_test_power(1.0, 640)) == pytest.approx(1.0)  # scipy's nct is NaN there; the normal limit


# ---- the bootstrap alternative ---------------------------------------------------------------------------

@pytest.mark.parametrize("n", [5, 10])
def test_bootstrap_interval_under_covers_at_small_n(n):
    mu, sweeps = 0.01, 1000
    d = _diffs("normal", n, mu, seed=500 + n, sweeps=sweeps)
    a = np.zeros_like(d)
    low, high = bootstrap_bounds(a, d, seed=1)
    for i in range(2):
        # Same resamples; BCa's bias correction counts resample means equal to the observed one, and
        # whether a reordering of the sample ties exactly depends on float summation order (1-D vs batch).
        assert bootstrap_interval(a[i], d[i], seed=1) == pytest.approx((low[i], high[i]), rel=1e-2)
    coverage = np.mean((low <= mu) & (mu <= high))
    _report(f"bootstrap (BCa) interval coverage, normal differences, n={n}, {sweeps} sweeps", coverage)
    if n == 5:
        assert coverage < 0.93  # what its docstring warns about
    assert coverage > 0.75


def test_bootstrap_interval_edge_cases():
    assert all(math.isnan(v) for v in bootstrap_interval([0.5], [0.6]))
    assert bootstrap_interval([1.0, 2.0, 3.0], [1.5, 2.5, 3.5]) == pytest.approx((0.5, 0.5))
    low, high = bootstrap_interval([0.0, 0.0, 0.0, 0.0, math.nan], [0.1, 0.3, 0.2, 0.4, 1.0])
    assert 0.1 <= low < high <= 0.4


# ---- issue 25: the exact test on integers, the interval that inverts it, multiplicity ---------------------

def _brute_force(diffs) -> Fraction:
    """Every sign pattern, integer sums: the definition of the two-sided sign-flip p-value."""
    observed = abs(sum(diffs))
    patterns = list(itertools.product((1, -1), repeat=len(diffs)))
    return Fraction(sum(abs(sum(s * d for s, d in zip(signs, diffs))) >= observed for signs in patterns),
                    len(patterns))


def test_the_issues_example_is_14_over_256():
    d = [-2, -2, 7, 2, 8, 7, 8, 7]
    assert exact_sign_flip_fraction(d) == Fraction(14, 256) == _brute_force(d)
    assert exact_sign_flip_pvalue(d) == 0.0546875
    b = np.array([9032, 9012, 8980, 9039, 9035, 8986, 8955, 9026])
    a = b - np.array(d)
    r = paired_difference(a / 10000, b / 10000, counts=(a, b, 10000))
    assert r.p_value == 0.0546875 and r.test_on == "counts" and r.verdict == NO_DIFFERENCE
    assert r.ci_low <= 0.0 <= r.ci_high
    # On the floats, scipy's tie tolerance drops tied patterns: the too-small p-value the issue found.
    assert paired_difference(a / 10000, b / 10000).p_value == pytest.approx(0.0390625)


def test_exact_p_value_equals_brute_force_enumeration_on_small_n():
    rng = np.random.default_rng(25)
    for n in range(1, 11):
        for _ in range(12):
            d = [int(v) for v in rng.integers(-4, 5, n)]  # small range: many ties and zeros
            expected = _brute_force(d)
            assert exact_sign_flip_fraction(d) == expected, d
            assert exact_sign_flip_pvalues(np.array([d]))[0] == float(expected)
    assert exact_sign_flip_fraction([]) == 1 and exact_sign_flip_fraction([0, 0, 0]) == 1
    assert exact_sign_flip_fraction([3, 0, 0, 3]) == exact_sign_flip_fraction([3, 3])  # zeros: no change
    assert exact_sign_flip_fraction([6, 6, 12]) == exact_sign_flip_fraction([1, 1, 2])  # scale-free
    assert exact_sign_flip_pvalue([5.0, -3.0, 2.0]) == float(_brute_force([5, -3, 2]))
    with pytest.raises(TypeError, match="integer differences"):
        exact_sign_flip_pvalue([0.5, 1])
    with pytest.raises(TypeError, match="integer array"):
        exact_sign_flip_pvalues(np.array([[0.5, 1.0]]))


def test_exact_p_value_at_many_pairs_is_still_exact():
    assert exact_sign_flip_fraction([1] * 70) == Fraction(2, 2 ** 70)  # beyond int64 counts
    assert exact_sign_flip_fraction([1, -1] * 40) == 1
    d = [int(v) for v in np.random.default_rng(3).integers(-30, 31, 40)]
    p = exact_sign_flip_pvalue(d)
    # 40 pairs: the normal approximation of the signed-sum distribution is close
    z = abs(sum(d)) / math.sqrt(sum(v * v for v in d))
    assert p == pytest.approx(2 * sps.norm.sf(z), abs=0.02)


def test_the_interval_is_exactly_the_shifts_the_test_does_not_reject():
    """Inverting the test: with integer differences and an integer shift δ, δ is in the interval exactly
    when the exact test of d - δ gives p >= alpha; in particular 0 is outside exactly when p < alpha."""
    rng = np.random.default_rng(11)
    for n in (2, 5, 6, 7, 9):
        for _ in range(15):
            d = [int(v) for v in rng.integers(-6, 12, n)]
            low, high = sign_flip_interval(d, 0.05)
            for delta in range(-20, 25):
                accepted = exact_sign_flip_pvalue([v - delta for v in d]) >= 0.05
                assert accepted == (low <= delta <= high), (d, delta, low, high)
    lows, highs = sign_flip_bounds(np.array([[1, 2, 3, 4, 5, 6, 7, 9]]), 0.05)
    assert (lows[0], highs[0]) == sign_flip_interval([1, 2, 3, 4, 5, 6, 7, 9])


def test_holm_and_benjamini_hochberg_by_hand():
    p = np.array([0.01, 0.04, 0.03, 0.005])
    # sorted 0.005, 0.01, 0.03, 0.04 x 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04 -> running max 0.02, 0.03, 0.06, 0.06
    assert holm(p).tolist() == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert adjust(p, "bh").tolist() == pytest.approx(sps.false_discovery_control(p).tolist())
    assert adjust(p, "bh").tolist() == pytest.approx([0.02, 0.04, 0.04, 0.02])
    with_nan = adjust([0.01, math.nan, 0.04], "holm")
    assert with_nan[0] == pytest.approx(0.02) and math.isnan(with_nan[1])  # not in the family
    assert adjust([0.2], "none").tolist() == [0.2]
    with pytest.raises(ValueError, match="unknown adjustment"):
        adjust(p, "bonferroni")


def test_smallest_rejecting_n_of_a_family():
    assert smallest_rejecting_n(0.05, 12, "holm") == 9    # 12 x 2/512 = 4.7 %; 12 x 2/256 = 9.4 %
    assert smallest_rejecting_n(0.05, 12, "bh") == 6
    assert smallest_rejecting_n(0.05, 1, "holm") == 6
    # The README's verdict table: 12 comparisons at 8 seeds, smallest Holm p = 12 x 2/256 = 0.094.
    assert holm(np.full(12, 2 / 256)).min() == pytest.approx(0.09375)


def test_an_infinite_accuracy_is_dropped_not_a_p_of_zero():
    a = [0.7, 0.71, 0.72, 0.73, 0.74, 0.75, 0.76]
    b = [0.71, 0.70, 0.73, 0.74, 0.73, 0.76, math.inf]
    r = paired_difference(a, b)
    assert r.n == 6 and r.dropped == 1 and "1 pair(s) with an infinite value left out" in r.note
    assert r.p_value > 0.05 and math.isfinite(r.mean_diff)


def test_float_noise_in_an_equal_difference_is_no_effect_size_of_1e15():
    a = np.array([0.823, 0.751, 0.912, 0.605, 0.337, 0.471])
    b = np.array([0.833, 0.761, 0.922, 0.615, 0.347, 0.481])  # 10 examples of 1000 better on every seed
    assert 0 < np.std(b - a, ddof=1) < 1e-16  # the bug's input: float rounding, an effect size of 4e14
    r = paired_difference(a, b)
    assert r.sd_diff == 0.0 and r.effect_size == math.inf and "every pair differs by the same amount" in r.note
