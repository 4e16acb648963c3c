"""The mask-schedule hook of `train`: dense gradients, switching masks, optimizer state, bit-identity."""
import pytest
import torch
import torch.nn.functional as F

from workers import masks
from workers.training.loop import Recipe, epoch_order, train

from tests.helpers.tiny_nets import NAMES, TinyMLP, tiny_data


def tiny_model(seed=2):
    torch.manual_seed(seed)
    return TinyMLP()


def recipe(**over):
    return Recipe(**({"epochs": 2, "batch_size": 4, "lr": 0.1, "momentum": 0.9, "weight_decay": 0.01} | over))


def some_mask():
    return {"l1.weight": torch.tensor([[1, 0, 1], [1, 1, 0], [0, 1, 1], [1, 1, 1]], dtype=torch.bool),
            "l2.weight": torch.tensor([[1, 0, 1, 1], [0, 1, 1, 1]], dtype=torch.bool)}


class Recorder:
    """Records what the hook shows at every iteration; switches to `switches[iteration]` if given."""

    def __init__(self, switches=None):
        self.switches = switches or {}
        self.calls, self.grads, self.weights, self.masks = [], {}, {}, {}

    def update(self, iteration, params, mask):
        self.calls.append(iteration)
        self.grads[iteration] = {n: params[n].grad.clone() for n in NAMES}
        self.weights[iteration] = {n: params[n].detach().clone() for n in NAMES}
        self.masks[iteration] = {n: m.clone() for n, m in mask.items()}
        return self.switches.get(iteration)


def test_a_schedule_that_never_updates_leaves_training_bit_identical():
    data = tiny_data(16)
    plain, hooked = tiny_model(), tiny_model()
    without = train(plain, data, recipe(), 3, 1, 9, mask=some_mask())
    recorder = Recorder()
    with_hook = train(hooked, data, recipe(), 3, 1, 9, mask=some_mask(), mask_schedule=recorder)
    for (name, a), (_, b) in zip(plain.named_parameters(), hooked.named_parameters()):
        assert torch.equal(a, b), name
    assert recorder.calls == list(range(1, 9))
    assert without.curve == with_hook.curve
    assert all(torch.equal(with_hook.mask[n], some_mask()[n]) for n in NAMES)
    assert all(torch.equal(without.mask[n], some_mask()[n]) for n in NAMES)


def test_the_schedule_sees_the_dense_gradient_including_pruned_positions():
    data, seed = tiny_data(16), 5
    model = tiny_model()
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    recorder = Recorder()
    train(model, data, recipe(), seed, 0, 1, mask=some_mask(), mask_schedule=recorder)
    # The same first batch by hand: weights masked to zero, gradient of the mean cross-entropy.
    idx = epoch_order(seed, 0, len(data.x_train))[:4]
    w1 = (start["l1.weight"] * some_mask()["l1.weight"]).requires_grad_()
    w2 = (start["l2.weight"] * some_mask()["l2.weight"]).requires_grad_()
    hidden = torch.relu(F.linear(data.x_train[idx], w1, start["l1.bias"]))
    loss = F.cross_entropy(F.linear(hidden, w2, start["l2.bias"]), data.y_train[idx])
    g1, g2 = torch.autograd.grad(loss, [w1, w2])
    torch.testing.assert_close(recorder.grads[0]["l1.weight"], g1)
    torch.testing.assert_close(recorder.grads[0]["l2.weight"], g2)
    pruned = ~some_mask()["l2.weight"]
    assert (recorder.grads[0]["l2.weight"][pruned] != 0).all()   # not zeroed before the hook
    assert (recorder.weights[0]["l2.weight"][pruned] == 0).all()


def switch_then_regrow():
    """Prune l2.weight[0, :2] at iteration 2 and regrow them at iteration 4."""
    pruned = masks.full_mask(tiny_model(), NAMES)
    pruned["l2.weight"][0, :2] = False
    return {2: pruned, 4: masks.full_mask(tiny_model(), NAMES)}


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_a_switch_zeroes_pruned_weights_and_their_optimizer_state_so_regrowth_starts_fresh(optimizer):
    data = tiny_data(16)
    model = tiny_model()
    rec = recipe(optimizer=optimizer, lr=0.01)
    recorder = Recorder(switch_then_regrow())
    result = train(model, data, rec, 0, 0, 5, mask=masks.full_mask(model, NAMES), mask_schedule=recorder)
    where = (0, slice(0, 2))
    # Moving at the step before the switch: the optimizer holds momentum there that a regrown
    # weight would inherit without the reset.
    assert (recorder.weights[2]["l2.weight"][where] != recorder.weights[1]["l2.weight"][where]).all()
    assert (recorder.weights[3]["l2.weight"][where] == 0).all()   # zero after the switch ...
    assert (recorder.weights[4]["l2.weight"][where] == 0).all()   # ... and kept zero
    assert not recorder.masks[3]["l2.weight"][where].any() and not recorder.masks[4]["l2.weight"][where].any()
    assert result.mask["l2.weight"].all()
    g = recorder.grads[4]["l2.weight"][where]
    grown = model.l2.weight.detach()[where]
    # Regrown from 0 with empty state: exactly one fresh optimizer step on this step's gradient.
    if optimizer == "sgd":
        expected = -rec.lr * g                                     # momentum buffer starts at g
    else:
        beta1, beta2, eps, t = 0.9, 0.999, 1e-8, 5                 # Adam's 5th step, zeroed moments
        m, v = (1 - beta1) * g, (1 - beta2) * g * g
        expected = -rec.lr / (1 - beta1 ** t) * m / ((v.sqrt() / (1 - beta2 ** t) ** 0.5) + eps)
    torch.testing.assert_close(grown, expected, rtol=1e-5, atol=0)
    assert (g != 0).all()


def test_schedule_errors_are_one_line_and_name_the_problem():
    data, model = tiny_data(16), tiny_model()
    with pytest.raises(ValueError, match="a mask schedule needs a starting mask"):
        train(model, data, recipe(), 0, 0, 2, mask_schedule=Recorder())
    bad_names = Recorder({0: {"l1.weight": torch.ones(4, 3, dtype=torch.bool)}})
    with pytest.raises(ValueError, match=r"over \['l1.weight'\], but the mask in force covers"):
        train(model, data, recipe(), 0, 0, 2, mask=some_mask(), mask_schedule=bad_names)
    float_mask = some_mask() | {"l2.weight": torch.ones(2, 4)}
    with pytest.raises(ValueError, match=r"mask\['l2.weight'\] of torch.float32 \(2, 4\); expected torch.bool"):
        train(model, data, recipe(), 0, 0, 2, mask=some_mask(), mask_schedule=Recorder({1: float_mask}))
