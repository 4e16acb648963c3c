import pytest
import torch
from torch import nn

from workers import masks


class TwoLayer(nn.Module):
    output_layer = "fc2"
    prune_output = False

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(4, 3)
        self.bn = nn.BatchNorm1d(3)
        self.fc2 = nn.Linear(3, 2)

    def forward(self, x):
        return self.fc2(torch.relu(self.bn(self.fc1(x))))


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_prunable_names_skip_biases_norms_and_output_by_default():
    m = TwoLayer()
    assert masks.prunable_names(m) == ["fc1.weight"]
    assert masks.prunable_names(m, prune_output=True) == ["fc1.weight", "fc2.weight"]


@pytest.mark.parametrize("density,expected", [(0.5, 50), (0.29, 29), (0.0, 0), (1.0, 100), (0.011529215, 1)])
def test_keep_count_is_exact_floor(density, expected):
    assert masks.keep_count(100, density) == expected


def test_global_topk_keeps_exactly_k_largest_across_tensors():
    scores = {"a": torch.tensor([[5.0, 1.0], [3.0, 0.5]]), "b": torch.tensor([4.0, 2.0, 6.0])}
    m = masks.global_topk(scores, 3, gen())
    assert m["a"].tolist() == [[True, False], [False, False]]
    assert m["b"].tolist() == [True, False, True]
    inv = masks.global_topk(scores, 2, gen(), largest=False)
    assert inv["a"].tolist() == [[False, True], [False, True]]
    assert masks.count_kept(inv) == 2


def test_global_topk_ties_give_exact_count_and_are_seeded():
    scores = {"a": torch.zeros(10), "b": torch.zeros(7)}
    m1 = masks.global_topk(scores, 5, gen(1))
    m2 = masks.global_topk(scores, 5, gen(1))
    m3 = masks.global_topk(scores, 5, gen(2))
    assert masks.count_kept(m1) == 5
    assert all(torch.equal(m1[n], m2[n]) for n in m1)
    assert not all(torch.equal(m1[n], m3[n]) for n in m1)


def test_sparsity_measured_from_mask():
    m = {"a": torch.tensor([True, False, False, False]), "b": torch.tensor([True, True, False, False])}
    assert masks.sparsity(m) == pytest.approx(5 / 8)
    assert masks.layer_densities(m) == {"a": 0.25, "b": 0.5}


def test_layerwise_shuffle_keeps_each_layer_count_and_moves_positions():
    m = masks.global_topk({"a": torch.arange(100.0), "b": torch.arange(50.0) + 25}, 60, gen())
    s = masks.layerwise_shuffle(m, gen(3))
    for n in m:
        assert int(s[n].sum()) == int(m[n].sum())
    assert not torch.equal(s["a"], m["a"])


def test_apply_mask_zeroes_pruned_weights_only():
    model = TwoLayer()
    before = model.fc1.weight.detach().clone()
    mask = masks.global_topk({"fc1.weight": before.abs()}, 5, gen())
    masks.apply_mask(model, mask)
    assert torch.equal(model.fc1.weight[mask["fc1.weight"]], before[mask["fc1.weight"]])
    assert (model.fc1.weight[~mask["fc1.weight"]] == 0).all()
