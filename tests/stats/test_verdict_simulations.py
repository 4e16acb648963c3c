"""Issue 25: the verdicts of a whole table, proven on simulated sweeps with a known answer.

Accuracies are simulated as counts of correct examples (as the workers record them), so every test below runs
the same exact integer test `compare` does (exact_sign_flip_pvalues agrees with exact_sign_flip_pvalue:
tests/stats/test_stats.py). Every generator is seeded; the measured figures are printed (pytest -s). The
10 000-sweep checks are marked `slow` (seconds of CPU each; `-m "not slow"` leaves them out).
"""
import math

import numpy as np
import pytest

from orchestrator.analysis.stats import (adjust, exact_sign_flip_pvalue, exact_sign_flip_pvalues, paired_difference,
                                seeds_for_power, seeds_for_power_range, sign_flip_bounds, t_bounds)

SWEEPS = 10_000
ALPHA = 0.05
EXAMPLES = 10_000


def _runs(kind: str, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Correct-example counts of runs, one per entry of `shape`, all from the same distribution."""
    if kind == "normal":
        return np.rint(9000 + 40 * rng.standard_normal(shape)).astype(np.int64)
    if kind == "t3":  # heavy tails
        return np.rint(9000 + 25 * rng.standard_t(3, shape)).astype(np.int64)
    if kind == "bimodal":  # one run in eight collapses to chance (10 classes), as at 99 % sparsity
        ok = np.rint(9000 + 40 * rng.standard_normal(shape)).astype(np.int64)
        return np.where(rng.random(shape) < 0.125, EXAMPLES // 10, ok)
    if kind == "discrete":  # a small test set: differences of a few examples, many ties and zeros
        return rng.binomial(200, 0.9, shape).astype(np.int64)
    raise ValueError(kind)


def _false_alarm_rates(kind: str, methods: int, n: int, seed: int) -> dict[str, float]:
    """Share of simulated sweeps with a false verdict anywhere in their table, per adjustment: `methods`
    methods each compared with one shared reference on n seeds, no method truly different (global null)."""
    rng = np.random.default_rng(seed)
    reference = _runs(kind, rng, (SWEEPS, 1, n))
    others = _runs(kind, rng, (SWEEPS, methods, n))
    p = exact_sign_flip_pvalues((others - reference).reshape(-1, n)).reshape(SWEEPS, methods)
    rates = {}
    for method in ("none", "holm", "bh"):
        adjusted = np.apply_along_axis(adjust, 1, p, method) if method != "holm" else _holm_rows(p)
        rates[method] = float(np.mean((adjusted < ALPHA).any(axis=1)))
    return rates


def _holm_rows(p: np.ndarray) -> np.ndarray:
    """Holm over each row, vectorised (the same rule as orchestrator.analysis.stats.holm, checked below)."""
    m = p.shape[1]
    order = np.argsort(p, axis=1, kind="stable")
    stepped = np.minimum(1.0, np.maximum.accumulate(np.take_along_axis(p, order, 1) * (m - np.arange(m)), axis=1))
    out = np.empty_like(p)
    np.put_along_axis(out, order, stepped, 1)
    return out


def test_vectorised_holm_is_the_library_holm():
    p = np.random.default_rng(0).random((50, 7))
    assert np.allclose(_holm_rows(p), np.apply_along_axis(adjust, 1, p, "holm"))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["normal", "t3", "bimodal", "discrete"])
def test_holm_keeps_family_wise_false_alarms_at_alpha_and_the_unadjusted_rule_does_not(kind):
    methods, n = 6, 10  # Holm's first step, 6 x 2/1024 = 1.2 %, can reject: the check has teeth
    rates = _false_alarm_rates(kind, methods, n, seed={"normal": 1, "t3": 2, "bimodal": 3, "discrete": 4}[kind])
    bound = ALPHA + 3 * math.sqrt(ALPHA * (1 - ALPHA) / SWEEPS)
    print(f"[verdicts] {kind}: a false verdict somewhere in the table of {methods} comparisons at n={n}, "
          f"{SWEEPS} sweeps: unadjusted {100 * rates['none']:.2f} %, Holm {100 * rates['holm']:.2f} %, "
          f"BH {100 * rates['bh']:.2f} % (bound {100 * bound:.2f} %)")
    assert rates["holm"] <= bound
    assert rates["bh"] <= bound  # under the global null every verdict is false: BH's FDR is its FWER
    assert rates["none"] > bound  # the old per-comparison rule fails the same check


def _example_sweep_agrees_with_paired_difference():
    rng = np.random.default_rng(9)
    a, b = _runs("discrete", rng, (8,)), _runs("discrete", rng, (8,))
    r = paired_difference(a / 200, b / 200, counts=(a, b, 200))
    assert r.p_value == exact_sign_flip_pvalue(b - a) == exact_sign_flip_pvalues((b - a)[None, :])[0]
    low, high = sign_flip_bounds((b - a)[None, :], ALPHA)
    assert (r.ci_low, r.ci_high) == pytest.approx((low[0] / 200, high[0] / 200))


def test_the_simulation_functions_are_the_ones_compare_uses():
    _example_sweep_agrees_with_paired_difference()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["normal", "t3"])
@pytest.mark.parametrize("n", [6, 8, 12])
def test_the_inverted_interval_covers_a_known_shift_at_its_exact_level(kind, n):
    """For symmetric differences the interval's coverage is exactly 1 - 2(c-1)/2^n, c = ceil(alpha 2^(n-1))
    (Hartigan): at least 1 - alpha, and the simulated rate is that figure up to binomial noise."""
    rng = np.random.default_rng(500 + n)
    shift = 7  # examples
    d = shift + _runs(kind, rng, (SWEEPS, n)) - _runs(kind, rng, (SWEEPS, n))
    low, high = sign_flip_bounds(d, ALPHA)
    coverage = float(np.mean((low <= shift) & (shift <= high)))
    c = math.ceil(ALPHA * 2 ** (n - 1))
    exact = 1 - 2 * (c - 1) / 2 ** n
    print(f"[verdicts] sign-flip interval coverage, {kind}, n={n}: {100 * coverage:.2f} % (exact level "
          f"{100 * exact:.2f} %)")
    assert exact >= 1 - ALPHA
    assert abs(coverage - exact) <= 3 * math.sqrt(exact * (1 - exact) / SWEEPS) + 0.002  # + rounding ties


@pytest.mark.parametrize("n", [3, 5, 8])
def test_bimodal_outcomes_make_intervals_unreliable_as_the_note_says(n):
    """One method's runs collapse to chance one time in eight: the differences are bimodal and skewed, and
    neither the t interval nor the inverted test covers the true mean shift at its level; `compare` says so
    in the row's note (tests/analysis/test_compare.py)."""
    rng = np.random.default_rng(600 + n)
    a = _runs("normal", rng, (SWEEPS, n))
    b = _runs("bimodal", rng, (SWEEPS, n))
    d = b - a
    true_mean = 0.875 * 0 + 0.125 * (EXAMPLES // 10 - 9000)
    t_low, t_high = t_bounds(d.mean(axis=1), d.std(axis=1, ddof=1), n, 1 - ALPHA)
    t_cover = float(np.mean((t_low <= true_mean) & (true_mean <= t_high)))
    s_low, s_high = sign_flip_bounds(d, ALPHA)
    s_cover = float(np.mean((s_low <= true_mean) & (true_mean <= s_high)))
    print(f"[verdicts] bimodal collapse, n={n}: t interval covers {100 * t_cover:.1f} %, sign-flip interval "
          f"{100 * s_cover:.1f} % (nominal 95 %)")
    assert t_cover < 0.9
    if n >= 6:  # below, the inverted interval is unbounded (the test cannot reject) and covers everything
        assert s_cover < 0.9


def test_the_power_range_contains_the_true_need_as_often_as_the_sd_interval_covers():
    """From n = 8 seeds, the range of seeds for 80 % power at a named effect contains the seeds the true sd
    needs about 95 % of the time, whatever the observed mean; the point estimate alone rarely does."""
    rng = np.random.default_rng(700)
    sd_true, effect, n, draws = 1.0, 0.9, 8, 400
    true_need = seeds_for_power(effect / sd_true)
    inside = exact = 0
    for _ in range(draws):
        d = rng.normal(3.0, sd_true, n)  # a large observed mean: it must not matter
        point, low, high = seeds_for_power_range(effect, float(d.std(ddof=1)), n)
        inside += low <= true_need <= high
        exact += point == true_need
    print(f"[verdicts] power range from n={n}: contains the true need ({true_need}) in "
          f"{100 * inside / draws:.1f} % of {draws} draws; the point estimate equals it in "
          f"{100 * exact / draws:.1f} %")
    assert inside / draws >= 0.95 - 3 * math.sqrt(0.05 * 0.95 / draws)
