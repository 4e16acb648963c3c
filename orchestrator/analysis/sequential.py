"""The group-sequential sign-flip rule of `submit --until-decided`: exact boundaries from the sign patterns.

The data of one comparison are integer paired differences d_1, d_2, ... (correct test examples of B minus
those of A, seed by seed), analysed at looks n_1 < ... < n_K = N seeds; the statistic at look k is the sum
S_k = d_1 + ... + d_{n_k} (the mean times n_k: the same test at a fixed n).

What is exact, and why. Under "no difference" (A and B exchangeable within a seed) each d_i is as likely
+|d_i| as -|d_i|, independently across seeds and independently of the absolute values. Conditional on
|d_1|, ..., |d_{n_k}| the 2^{n_k} sign patterns are therefore equally likely, and the joint null distribution
of (S_1, ..., S_k) is known exactly: S_j only involves the first n_j signs, so every pattern of the first
n_k signs gives one path S_1, ..., S_k. Boundaries c_1, c_2, ... are computed look by look, from the absolute
values seen so far only:

    c_k = the smallest c with  P0(no crossing at looks 1..k-1, |S_k| >= c | |d_1..d_{n_k}|)
                                 <= alpha(t_k) - P0(a crossing at looks 1..k-1 | |d_1..d_{n_{k-1}}|),

where "crossing at look j" is |S_j| >= c_j and alpha(t) is the Lan-DeMets O'Brien-Fleming-type spending
function 2 - 2 Phi(z_{1-alpha/2} / sqrt(t)) at information time t_k = n_k / N. The probability of crossing at
the earlier looks does not depend on the later absolute values (the earlier crossings are functions of the
earlier signs, which are independent of them), so summing over looks, P0(ever crossing | all |d|) <= alpha(1)
= alpha for EVERY set of absolute values: the type-I error is controlled exactly, conditionally, for any
distribution of differences symmetric about zero under the null (normal, heavy-tailed, bimodal, discrete with
ties and zeros). Discreteness only makes the rule conservative: alpha not spendable at one look (no set of
patterns fits in it) stays available at the next.

How it is computed. No sampling: the distribution of S over sign patterns is a walk on the integers, so the
number of not-yet-crossed patterns ending at each value s is carried look to look (adding seed i shifts the
counts by +|d_i| and by -|d_i| and adds them; a crossing look zeroes the counts with |s| >= c_k). Counts are
int64 (2^n patterns, n <= MAX_SEEDS) and compared with floor(alpha_k * 2^n), an exact product: the boundary is
exact, with no rounding anywhere. The work is N x (2 sum|d| + 1) additions per comparison, and the same
function evaluates thousands of simulated sweeps at once (one row each).

Multiplicity: a family of m comparisons (methods x sparsities against the reference) is controlled by a
Bonferroni split: each comparison runs the rule above at level alpha / m (its own O'Brien-Fleming spending
function at that level). P(any false decision) <= sum over the true nulls of alpha / m <= alpha, whatever the
dependence between comparisons (they share the reference's runs). Holm-type recycling of the alpha of decided
comparisons was not used: its proof for group-sequential tests needs rejection regions that grow with the
level, which these discrete conditional boundaries do not guarantee (spending more at an early look can raise a
later boundary).

A comparison is decided at the first look where |S_k| >= c_k (B better if S_k > 0, else A better) and frozen:
later looks neither re-test nor revise it. One that never crosses is "undecided at budget" - not "no
difference": the rule controls false decisions, it does not show equivalence. The interval printed beside a
decision is the paired t interval at level 1 - alpha/m on the seeds it was decided at; after data-dependent
stopping it is not guaranteed to cover (tests/stats/test_sequential.py measures its coverage).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MAX_SEEDS = 60  # 2^60 sign patterns still fit an int64 count
A_BETTER, B_BETTER, UNDECIDED = "A better", "B better", "undecided"


def obf_spending(t, alpha: float):
    """Lan-DeMets O'Brien-Fleming-type cumulative alpha at information time t in (0, 1]:
    2 - 2 Phi(z_{1-alpha/2} / sqrt(t)); alpha at t = 1."""
    from scipy import stats

    t = np.asarray(t, dtype=float)
    return 2.0 * stats.norm.sf(stats.norm.isf(alpha / 2.0) / np.sqrt(t))


def check_looks(looks) -> list[int]:
    looks = [int(n) for n in looks]
    if not looks or looks[0] < 1 or any(b <= a for a, b in zip(looks, looks[1:])):
        raise ValueError(f"looks must be increasing seed counts >= 1, got {looks}")
    if looks[-1] > MAX_SEEDS:
        raise ValueError(f"looks: at most {MAX_SEEDS} seeds (exact sign-pattern counts), got {looks[-1]}")
    return looks


def cumulative_alpha(looks, level: float) -> np.ndarray:
    """alpha(t_k) at each look, t_k = n_k / N with N the last look (the budget)."""
    looks = check_looks(looks)
    out = obf_spending(np.asarray(looks, dtype=float) / looks[-1], level)
    out[-1] = level  # alpha(1) = level exactly, not up to the normal quantile's rounding
    return out


@dataclass(frozen=True)
class Paths:
    """The rule evaluated on rows of differences (one comparison a row) at every look whose seeds the rows hold.

    Arrays have shape (rows, looks): sums S_k (int64), boundary c_k (int64; -1 where no attainable |S_k|
    reaches the spendable alpha, i.e. nothing can be decided at that look), crossed (|S_k| >= c_k), alpha_spent
    (the exact null probability of having crossed by look k), p_look (the exact one-look sign-flip p-value of
    S_k, ignoring the other looks: what a naive per-look test uses), p_stagewise (the null probability of an
    earlier crossing or, without one, |S_k| at least as large as observed: <= alpha_k exactly when crossed).
    decided_look: index of the first crossing look, -1 for none."""
    looks: list[int]
    alpha_cumulative: np.ndarray
    sums: np.ndarray
    boundary: np.ndarray
    crossed: np.ndarray
    alpha_spent: np.ndarray
    p_look: np.ndarray
    p_stagewise: np.ndarray
    decided_look: np.ndarray


def _shifted_sum(counts: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """out[r, j] = counts[r, j - shift[r]] + counts[r, j + shift[r]] (0 outside): every pattern extended by a
    sign of +-shift[r]. Row-wise shifts are windows of a zero-padded copy (one gather of rows x width)."""
    rows, width = counts.shape
    pad = int(shift.max()) if rows else 0
    padded = np.zeros((rows, width + 2 * pad), dtype=counts.dtype)
    padded[:, pad:pad + width] = counts
    windows = np.lib.stride_tricks.sliding_window_view(padded, width, axis=1)  # (rows, 2 pad + 1, width), a view
    r = np.arange(rows)
    return windows[r, pad - shift] + windows[r, pad + shift]


def _tails(counts: np.ndarray, middle: int) -> np.ndarray:
    """tails[r, c] = patterns with |s| >= c, for c = 0 .. middle + 1 (the last column is 0)."""
    folded = counts[:, middle:].copy()
    folded[:, 1:] += counts[:, middle - 1::-1]
    tails = np.zeros((counts.shape[0], middle + 2), dtype=np.int64)
    tails[:, :-1] = np.cumsum(folded[:, ::-1], axis=1)[:, ::-1]
    return tails


def evaluate(diffs, looks, level: float, *, with_p: bool = True, chunk_cells: int = 1 << 24) -> Paths:
    """The rule on integer differences `diffs` (rows x seeds, or one row) at the looks whose seed counts the rows
    hold (all rows the same length), each row at `level` (the per-comparison alpha). Exact; see the module.
    Rows are processed in chunks of about `chunk_cells` counts, so memory stays bounded."""
    d = np.asarray(diffs)
    if d.ndim == 1:
        d = d[None, :]
    if d.dtype.kind not in "iu":
        if not np.all(np.isfinite(d)) or not np.all(d == np.round(d)):
            raise ValueError("the sign-flip rule takes integer differences (counts of correct examples)")
        d = d.astype(np.int64)
    d = d.astype(np.int64)
    all_looks = check_looks(looks)
    looks = [n for n in all_looks if n <= d.shape[1]]
    if not looks:
        raise ValueError(f"the first look needs {all_looks[0]} seeds, the rows hold {d.shape[1]}")
    d = d[:, :looks[-1]]
    if not 0.0 < level < 1.0:
        raise ValueError(f"alpha must be between 0 and 1, got {level!r}")
    alpha_k = cumulative_alpha(all_looks, level)[:len(looks)]
    totals = np.abs(d).sum(axis=1)
    order = np.argsort(totals, kind="stable")  # chunks of similar width waste less
    parts, start = [], 0
    while start < d.shape[0]:
        stop = start + 1
        while stop < d.shape[0] and (stop - start + 1) * (2 * int(totals[order[stop]]) + 1) <= chunk_cells:
            stop += 1
        parts.append((order[start:stop], _evaluate_rows(d[order[start:stop]], looks, alpha_k, with_p)))
        start = stop
    fields = {}
    for name in ("sums", "boundary", "crossed", "alpha_spent", "p_look", "p_stagewise"):
        out = np.empty((d.shape[0], len(looks)), dtype=parts[0][1][name].dtype)
        for rows, part in parts:
            out[rows] = part[name]
        fields[name] = out
    crossed = fields["crossed"]
    decided = np.where(crossed.any(axis=1), crossed.argmax(axis=1), -1)
    return Paths(looks=looks, alpha_cumulative=alpha_k, decided_look=decided, **fields)


def _evaluate_rows(d: np.ndarray, looks: list[int], alpha_k: np.ndarray, with_p: bool) -> dict:
    rows = d.shape[0]
    middle = int(np.abs(d).sum(axis=1).max())
    width = 2 * middle + 1
    # Patterns that have not crossed, by value of S; 2^30 patterns still fit int32 (half the memory traffic).
    alive = np.zeros((rows, width), dtype=np.int32 if looks[-1] <= 30 else np.int64)
    alive[:, middle] = 1
    full = alive.copy() if with_p else None           # every pattern (for the one-look p-value)
    spent = np.zeros(rows, dtype=np.int64)            # crossed patterns, in units of 2^-n
    out = {name: np.zeros((rows, len(looks)), dtype=dt) for name, dt in
           (("sums", np.int64), ("boundary", np.int64), ("crossed", bool), ("alpha_spent", float),
            ("p_look", float), ("p_stagewise", float))}
    seen, row_index = 0, np.arange(rows)
    for k, n in enumerate(looks):
        for i in range(seen, n):
            a = np.abs(d[:, i])
            alive = _shifted_sum(alive, a)
            spent *= 2
            if with_p:
                full = _shifted_sum(full, a)
        seen = n
        s = d[:, :n].sum(axis=1)
        observed = np.abs(s)
        tails = _tails(alive, middle)
        # floor(alpha_k 2^n) - spent: multiplying by a power of two is exact in floating point.
        budget = np.int64(math.floor(alpha_k[k] * 2.0 ** n)) - spent
        fits = tails[:, 1:] <= budget[:, None]           # c = 1 .. middle + 1; the last always fits (0 <= budget)
        c = fits.argmax(axis=1) + 1
        reachable = c <= np.abs(d[:, :n]).sum(axis=1)    # some pattern of these |d| reaches |S| >= c
        crossing_patterns = tails[row_index, c]
        before = spent.copy()
        spent = spent + crossing_patterns
        alive *= np.abs(np.arange(width) - middle)[None, :] < c[:, None]
        scale = 2.0 ** -n
        out["sums"][:, k] = s
        out["boundary"][:, k] = np.where(reachable, c, -1)
        out["crossed"][:, k] = reachable & (observed >= c)
        out["alpha_spent"][:, k] = spent * scale
        out["p_stagewise"][:, k] = (before + tails[row_index, np.minimum(observed, middle + 1)]) * scale
        if with_p:
            out["p_look"][:, k] = _tails(full, middle)[row_index, np.minimum(observed, middle + 1)] * scale
        else:
            out["p_look"][:, k] = np.nan
    return out


def verdict(sum_diff: int) -> str:
    return B_BETTER if sum_diff > 0 else A_BETTER

