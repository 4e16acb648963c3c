"""The work the workers count (workers/work.py), checked against counts worked out by hand on tiny models."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from orchestrator.store.schemas import WORK_COLUMNS
from workers import masks, work
from workers.data.dataset import Dataset
from workers.methods.cts import CTSMethod
from workers.methods.cts.search import search_mask
from workers.methods.oneshot.scoring import oneshot_mask, score
from workers.training.loop import Recipe, train


class TwoLayer(nn.Module):
    """4 -> 3 -> 2, biases (which are not counted)."""
    output_layer = "fc"
    prune_output = False

    def __init__(self):
        super().__init__()
        self.hidden = nn.Linear(4, 3)
        self.fc = nn.Linear(3, 2)

    def forward(self, x):
        return self.fc(torch.relu(self.hidden(x)))


class TinyConv(nn.Module):
    """Conv1d 1 -> 2 channels, kernel 3, padding 1 on 8 positions; max-pool 2; Linear 8 -> 3."""
    output_layer = "fc"
    prune_output = False

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(1, 2, 3, padding=1)
        self.norm = nn.BatchNorm1d(2)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        x = torch.max_pool1d(torch.relu(self.norm(self.conv(x.unsqueeze(1)))), 2)
        return self.fc(x.flatten(1))


class StridedConv2d(nn.Module):
    """Conv2d 1 -> 2, kernel 3, stride 2, padding 1 on 5 x 5: a 3 x 3 output; Linear 18 -> 2."""
    output_layer = "fc"
    prune_output = False

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, stride=2, padding=1, bias=False)
        self.fc = nn.Linear(18, 2)

    def forward(self, x):
        return self.fc(self.conv(x).flatten(1))


def hidden_mask() -> masks.Mask:
    """Keeps 5 of the 12 hidden weights."""
    keep = torch.zeros(3, 4, dtype=torch.bool)
    keep.view(-1)[[0, 3, 5, 8, 11]] = True
    return {"hidden.weight": keep}


def dataset(n_train=10, n_val=3, n_test=7, shape=(4,), classes=2) -> Dataset:
    g = torch.Generator().manual_seed(0)
    x = lambda n: torch.randn((n, *shape), generator=g)  # noqa: E731
    y = lambda n: torch.randint(classes, (n,), generator=g)  # noqa: E731
    return Dataset("hand", x(n_train), y(n_train), x(n_test), y(n_test), classes, shape, x_val=x(n_val),
                   y_val=y(n_val))


def test_multiply_accumulates_of_a_masked_mlp_and_convs_by_hand():
    torch.manual_seed(0)
    mlp = TwoLayer()
    where = work.positions(mlp, torch.zeros(4))
    assert where == {"hidden.weight": 1, "fc.weight": 1}
    assert work.macs(mlp, where) == 4 * 3 + 3 * 2                   # dense: every weight once per example
    assert work.macs(mlp, where, hidden_mask()) == 5 + 3 * 2         # 5 kept hidden weights; fc not masked
    conv = TinyConv()
    where = work.positions(conv, torch.zeros(8))
    assert where == {"conv.weight": 8, "fc.weight": 1}               # padding keeps 8 positions
    keep = torch.tensor([[[1, 0, 1]], [[1, 1, 0]]], dtype=torch.bool)  # 4 of the 6 conv weights
    assert work.macs(conv, where, {"conv.weight": keep}) == 4 * 8 + 8 * 3
    strided = StridedConv2d()
    where = work.positions(strided, torch.zeros(1, 5, 5))
    assert where == {"conv.weight": 9, "fc.weight": 1}               # 3 x 3 output positions
    assert work.macs(strided, where) == 2 * 9 * 9 + 18 * 2


def test_measuring_positions_leaves_the_model_and_its_hooks_alone(monkeypatch):
    monkeypatch.setattr(work, "_POSITIONS", {})  # measured afresh, not remembered from another test
    conv = TinyConv()
    state = {k: v.clone() for k, v in conv.state_dict().items()}
    calls = []
    conv.register_forward_hook(lambda *a: calls.append(1))
    conv.train()
    assert work.positions(conv, torch.zeros(8)) == {"conv.weight": 8, "fc.weight": 1}
    assert calls == [] and conv.training
    assert all(torch.equal(v, state[k]) for k, v in conv.state_dict().items())


def test_masked_training_counts_epochs_passes_and_flops_by_hand():
    torch.manual_seed(0)
    data = dataset()
    recipe = Recipe(epochs=3, batch_size=4, lr=0.1, eval_every=1)
    with work.counting() as meter:
        train(TwoLayer(), data, recipe, seed=0, start=0, stop=3 * 3, mask=hidden_mask())
    got = meter.totals()
    macs = 5 + 3 * 2
    # 3 epochs of 10 examples (batches 4, 4, 2), each forward and backward; an evaluation of validation (3) and
    # test (7) after every epoch.
    assert got == {"train_epochs": 3.0, "search_epochs": 0.0, "forward_examples": 30, "backward_examples": 30,
                   "eval_examples": 3 * (3 + 7), "train_flops": 30 * (2 + 4) * macs, "search_flops": 0,
                   "eval_flops": 3 * 10 * 2 * macs}
    assert list(got) == list(WORK_COLUMNS)                            # named as the store's columns


def test_training_from_the_rewind_point_counts_the_fraction_of_an_epoch_it_ran():
    data = dataset()
    with work.counting() as meter:
        train(TwoLayer(), data, Recipe(epochs=2, batch_size=4, lr=0.1), seed=0, start=2, stop=6)
    got = meter.totals()
    # iterations 2..5 of 3 per epoch: batch 2 (2 examples: the last of epoch 1), then epoch 2 whole (4, 4, 2).
    assert got["train_epochs"] == 4 / 3 and got["forward_examples"] == 2 + 10
    assert got["train_flops"] == 12 * 6 * (4 * 3 + 3 * 2)


def test_nothing_is_counted_outside_a_meter():
    data = dataset()
    train(TwoLayer(), data, Recipe(epochs=1, batch_size=4, lr=0.1), seed=0, start=0, stop=3)
    with work.counting() as meter:
        pass
    assert meter.totals() == dict.fromkeys(WORK_COLUMNS, 0) | {"train_epochs": 0.0, "search_epochs": 0.0}


def test_snip_and_grasp_scoring_passes_are_counted_as_search_work():
    torch.manual_seed(0)
    model = TwoLayer()
    x, y = torch.randn(6, 4), torch.randint(2, (6,))
    batches = [(x[:4], y[:4]), (x[4:], y[4:])]
    dense = 4 * 3 + 3 * 2
    with work.counting() as meter:
        score("snip", model, ["hidden.weight"], batches, torch.Generator().manual_seed(0))
    got = meter.totals()
    assert (got["forward_examples"], got["backward_examples"], got["search_flops"]) == (6, 6, 6 * 6 * dense)
    mask = hidden_mask()
    with work.counting() as meter:
        score("grasp", model, ["hidden.weight"], batches, torch.Generator().manual_seed(0), mask=mask)
    got = meter.totals()
    masked = 5 + 3 * 2
    # The gradient pass (forward + backward), then per batch forward, backward and the double backward of the
    # Hessian-gradient product (twice a backward's FLOPs).
    assert (got["forward_examples"], got["backward_examples"]) == (12, 18)
    assert got["search_flops"] == 6 * (2 + 4) * masked + 6 * (2 + 4 + 8) * masked
    assert got["train_flops"] == got["eval_examples"] == 0 and got["search_epochs"] == 0.0


def test_synflow_counts_one_example_per_round_with_that_round_s_mask():
    torch.manual_seed(0)
    model = TwoLayer()
    kept = []
    with work.counting() as meter:
        oneshot_mask("synflow", model, ["hidden.weight"], 0.25, [], torch.Generator().manual_seed(0), rounds=3,
                     input_shape=(4,), on_round=lambda r, m: kept.append(int(m["hidden.weight"].sum())))
    # Round r scores the mask of round r - 1: all 12 hidden weights, then ⌊12·0.25^(1/3)⌋ = 7, then
    # ⌊12·0.25^(2/3)⌋ = 4; the last round keeps 3.
    assert kept == [7, 4, 3]
    got = meter.totals()
    assert (got["forward_examples"], got["backward_examples"]) == (3, 3)
    assert got["search_flops"] == sum(6 * (k + 3 * 2) for k in (12, 7, 4))


def test_a_cts_search_counts_its_epochs_and_the_dense_teacher():
    torch.manual_seed(0)
    model = TwoLayer()
    x, y = torch.randn(10, 4), torch.randint(2, (10,))
    dense = 4 * 3 + 3 * 2
    for objective, forwards in (("reverse_kl", 2), ("cross_entropy", 1)):
        method = CTSMethod(kind="cts", objective=objective)
        with work.counting() as meter:
            search_mask(model, ["hidden.weight"], x, y, 0.5, method, torch.Generator().manual_seed(0), epochs=2,
                        mask_lr=0.1, batch_size=4)
        got = meter.totals()
        # The relaxed mask keeps every weight: the searched network is dense, and so is the KL's teacher.
        assert got["search_epochs"] == 2.0
        assert (got["forward_examples"], got["backward_examples"]) == (2 * 10 * forwards, 2 * 10)
        assert got["search_flops"] == 2 * 10 * (2 * forwards + 4) * dense


def test_a_gmp_schedule_s_steps_count_the_mask_in_force():
    from workers.methods.gradual.schedules import GMPSchedule, plan_gradual

    torch.manual_seed(0)
    data = dataset(n_train=8)
    model = TwoLayer()
    names = ["hidden.weight"]
    # 2 steps per epoch, 3 epochs; prune at iterations 2 and 4 towards 0.5 sparsity (12 -> 6 weights).
    plan = plan_gradual(6, 1 / 3, 2 / 3, 2, not_before=0)
    schedule = GMPSchedule(plan, 0.5, torch.Generator().manual_seed(0))
    kept = []
    original = schedule.update

    def update(iteration, params, mask):
        new = original(iteration, params, mask)
        kept.append(int((new if new is not None else mask)["hidden.weight"].sum()))
        return new

    schedule.update = update
    with work.counting() as meter:
        train(model, data, Recipe(epochs=3, batch_size=4, lr=0.1, eval_every=100), seed=0, start=0, stop=6,
              mask=masks.full_mask(model, names), mask_schedule=schedule)
    # A step runs with the mask in force before its update: the first with all 12, then each with the last one.
    in_force = [12] + kept[:-1]
    assert meter.totals()["train_flops"] == sum(4 * 6 * (k + 6) for k in in_force)
    assert meter.totals()["eval_flops"] == (3 + 7) * 2 * (kept[-1] + 6)   # evaluated once, at the end
    assert kept[-1] == 6


def test_the_meter_refuses_an_unknown_phase():
    with pytest.raises(ValueError, match="unknown work phase 'warmup'"):
        work.forward("warmup", 1, 1)
    with pytest.raises(ValueError, match="epochs are counted for train and search"):
        work.epochs("eval", 1, 1)
    assert math.isclose(work.Meter().totals()["train_epochs"], 0.0)


class Stop(Exception):
    """What a Tune trial's thread meets when Tune stops it at a report (here: raised from `on_epoch`)."""


def test_a_loop_cut_short_counts_what_it_ran_and_an_inner_meter_adds_to_the_one_around_it():
    data = dataset()
    recipe = Recipe(epochs=3, batch_size=4, lr=0.1, eval_every=1)
    seen = []

    def stop_after_two(row):
        # Mid-loop, before the loop has counted its epochs: the work so far holds the 2 epochs run.
        seen.append(work.so_far())
        if row["epoch"] == 2:
            raise Stop

    with work.counting() as trial:
        train(TwoLayer(), data, recipe, seed=0, start=0, stop=9, mask=hidden_mask())  # a first stage, whole
        whole = trial.totals()
        with pytest.raises(Stop):
            with work.counting():
                train(TwoLayer(), data, recipe, seed=0, start=0, stop=9, mask=hidden_mask(), on_epoch=stop_after_two)
        got = trial.totals()
    macs = 5 + 3 * 2
    assert whole["train_epochs"] == 3.0 and whole["forward_examples"] == 30
    # The second stage ran 2 of its 3 epochs (20 examples forward and backward, 2 evaluations of 3 + 7).
    assert got == {"train_epochs": 5.0, "search_epochs": 0.0, "forward_examples": 50, "backward_examples": 50,
                   "eval_examples": 5 * 10, "train_flops": 50 * 6 * macs, "search_flops": 0,
                   "eval_flops": 5 * 10 * 2 * macs}
    assert seen[-1] == got and seen[0]["train_epochs"] == 4.0 and seen[0]["forward_examples"] == 40
    assert work.so_far() is None  # outside every meter


def test_a_rewound_loop_cut_short_counts_its_fraction_of_an_epoch():
    data = dataset()

    def stop(row):
        raise Stop

    with work.counting() as trial:
        with pytest.raises(Stop):
            train(TwoLayer(), data, Recipe(epochs=2, batch_size=4, lr=0.1), seed=0, start=2, stop=6, on_epoch=stop)
        # The first end of epoch is iteration 3: one step (the 2 examples of batch 3) was run.
        assert work.so_far()["train_epochs"] == 1 / 3 and work.so_far()["forward_examples"] == 2
    assert trial.totals()["train_epochs"] == 0.0  # the loop never ended: only a reading so far counts it
