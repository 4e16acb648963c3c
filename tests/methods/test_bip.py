"""BiP: the implicit-gradient score update, the top-k mask and the two levels on tiny networks."""
import math

import pytest
import torch
import torch.nn.functional as F

from workers import masks
from workers.methods.bip import bilevel as bip
from workers.methods.bip.bilevel import BiLevel, BiPConfig
from workers.training.loop import Diverged

from tests.helpers.tiny_nets import NAMES, TinyMLP, gen, tiny_data


def hand_model():
    torch.manual_seed(0)
    model = TinyMLP()
    with torch.no_grad():
        model.l1.weight.copy_(torch.tensor([[0.9, -0.2, 0.4], [-0.7, 0.5, 0.1], [0.3, -0.8, 0.6], [0.05, 0.35, -1.0]]))
        model.l1.bias.copy_(torch.tensor([0.1, 0.2, -0.1, 0.3]))
        model.l2.weight.copy_(torch.tensor([[0.6, -0.45, 0.25, -0.15], [-0.3, 0.7, -0.55, 0.2]]))
    return model


def cfg(**over):
    return BiPConfig(**({"epochs": 2, "batch_size": 8} | over))


# --- the upper-level gradient -------------------------------------------------------------------

def test_upper_gradient_matches_the_hand_computed_paper_and_code_forms():
    s = torch.tensor([2.0, -1.0, 0.5])
    theta = torch.tensor([1.0, -2.0, 3.0])
    m = torch.tensor([True, True, False])
    g = torch.tensor([0.5, 0.25, -1.0])
    # paper: sign(s)·(θ·g − (1/γ)·m·g²) with 1/γ = 0.1
    paper = bip.upper_gradient(s, theta, m, g, 0.1, "paper")
    torch.testing.assert_close(paper, torch.tensor([0.5 - 0.025, -(-0.5 - 0.00625), -3.0]))
    # code: ∂ℓ/∂s − (1/γ)(∂ℓ/∂s)², ∂ℓ/∂s = sign(s)·θ·g = (0.5, 0.5, −3)
    code = bip.upper_gradient(s, theta, m, g, 0.1, "code")
    torch.testing.assert_close(code, torch.tensor([0.475, 0.475, -3.9]))
    torch.testing.assert_close(bip.upper_gradient(s, theta, m, g, 0.0, "paper"), torch.tensor([0.5, 0.5, -3.0]))
    with pytest.raises(ValueError, match="unknown BiP implicit_gradient 'exact'"):
        bip.upper_gradient(s, theta, m, g, 0.1, "exact")


@pytest.mark.parametrize("form", ["paper", "code"])
def test_one_upper_step_moves_the_scores_by_the_documented_update(form):
    model = hand_model()
    c = cfg(implicit_gradient=form, ig_scale=0.5, mask_lr=0.2, mask_weight_decay=0.01)
    state = BiLevel(model, NAMES, 0.5, c, gen())
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    s0 = {n: s.detach().clone() for n, s in state.scores.items()}
    mask = state.mask()
    x, y = tiny_data(24).x_train[:6], tiny_data(24).y_train[:6]
    state.upper_step(x, y, mask)
    # By hand: g = ∂ℓ/∂z at z = m ⊙ θ, through an independent forward.
    z1 = (before["l1.weight"] * mask["l1.weight"]).requires_grad_()
    z2 = (before["l2.weight"] * mask["l2.weight"]).requires_grad_()
    logits = F.linear(torch.relu(F.linear(x, z1, before["l1.bias"])), z2, before["l2.bias"])
    g = dict(zip(NAMES, torch.autograd.grad(F.cross_entropy(logits, y), [z1, z2])))
    for n in NAMES:
        sign, theta, m = torch.sign(s0[n]), before[n], mask[n].float()
        direct = sign * theta * g[n]
        grad = direct - 0.5 * (sign * m * g[n] ** 2 if form == "paper" else direct ** 2)
        # first SGD step with momentum: the buffer is the gradient plus weight decay
        torch.testing.assert_close(state.scores[n].detach(), s0[n] - 0.2 * (grad + 0.01 * s0[n]))
        assert (g[n][~mask[n]] != 0).any()      # pruned scores receive a gradient too (straight through)
    for n, p in model.named_parameters():       # the upper level leaves every parameter alone
        assert torch.equal(p, before[n]) and p.grad is None


def test_the_mask_is_the_global_top_k_of_the_absolute_scores():
    model = hand_model()
    state = BiLevel(model, NAMES, 0.25, cfg(), gen())
    # scores start at the weights: the first mask is global magnitude pruning (5 of 20)
    assert sorted(float(v) for n in NAMES for v in model.get_parameter(n).detach().abs()[state.mask()[n]]) == \
        pytest.approx([0.7, 0.7, 0.8, 0.9, 1.0])   # |−0.7| in l1, 0.7 in l2
    with torch.no_grad():
        state.scores["l2.weight"].copy_(torch.tensor([[5.0, -4.0, 0.0, 0.0], [0.0, 0.0, 0.0, -3.0]]))
        state.scores["l1.weight"].zero_()
        state.scores["l1.weight"][2, 1] = -2.5
        state.scores["l1.weight"][0, 0] = 2.0
    mask = state.mask()
    assert mask["l2.weight"].nonzero().tolist() == [[0, 0], [0, 1], [1, 3]]
    assert mask["l1.weight"].nonzero().tolist() == [[0, 0], [2, 1]]


def test_the_lower_step_changes_only_unmasked_weights_and_decay_shrinks_the_pruned_ones():
    model = hand_model()
    state = BiLevel(model, NAMES, 0.5, cfg(weight_decay=0.0), gen())
    mask = state.mask()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    scores = {n: s.detach().clone() for n, s in state.scores.items()}
    x, y = tiny_data(24).x_train[:8], tiny_data(24).y_train[:8]
    state.lower_step(x, y, mask)
    for n in NAMES:
        p = model.get_parameter(n).detach()
        assert torch.equal(p[~mask[n]], before[n][~mask[n]])
        assert (p[mask[n]] != before[n][mask[n]]).any()
        assert torch.equal(state.scores[n].detach(), scores[n])
    assert not torch.equal(model.l2.bias.detach(), before["l2.bias"])   # biases train too

    model = hand_model()
    decayed = BiLevel(model, NAMES, 0.5, cfg(weight_decay=0.1, lr=0.3), gen())
    decayed.lower_step(x, y, mask)
    for n in NAMES:
        # pruned θ see only the (γ/2)‖θ‖² term: the first momentum step is θ − lr·γ·θ
        torch.testing.assert_close(model.get_parameter(n).detach()[~mask[n]], (before[n] * (1 - 0.3 * 0.1))[~mask[n]])


def test_learning_rate_schedules_follow_the_authors_configs():
    c = cfg(epochs=8, lr=0.2, mask_lr=0.1)
    assert [bip.weight_lr(c, e) for e in (0, 4)] == pytest.approx([0.2, 0.1])
    assert bip.weight_lr(c, 2) == pytest.approx(0.1 * (1 + math.cos(math.pi / 4)))
    assert [bip.mask_lr(c, e) for e in range(8)] == pytest.approx([0.1] * 4 + [0.01] * 2 + [0.001] * 2)


# --- the search ---------------------------------------------------------------------------------

def test_search_returns_the_top_k_of_its_final_scores_and_leaves_the_bip_network_in_the_model():
    model, data = hand_model(), tiny_data(24)
    model.eval()
    seen = []
    result = bip.bip_search(model, NAMES, data, 0.3, cfg(epochs=3), gen(2), on_epoch=lambda e, i: seen.append(i))
    keep = masks.keep_count(20, 0.3)
    expected = masks.global_topk({n: s.abs() for n, s in result.scores.items()}, keep, gen())
    assert all(torch.equal(result.mask[n], expected[n]) for n in NAMES)
    assert masks.count_kept(result.mask) == keep == 6
    for n in NAMES:
        p = model.get_parameter(n).detach()
        assert (p[~result.mask[n]] == 0).all() and (p[result.mask[n]] != 0).all()
    assert [i["epoch"] for i in seen] == [1, 2, 3]
    assert result.info["steps"] == 3 * 3 == result.info["lower_steps"]     # ceil(24 / 8) per epoch
    assert result.info["kept"] == 6 and 0 <= result.info["overlap_with_initial"] <= 1
    assert result.info["score_threshold"] >= 0 and math.isfinite(result.info["loss"])
    assert not model.training and not any(m.training for m in model.modules())


def test_search_is_deterministic_under_the_generator_and_counts_lower_steps():
    runs = [bip.bip_search(hand_model(), NAMES, tiny_data(24), 0.3, cfg(lower_steps=2), gen(s)) for s in (4, 4, 5)]
    assert runs[0].info == runs[1].info
    assert all(torch.equal(runs[0].scores[n], runs[1].scores[n]) for n in NAMES)
    assert any(not torch.equal(runs[0].scores[n], runs[2].scores[n]) for n in NAMES)
    assert runs[0].info["lower_steps"] == 2 * runs[0].info["steps"] == 2 * 2 * 3


def test_non_finite_scores_or_losses_raise_diverged_naming_the_epoch():
    model = hand_model()
    with torch.no_grad():
        model.l1.weight[0, 0] = float("nan")      # the scores start at the weights
    with pytest.raises(Diverged, match=r"BiP scores are not finite in BiP epoch 1 \(step 1\)"):
        bip.bip_search(model, NAMES, tiny_data(24), 0.5, cfg(), gen())
    model = hand_model()
    with torch.no_grad():
        model.l2.bias[0] = float("inf")           # an infinite logit: the loss is NaN from the first step
    with pytest.raises(Diverged, match=r"not finite in BiP epoch 1 \(step [12]\)"):
        bip.bip_search(model, NAMES, tiny_data(24), 0.5, cfg(), gen())


def test_config_and_density_are_validated():
    with pytest.raises(ValueError, match="unknown BiP implicit_gradient 'hessian'; known: paper, code"):
        cfg(implicit_gradient="hessian")
    with pytest.raises(ValueError, match="BiP lower_steps must be an integer >= 1"):
        cfg(lower_steps=0)
    with pytest.raises(ValueError, match="BiP mask_lr must be > 0"):
        cfg(mask_lr=0)
    with pytest.raises(ValueError, match="BiP ig_scale must be >= 0"):
        cfg(ig_scale=-1)
    for density in (0.0, 1.0):
        with pytest.raises(ValueError, match="BiP density must be in"):
            bip.bip_search(hand_model(), NAMES, tiny_data(24), density, cfg(), gen())
    with pytest.raises(ValueError, match="keeps none of the 20 prunable weights"):
        BiLevel(hand_model(), NAMES, 0.01, cfg(), gen())
