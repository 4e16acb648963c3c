"""GMP and GraNet mask schedules on tiny networks with hand-computed answers."""
import math

import pytest
import torch

from workers import masks
from workers.methods.gradual import schedules as gradual
from workers.methods.gradual.schedules import GMPSchedule, GradualPlan, GraNetSchedule
from workers.training.loop import Recipe, train

from tests.helpers.tiny_nets import NAMES, TinyMLP, gen, tiny_data


def hand_model():
    """Weights whose magnitudes are 1..20 tenths, interleaved over the two layers."""
    torch.manual_seed(2)
    model = TinyMLP()
    with torch.no_grad():
        model.l1.weight.copy_(0.1 * torch.tensor([[1., -3, 5], [-7, 9, -11], [13, -15, 17], [-19, 20, -2]]))
        model.l2.weight.copy_(0.1 * torch.tensor([[4., -6, 8, -10], [12, -14, 16, -18]]))
    return model


class Capture:
    """Wraps a schedule and keeps every mask it switches to."""

    def __init__(self, schedule):
        self.schedule, self.switches = schedule, {}

    def update(self, iteration, params, mask):
        new = self.schedule.update(iteration, params, mask)
        if new is not None:
            self.switches[iteration] = {n: m.clone() for n, m in new.items()}
        return new


def kept_magnitudes(mask):
    """The hand-set magnitudes (in tenths) that `mask` keeps."""
    params = dict(hand_model().named_parameters())
    return sorted(round(float(v) * 10) for n in NAMES for v in params[n].detach().abs()[mask[n]])


# --- the cubic schedule -------------------------------------------------------------------------

def test_cubic_sparsity_follows_zhu_and_gupta_on_its_grid_and_lands_on_the_target():
    plan = GradualPlan(start=2, every=3, events=4)
    grid = [2, 5, 8, 11, 14]
    assert [gradual.cubic_sparsity(t, plan, 0.0, 0.8) for t in grid] == pytest.approx(
        [0.0, 0.8 * (1 - 27 / 64), 0.8 * (1 - 1 / 8), 0.8 * (1 - 1 / 64), 0.8])
    assert gradual.cubic_sparsity(14, plan, 0.0, 0.8) == 0.8
    # sparse-to-sparse: s_f + (s_i - s_f)(1 - j/n)^3
    assert gradual.cubic_sparsity(8, plan, 0.5, 0.9) == pytest.approx(0.9 - 0.4 / 8)
    assert gradual.cubic_sparsity(0, plan, 0.5, 0.9) == 0.5 and gradual.cubic_sparsity(99, plan, 0.5, 0.9) == 0.9
    assert [t for t in range(20) if plan.prunes_at(t)] == grid
    assert [t for t in range(20) if plan.on_grid(t)] == grid + [17]


def test_plan_scales_the_authors_recipe_to_the_run():
    # The authors' CIFAR run: 160 epochs of 391 iterations, every 1000, pruning until epoch 110.
    paper = gradual.plan_gradual(160 * 391)
    assert (paper.start, paper.every, paper.events, paper.end) == (0, 1000, 43, 43000)
    short = gradual.plan_gradual(1000)
    assert (short.start, short.every, short.events) == (0, 16, 42)   # 1000/62560·1000 = 16.0; 687 // 16
    assert gradual.plan_gradual(100, 0.1, 0.5, every=7) == GradualPlan(10, 7, 5)
    with pytest.raises(ValueError, match="leaves no pruning step"):
        gradual.plan_gradual(10, 0.0, 0.5, every=6)
    with pytest.raises(ValueError, match="start_fraction < end_fraction"):
        gradual.plan_gradual(100, 0.5, 0.5)


def test_plan_starts_where_a_later_run_starts_and_never_schedules_a_step_the_run_cannot_take():
    # A run from the rewind point k = 30: the steps before it would fall in the dense warm-up.
    assert gradual.plan_gradual(100, 0.1, 0.5, every=7, not_before=30) == GradualPlan(30, 7, 2)
    assert gradual.plan_gradual(100, 0.4, 0.5, every=7, not_before=30) == GradualPlan(40, 7, 1)
    # end_fraction 1: the last step is at most T − 1 (train runs iterations 0 .. T − 1), so s_f is reached.
    assert gradual.plan_gradual(20, 0.0, 1.0, every=5) == GradualPlan(0, 5, 3)
    assert gradual.plan_gradual(20, 0.0, 1.0, every=1).end == 19
    with pytest.raises(ValueError, match="leaves no pruning step between iteration 30"):
        gradual.plan_gradual(100, 0.1, 0.3, every=7, not_before=30)


# --- GMP ----------------------------------------------------------------------------------------

def test_gmp_prunes_by_global_magnitude_to_exact_counts_at_each_step():
    model, data = hand_model(), tiny_data()
    plan = GradualPlan(start=0, every=2, events=4)
    schedule = GMPSchedule(plan, 0.75, gen())
    capture = Capture(schedule)
    # An lr far below the weights' rounding step (the recipe refuses 0): they keep their hand-set magnitudes, so
    # the expected survivors are known.
    result = train(model, data, Recipe(epochs=3, batch_size=8, lr=1e-30, momentum=0.0), 0, 0, 12,
                   mask=masks.full_mask(model, NAMES), mask_schedule=capture)
    # d = 20; keep = floor(20 (1 - s_j)): s_1 = 0.75·37/64 → 11, s_2 = 0.75·7/8 → 6, s_3, s_4 → 5
    assert [(h["iteration"], h["kept"]) for h in schedule.history] == [(0, 20), (2, 11), (4, 6), (6, 5), (8, 5)]
    assert sorted(capture.switches) == [2, 4, 6]
    assert kept_magnitudes(capture.switches[2]) == list(range(10, 21))
    assert kept_magnitudes(capture.switches[4]) == list(range(15, 21))
    assert kept_magnitudes(capture.switches[6]) == list(range(16, 21))
    assert masks.sparsity(result.mask) == 0.75
    assert [h["target_sparsity"] for h in schedule.history] == pytest.approx(
        [0, 0.75 * 37 / 64, 0.75 * 7 / 8, 0.75 * 63 / 64, 0.75])


def test_gmp_masks_shrink_monotonically_and_pruned_weights_never_revive_while_training():
    model, data = hand_model(), tiny_data()
    plan = gradual.plan_gradual(24, 0.0, 0.75, every=3)
    schedule = GMPSchedule(plan, 0.9, gen(3))
    capture = Capture(schedule)
    result = train(model, data, Recipe(epochs=6, batch_size=8, lr=0.1, momentum=0.9, weight_decay=0.01), 0, 0, 24,
                   mask=masks.full_mask(model, NAMES), mask_schedule=capture)
    seq = [capture.switches[t] for t in sorted(capture.switches)]
    for before, after in zip(seq, seq[1:]):
        assert all((after[n] <= before[n]).all() for n in NAMES)      # subset: never revived
    assert masks.count_kept(result.mask) == masks.keep_count(20, 0.1) == 2
    for n, p in model.named_parameters():
        if n in NAMES:
            assert (p[~result.mask[n]] == 0).all() and (p[result.mask[n]] != 0).all()
    kept = [h["kept"] for h in schedule.history]
    assert kept == sorted(kept, reverse=True)
    assert kept == [masks.keep_count(20, 1 - gradual.cubic_sparsity(h["iteration"], plan, 0, 0.9))
                    for h in schedule.history]


def test_gmp_is_reproducible_from_its_generator():
    runs = []
    for _ in range(2):
        model = hand_model()
        model.l1.weight.data[0] = 0.5     # ties, broken by the generator
        schedule = GMPSchedule(GradualPlan(0, 1, 2), 0.5, gen(9))
        mask = masks.full_mask(model, NAMES)
        params = dict(model.named_parameters())
        for t in range(3):
            mask = schedule.update(t, params, mask) or mask
        runs.append(mask)
    assert all(torch.equal(runs[0][n], runs[1][n]) for n in NAMES)


# --- GraNet -------------------------------------------------------------------------------------

def test_prune_and_regrow_drops_smallest_survivors_and_regrows_largest_gradients_per_layer():
    weights = {"a": torch.tensor([[0.5, -0.1, 0.0], [0.3, 0.0, -0.8]]),
               "b": torch.tensor([[1.0, 0.2], [0.0, -0.4]])}
    mask = {"a": torch.tensor([[1, 1, 0], [1, 0, 1]], dtype=torch.bool),
            "b": torch.tensor([[1, 1], [0, 1]], dtype=torch.bool)}
    grads = {"a": torch.tensor([[0.0, 0.2, -0.9], [0.05, 0.4, 0.1]]),
             "b": torch.tensor([[0.0, 0.7], [0.3, 0.1]])}
    new = gradual.prune_and_regrow(weights, grads, mask, 0.5, gen())
    # a: 4 survivors, drop ⌈2⌉ = 2 (|−0.1|, |0.3|); regrow the zeros with |g| 0.9 and 0.4
    assert new["a"].tolist() == [[True, False, True], [False, True, True]]
    # b: 3 survivors, drop ⌈1.5⌉ = 2 (0.2, −0.4); regrow 0.7 (the just-dropped 0.2) and 0.3
    assert new["b"].tolist() == [[True, True], [True, False]]
    assert {n: int(m.sum()) for n, m in new.items()} == {"a": 4, "b": 3}
    same = gradual.prune_and_regrow(weights, grads, mask, 0.0, gen())
    assert all(torch.equal(same[n], mask[n]) for n in mask)


def test_granet_prune_rate_is_the_authors_cosine_decay():
    total = 100
    assert gradual.granet_prune_rate(0, total) == 0.5
    assert gradual.granet_prune_rate(50, total) == pytest.approx(0.005 + 0.495 / 2)
    assert gradual.granet_prune_rate(25, total) == pytest.approx(0.005 + 0.495 * (1 + math.cos(math.pi / 4)) / 2)
    assert gradual.granet_prune_rate(100, total) == pytest.approx(0.005)
    # What their CosineDecay computes: torch's CosineAnnealingLR(0.5, T_max, eta_min=0.005), stepped per iteration.
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(opt, total, 0.005)
    for t in range(1, total + 1):
        opt.step()
        cosine.step()
        assert gradual.granet_prune_rate(t, total) == pytest.approx(opt.param_groups[0]["lr"], abs=1e-12)


def test_granet_keeps_the_count_at_every_step_and_ends_at_the_target():
    model, data = hand_model(), tiny_data()
    plan = GradualPlan(start=0, every=2, events=4)
    schedule = GraNetSchedule(plan, 0.75, 16, gen(4))
    capture = Capture(schedule)
    result = train(model, data, Recipe(epochs=4, batch_size=8, lr=0.1, momentum=0.9), 0, 0, 16,
                   mask=masks.full_mask(model, NAMES), mask_schedule=capture)
    history = schedule.history
    assert [h["iteration"] for h in history] == [0, 2, 4, 6, 8, 10, 12, 14]   # regrowth goes on past the end
    assert [h["kept"] for h in history] == [20, 11, 6, 5, 5, 5, 5, 5]          # the GMP counts, kept by regrowth
    assert history[0]["prune_rate"] == 0.0 and history[0]["regrown"] == 0   # nothing trained yet at iteration 0
    assert [h["prune_rate"] for h in history[1:]] == pytest.approx([gradual.granet_prune_rate(t, 16)
                                                                    for t in range(2, 16, 2)])
    assert sum(h["regrown"] for h in history) > 0
    assert masks.count_kept(result.mask) == 5
    for n, p in model.named_parameters():
        if n in NAMES:
            assert (p[~result.mask[n]] == 0).all()


def test_granet_regrows_where_the_dense_gradient_is_largest_among_the_zeros():
    model = hand_model()
    params = dict(model.named_parameters())
    mask = masks.full_mask(model, NAMES)
    mask["l2.weight"][:, :2] = False                          # four zeros in l2
    with torch.no_grad():
        params["l2.weight"][:, :2] = 0
    for n in NAMES:
        params[n].grad = torch.zeros_like(params[n])
    params["l2.weight"].grad[1, 0] = 5.0                       # the one zero with a large gradient
    schedule = GraNetSchedule(GradualPlan(start=0, every=10, events=1), 0.3, 100, gen())
    new = schedule.update(10, params, mask)
    # GMP to 30 %: keep 14 of the 16 survivors, dropping magnitudes 1 and 2 (both in l1).  Then
    # l2's 4 survivors (8, 10, 16, 18 tenths) lose ⌈r·4⌉ = 2, the 8 and the 10, and regrow two
    # zeros: l2[1, 0], the only large gradient, and one of the zero-gradient ties.
    rate = gradual.granet_prune_rate(10, 100)
    assert math.ceil(rate * 4) == 2 and math.ceil(rate * 10) == 5
    assert new["l2.weight"][1, 0]
    assert not new["l2.weight"][0, 2] or not new["l2.weight"][0, 3]
    assert new["l2.weight"][1, 2] and new["l2.weight"][1, 3]        # 16 and 18 survive
    assert {n: int(new[n].sum()) for n in NAMES} == {"l1.weight": 10, "l2.weight": 4}
    assert schedule.history[-1]["regrown"] >= 1


def test_granet_skips_regrowth_on_an_overflowed_step_and_refuses_missing_gradients():
    model = hand_model()
    params = dict(model.named_parameters())
    mask = masks.full_mask(model, NAMES)
    for n in NAMES:
        params[n].grad = torch.ones_like(params[n])
    params["l1.weight"].grad[0, 0] = float("inf")          # an fp16 overflow that GradScaler will skip
    schedule = GraNetSchedule(GradualPlan(start=0, every=5, events=1), 0.5, 20, gen())
    new = schedule.update(5, params, mask)
    assert schedule.history[-1]["regrowth_skipped"] and schedule.history[-1]["regrown"] == 0
    assert kept_magnitudes(new) == list(range(11, 21))     # the GMP step alone
    params["l2.weight"].grad = None
    with pytest.raises(ValueError, match="GraNet regrows by gradient, but l2.weight has no gradient"):
        schedule.update(10, params, new)


# --- sparse-to-sparse initial mask --------------------------------------------------------------

def test_erk_counts_match_the_hand_computed_allocation():
    shapes = {"a": (4, 3), "b": (2, 4)}
    # raw densities (4+3)/12 and (2+4)/8; at 0.5: ε = 10/13, real counts 5.38 and 4.62 -> 5 and 5
    assert gradual.erk_counts(shapes, 0.5) == {"a": 5, "b": 5}
    # at 0.9 layer b would exceed 1: it is made dense and ε re-solved (10 of 12 left for a)
    assert gradual.erk_counts(shapes, 0.9) == {"a": 10, "b": 8}
    # raw 18/288 and 18/80 -> ε = 36.8/36, real counts 18.4 and 18.4 of 36 kept
    assert gradual.erk_counts({"c": (8, 4, 3, 3), "d": (10, 8)}, 0.1) == {"c": 18, "d": 18}
    assert gradual.uniform_counts(shapes, 0.5) == {"a": 6, "b": 4}
    assert gradual.erk_counts(shapes, 1.0) == {"a": 12, "b": 8}


def test_initial_mask_has_the_exact_count_and_is_reproducible_from_the_generator():
    weights = {n: p.detach() for n, p in hand_model().named_parameters() if n in NAMES}
    a = gradual.initial_mask(weights, 0.5, gen(7))
    b = gradual.initial_mask(weights, 0.5, gen(7))
    c = gradual.initial_mask(weights, 0.5, gen(8))
    assert {n: int(m.sum()) for n, m in a.items()} == {"l1.weight": 5, "l2.weight": 5}
    assert all(torch.equal(a[n], b[n]) for n in NAMES)
    assert any(not torch.equal(a[n], c[n]) for n in NAMES)
    uniform = gradual.initial_mask(weights, 0.5, gen(7), "uniform")
    assert {n: int(m.sum()) for n, m in uniform.items()} == {"l1.weight": 6, "l2.weight": 4}
    with pytest.raises(ValueError, match="unknown initial mask distribution 'er'"):
        gradual.initial_mask(weights, 0.5, gen(), "er")


def test_sparse_to_sparse_granet_starts_at_the_initial_sparsity():
    model, data = hand_model(), tiny_data()
    weights = {n: p.detach() for n, p in model.named_parameters() if n in NAMES}
    start = gradual.initial_mask(weights, 0.5, gen(5))
    schedule = GraNetSchedule(GradualPlan(0, 2, 3), 0.8, 8, gen(6), initial_sparsity=0.5)
    result = train(model, data, Recipe(epochs=2, batch_size=8, lr=0.1), 0, 0, 8, mask=start, mask_schedule=schedule)
    # 10 kept at s_i = 0.5; then 0.8 + (0.5 − 0.8)(1 − j/3)^3: j=1 -> 0.711 (5 kept), j=2 -> 0.789 (4), j=3 -> 0.8 (4)
    assert [h["kept"] for h in schedule.history] == [10, 5, 4, 4]
    assert masks.count_kept(result.mask) == 4
