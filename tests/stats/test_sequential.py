"""The group-sequential sign-flip rule of `submit --until-decided` (orchestrator/analysis/sequential.py): exact against
brute-force enumeration, and proven on simulated sweeps with known answers (the `slow` tier: >= 10 000 sweeps
where a rate is asserted; `pytest -m slow -s tests/stats/test_sequential.py` prints the figures docs/results.md quotes)."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats

from orchestrator.analysis import sequential as seq
from orchestrator.analysis.stats import counts_with_failures, exact_sign_flip_pvalue

LOOKS, ALPHA, FAMILY = [6, 10, 15, 20], 0.05, 6  # the verdicts setting: 2 methods x 3 sparsities against LTR
LEVEL = ALPHA / FAMILY


def brute_force(d, looks, level):
    """Boundaries by enumerating every sign pattern and every threshold (the definition, written naively)."""
    d = np.asarray(d)
    cumulative = seq.cumulative_alpha(looks, level)
    patterns = np.array(list(itertools.product([-1, 1], repeat=looks[-1]))) * np.abs(d[:looks[-1]])
    alive, spent, out = np.ones(len(patterns), bool), 0.0, []
    for k, n in enumerate(looks):
        s = np.abs(patterns[:, :n].sum(axis=1))
        c = next((c for c in range(1, int(np.abs(d[:n]).sum()) + 1)
                  if (alive & (s >= c)).mean() <= cumulative[k] - spent + 1e-12), None)
        if c is not None:
            spent += (alive & (s >= c)).mean()
            alive &= s < c
        out.append(-1 if c is None else c)
    return out


def test_boundaries_equal_brute_force_enumeration_of_sign_patterns():
    rng = np.random.default_rng(0)
    for _ in range(40):
        d = rng.integers(-5, 6, size=10)  # ties and zeros included
        looks = sorted(rng.choice(np.arange(2, 11), size=3, replace=False).tolist())
        level = float(rng.choice([0.05, 0.2, 0.5]))
        paths = seq.evaluate(d, looks, level)
        assert paths.boundary[0].tolist() == brute_force(d, looks, level), (d, looks, level)
        # every look's spent alpha is within what the spending function allows, exactly
        assert np.all(paths.alpha_spent[0] <= paths.alpha_cumulative + 1e-15)


def test_the_one_look_p_value_is_the_exact_test_compare_uses():
    # issue 25's example: scipy's float ties dropped patterns and gave 0.039; the exact answer is 14/256
    d = [-2, -2, 7, 2, 8, 7, 8, 7]
    assert seq.evaluate(d, [8], 0.5).p_look[0, 0] == exact_sign_flip_pvalue(d) == 14 / 256
    rng = np.random.default_rng(3)
    rows = rng.integers(-6, 7, size=(50, 9))  # ties and zeros
    looks = seq.evaluate(rows, [4, 9], 0.5).p_look
    for row, (p4, p9) in zip(rows, looks):
        assert (p4, p9) == (exact_sign_flip_pvalue(row[:4]), exact_sign_flip_pvalue(row))
    assert seq.evaluate([0, 0, 0], [3], 0.5).p_look[0, 0] == 1.0
    with pytest.raises(ValueError, match="integer differences"):
        seq.evaluate([0.5, 1.0], [2], 0.05)


def test_obrien_fleming_spending_function():
    t = np.array([0.3, 0.5, 0.75, 1.0])
    expected = 2 - 2 * stats.norm.cdf(stats.norm.ppf(1 - 0.025) / np.sqrt(t))
    assert np.allclose(seq.obf_spending(t, 0.05), expected)
    assert seq.cumulative_alpha([6, 10, 15, 20], 0.05)[-1] == 0.05
    with pytest.raises(ValueError, match="increasing"):
        seq.check_looks([6, 6])
    with pytest.raises(ValueError, match="at most 60"):
        seq.check_looks([10, 61])


def test_rows_are_evaluated_alike_in_one_call_or_one_by_one_and_chunking_changes_nothing():
    rng = np.random.default_rng(1)
    d = np.round(rng.normal(0, 5, size=(30, 20))).astype(int) + rng.integers(-3, 4, size=(30, 1))
    together = seq.evaluate(d, LOOKS, LEVEL)
    chunked = seq.evaluate(d, LOOKS, LEVEL, chunk_cells=1)  # one row per chunk
    for i in range(len(d)):
        alone = seq.evaluate(d[i], LOOKS, LEVEL)
        for name in ("sums", "boundary", "crossed", "p_look", "p_stagewise", "alpha_spent"):
            assert np.array_equal(getattr(alone, name)[0], getattr(together, name)[i])
            assert np.array_equal(getattr(chunked, name)[i], getattr(together, name)[i])


def test_a_look_uses_only_the_seeds_it_has():
    """The boundary at look k is a function of the first n_k differences alone: appending later seeds never
    changes an earlier look (what lets the driver decide look by look)."""
    rng = np.random.default_rng(2)
    d = rng.integers(-9, 10, size=20)
    full = seq.evaluate(d, LOOKS, LEVEL)
    for k, n in enumerate(LOOKS):
        part = seq.evaluate(d[:n], LOOKS, LEVEL)
        assert part.looks == LOOKS[:k + 1]
        assert np.array_equal(part.boundary[0], full.boundary[0, :k + 1])


# ------------------------------------------------------------------------------------------ simulation

SWEEPS = 4_000  # bound() = alpha + 3 sd of the rate at this many sweeps: between the rule's rates and the naive rule's
SCENARIOS = ("normal", "t3", "bimodal", "discrete", "diverging")
EXAMPLES, CLASSES = 200, 10  # the diverging scenarios: counts out of 200 test examples, chance is 20 of them


def outcomes(rng, scenario: str, shape) -> np.ndarray:
    """Correct test examples relative to a level, per (sweep, sparsity, method, seed), all methods alike."""
    if scenario == "normal":
        x = rng.normal(0, 8, shape)
    elif scenario == "t3":
        x = 8 * rng.standard_t(3, shape)
    elif scenario == "bimodal":  # a quarter of the runs collapse to chance (140 examples below), as at 99 %
        x = np.where(rng.random(shape) < 0.25, -140.0, rng.normal(0, 4, shape))
    elif scenario == "discrete":  # discrete counts with many ties and zero differences: Binomial(200, 0.95)
        x = rng.binomial(200, 0.95, shape).astype(float)
    else:  # 15 % of the runs of every method diverge, counted at chance as the driver counts them
        return counts_with_failures(rng.binomial(EXAMPLES, 0.85, shape), rng.random(shape) < 0.15, EXAMPLES,
                                    CLASSES)[0]
    return np.round(x).astype(np.int64)


def family_differences(rng, scenario: str, effects=(0, 0), sweeps: int = SWEEPS) -> np.ndarray:
    """(sweeps, 6, 20) paired differences B - A: 3 sparsities x 2 methods sharing the reference's runs
    (so the comparisons of a sparsity are dependent), method j shifted by effects[j] examples."""
    x = outcomes(rng, scenario, (sweeps, 3, 3, LOOKS[-1]))
    x[:, :, 1:, :] += np.asarray(effects, dtype=np.int64)[None, None, :, None]
    return (x[:, :, 1:, :] - x[:, :, :1, :]).reshape(sweeps, FAMILY, LOOKS[-1])


def bound(rate: float = ALPHA, n: int = SWEEPS) -> float:
    return rate + 3 * math.sqrt(rate * (1 - rate) / n)


@pytest.mark.slow
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_family_wise_false_alarms_are_controlled_and_the_naive_rule_is_not(scenario):
    d = family_differences(np.random.default_rng(SCENARIOS.index(scenario)), scenario)
    paths = seq.evaluate(d.reshape(-1, LOOKS[-1]), LOOKS, LEVEL)
    decided = (paths.decided_look >= 0).reshape(SWEEPS, FAMILY)
    fwer = decided.any(axis=1).mean()
    # the naive rule: the exact test at each look at the same per-comparison level, no spending
    naive = (paths.p_look <= LEVEL).any(axis=1).reshape(SWEEPS, FAMILY).any(axis=1).mean()
    # the fixed design at the budget, same level: the reference point
    fixed = (paths.p_look[:, -1] <= LEVEL).reshape(SWEEPS, FAMILY).any(axis=1).mean()
    print(f"\n{scenario}: family-wise false alarms over {SWEEPS} sweeps of {FAMILY} comparisons: sequential "
          f"{fwer:.4f}, naive per-look {naive:.4f}, fixed n=20 {fixed:.4f}; bound {bound():.4f}")
    assert fwer <= bound()
    assert naive > bound()


@pytest.mark.slow
def test_a_method_that_diverges_on_hard_seeds_is_not_declared_better():
    """Both methods B diverge on the hard seeds of a sweep (30 % of seeds, the same for every sparsity) and are 6
    examples better than the reference wherever they finish: counting the diverged runs at chance, B is far
    worse (about 41 examples per seed), so a "B better" decision is a false one. The rule on the differences the
    driver decides on (failed seeds at chance, stats.counts_with_failures) keeps such decisions below alpha;
    the old rule, where a failed seed dropped out (a zero difference, as failures=exclude), declares B better."""
    rng = np.random.default_rng(20)
    shape = (SWEEPS, 3, 3, LOOKS[-1])
    correct = rng.binomial(EXAMPLES, 0.85, shape)
    correct[:, :, 1:, :] += 6
    hard = np.broadcast_to(rng.random((SWEEPS, 1, 1, LOOKS[-1])) < 0.3, shape).copy()
    hard[:, :, 0, :] = False  # the reference finishes everywhere
    counted, unit = counts_with_failures(correct, hard, EXAMPLES, CLASSES)
    assert unit == EXAMPLES
    d_counted = (counted[:, :, 1:, :] - counted[:, :, :1, :]).reshape(-1, LOOKS[-1])
    d_dropped = np.where(hard[:, :, 1:, :], 0, correct[:, :, 1:, :] - correct[:, :, :1, :]).reshape(-1, LOOKS[-1])
    assert d_counted.mean() < -30  # the truth, failures counted: B worse

    def b_better(d):
        paths = seq.evaluate(d, LOOKS, LEVEL, with_p=False)
        at = np.maximum(paths.decided_look, 0)
        wrong = (paths.decided_look >= 0) & (paths.sums[np.arange(len(d)), at] > 0)
        return wrong.reshape(SWEEPS, FAMILY).any(axis=1).mean(), (paths.decided_look >= 0).mean()

    counted_rate, counted_decided = b_better(d_counted)
    dropped_rate, _ = b_better(d_dropped)
    print(f"\ndiverging on hard seeds: a false 'B better' anywhere in the family: failures at chance "
          f"{counted_rate:.4f} (comparisons decided, all 'A better' but those: {counted_decided:.4f}), failed seeds "
          f"dropped (the old rule) {dropped_rate:.4f}; bound {bound():.4f}")
    assert counted_rate <= bound()
    assert dropped_rate > bound()


@pytest.mark.slow
def test_power_seeds_used_and_interval_coverage_against_the_fixed_design():
    """Every comparison with a true difference (-9 examples, about 0.8 sd of a difference): power of the
    sequential rule against the fixed 20-seed design at the same level, seeds used, and how often the t interval
    printed at stopping covers the true difference. Then a family where half the comparisons are null."""
    effect = -9
    d = family_differences(np.random.default_rng(10), "normal", effects=(effect, effect))
    rows = d.reshape(-1, LOOKS[-1])
    paths = seq.evaluate(rows, LOOKS, LEVEL)
    decided = paths.decided_look >= 0
    right = decided & (paths.sums[np.arange(len(rows)), np.maximum(paths.decided_look, 0)] < 0)
    wrong = decided & ~right
    power_fixed = ((paths.p_look[:, -1] <= LEVEL) & (paths.sums[:, -1] < 0)).mean()
    # a comparison stops at its decision look; the sweep at the last decision (the budget if one is undecided)
    stop = np.where(decided, np.asarray(LOOKS)[np.maximum(paths.decided_look, 0)], LOOKS[-1])
    sweep_seeds = stop.reshape(SWEEPS, FAMILY).max(axis=1)
    covered = _t_interval_covers(rows, stop, effect)
    early = stop < LOOKS[-1]
    print(f"\npower at {effect} examples (effect size {effect / (8 * math.sqrt(2)):.2f}): sequential {right.mean():.4f}"
          f" (wrong direction {wrong.mean():.4f}), fixed n=20 {power_fixed:.4f}; seeds per sweep: mean "
          f"{sweep_seeds.mean():.2f} (fixed 20); seeds per comparison: mean {stop.mean():.2f}; "
          f"decided at looks {[int((paths.decided_look == k).sum()) for k in range(len(LOOKS))]} of {len(rows)}")
    print(f"coverage of the {100 * (1 - LEVEL):.2f} % t interval at stopping: all {covered.mean():.4f}, stopped "
          f"before the budget {covered[early].mean():.4f} ({early.mean():.2%} of comparisons), at the budget "
          f"{covered[~early].mean():.4f}; nominal {1 - LEVEL:.4f}")
    assert right.mean() >= power_fixed - 0.03      # O'Brien-Fleming spending costs little power
    assert wrong.mean() <= LEVEL
    # the interval after data-dependent stopping is biased away from zero: it under-covers where it stopped early
    assert covered[early].mean() < 1 - LEVEL
    # no decision is possible at 6 or 10 seeds at alpha/6: the smallest exact p there, 2/2^n, is above the spent alpha
    assert not np.isin(paths.decided_look, [0, 1]).any()

    large = -16  # about 1.4 sd: every comparison is usually decided before the budget, and the sweep stops
    p = seq.evaluate(family_differences(np.random.default_rng(12), "normal", effects=(large, large)).reshape(-1, 20),
                     LOOKS, LEVEL, with_p=False)
    stop = np.where(p.decided_look >= 0, np.asarray(LOOKS)[np.maximum(p.decided_look, 0)], LOOKS[-1])
    print(f"at {large} examples: power {(p.decided_look >= 0).mean():.4f}, seeds per sweep mean "
          f"{stop.reshape(SWEEPS, FAMILY).max(axis=1).mean():.2f} (fixed 20)")
    assert stop.reshape(SWEEPS, FAMILY).max(axis=1).mean() < LOOKS[-1] - 2

    half = family_differences(np.random.default_rng(11), "normal", effects=(effect, 0))
    p = seq.evaluate(half.reshape(-1, LOOKS[-1]), LOOKS, LEVEL, with_p=False)
    stop = np.where(p.decided_look >= 0, np.asarray(LOOKS)[np.maximum(p.decided_look, 0)], LOOKS[-1])
    null_decided = (p.decided_look >= 0).reshape(SWEEPS, 3, 2)[:, :, 1].any(axis=1).mean()
    print(f"half the family null: seeds per sweep mean {stop.reshape(SWEEPS, FAMILY).max(axis=1).mean():.2f}; "
          f"false alarms among the null half {null_decided:.4f}")
    assert null_decided <= bound()


def _t_interval_covers(rows: np.ndarray, stop: np.ndarray, truth: float) -> np.ndarray:
    covered = np.empty(len(rows), bool)
    for n in np.unique(stop):
        sel = stop == n
        x = rows[sel, :n].astype(float)
        half = stats.t.ppf(1 - LEVEL / 2, n - 1) * x.std(axis=1, ddof=1) / math.sqrt(n)
        covered[sel] = np.abs(x.mean(axis=1) - truth) <= half
    return covered
