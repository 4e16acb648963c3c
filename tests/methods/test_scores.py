"""One-shot saliency scores against hand-derived formulas on tiny networks."""
import math

import pytest
import torch
from torch import nn

from workers import masks
from workers.methods.oneshot import scoring as scores
from workers.methods.oneshot.criteria import CRITERIA, GRASP_TEMPERATURE


class TwoLayerLinear(nn.Module):
    """f(x) = W2 W1 x: small enough to differentiate by hand."""
    output_layer = "fc"
    prune_output = True

    def __init__(self, n_in=4, n_hidden=3, n_out=2):
        super().__init__()
        self.hidden = nn.Linear(n_in, n_hidden, bias=False)
        self.fc = nn.Linear(n_hidden, n_out, bias=False)

    def forward(self, x):
        return self.fc(self.hidden(x))


class OneLinear(nn.Module):
    output_layer = "fc"
    prune_output = True

    def __init__(self, n_in=4, n_out=3):
        super().__init__()
        self.fc = nn.Linear(n_in, n_out, bias=False)

    def forward(self, x):
        return self.fc(x)


class LinearBNLinear(nn.Module):
    output_layer = "fc"
    prune_output = True

    def __init__(self, relu=False):
        super().__init__()
        self.hidden = nn.Linear(2, 3, bias=False)
        self.bn = nn.BatchNorm1d(3)
        self.fc = nn.Linear(3, 2 if relu else 1, bias=relu)
        self.relu = relu

    def forward(self, x):
        h = self.bn(self.hidden(x))
        return self.fc(torch.relu(h) if self.relu else h)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def make(cls, seed=0, **kw):
    torch.manual_seed(seed)
    return cls(**kw)


def batches_for(n_in, n_classes, sizes, seed=0):
    g = gen(seed)
    return [(torch.randn(n, n_in, generator=g), torch.randint(n_classes, (n,), generator=g)) for n in sizes]


def names_of(model):
    return masks.prunable_names(model)


# --- random and magnitude -------------------------------------------------------------------

def test_random_scores_are_standard_normal_draws_from_the_generator():
    model = make(TwoLayerLinear)
    s1 = scores.score("random", model, names_of(model), [], gen(5))
    s2 = scores.score("random", model, names_of(model), [], gen(5))
    s3 = scores.score("random", model, names_of(model), [], gen(6))
    g = gen(5)
    expected = {"hidden.weight": torch.randn(3, 4, generator=g), "fc.weight": torch.randn(2, 3, generator=g)}
    for n in expected:
        assert torch.equal(s1[n], s2[n]) and torch.equal(s1[n], expected[n])
    assert not torch.equal(s1["hidden.weight"], s3["hidden.weight"])


def test_magnitude_is_absolute_weight():
    model = make(TwoLayerLinear)
    s = scores.score("magnitude", model, names_of(model), [], gen())
    assert torch.equal(s["hidden.weight"], model.hidden.weight.detach().abs())
    assert torch.equal(s["fc.weight"], model.fc.weight.detach().abs())


def test_magnitude_oneshot_keeps_the_largest_weights():
    model = make(TwoLayerLinear)
    with torch.no_grad():
        model.hidden.weight.copy_(torch.tensor([[0.1, -0.9, 0.2, 0.3], [0.4, -0.05, 0.6, -0.7],
                                                 [0.15, 0.25, -0.35, 0.45]]))
        model.fc.weight.copy_(torch.tensor([[-0.8, 0.01, 0.02], [0.03, 0.5, -0.55]]))
    mask = scores.oneshot_mask("magnitude", model, names_of(model), 0.3, [], gen())
    # d = 18, keep floor(0.3 * 18) = 5: |w| in {0.9, 0.8, 0.7, 0.6, 0.55}
    assert masks.count_kept(mask) == 5
    assert mask["hidden.weight"].nonzero().tolist() == [[0, 1], [1, 2], [1, 3]]
    assert mask["fc.weight"].nonzero().tolist() == [[0, 0], [1, 2]]


# --- SNIP -------------------------------------------------------------------------------------

def softmax_by_hand(z):
    e = torch.exp(z - z.max(dim=1, keepdim=True).values)
    return e / e.sum(dim=1, keepdim=True)


def test_snip_equals_hand_derived_gradient_of_mean_cross_entropy():
    model = make(TwoLayerLinear)
    batches = batches_for(4, 2, [5, 3])
    w1 = model.hidden.weight.detach().double()
    w2 = model.fc.weight.detach().double()
    g1, g2 = torch.zeros_like(w1), torch.zeros_like(w2)
    for x, y in batches:
        x = x.double()
        h = x @ w1.T
        p = softmax_by_hand(h @ w2.T)
        delta = (p - nn.functional.one_hot(y, 2).double()) / len(x)  # d(mean CE)/dz
        g2 += delta.T @ h
        g1 += (delta @ w2).T @ x
    s = scores.score("snip", model, names_of(model), batches, gen())
    torch.testing.assert_close(s["hidden.weight"].double(), (w1 * g1).abs(), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(s["fc.weight"].double(), (w2 * g2).abs(), rtol=1e-5, atol=1e-7)


def test_snip_and_grasp_need_data():
    model = make(TwoLayerLinear)
    for criterion in ("snip", "grasp", "grasp_magnitude"):
        with pytest.raises(ValueError, match=f"{criterion} needs at least one batch"):
            scores.score(criterion, model, names_of(model), [], gen())


# --- GraSP ------------------------------------------------------------------------------------

def grasp_by_hand(w, batches):
    """θ ⊙ Hg for z = W x / T and mean CE per batch, H and g summed over batches.

    ∇_W L_b = (1/N) Σ (p - e_y) xᵀ / T;  H_b[G] = (1/N) Σ (diag p - p pᵀ)(G x) xᵀ / T².
    """
    t = GRASP_TEMPERATURE
    g = torch.zeros_like(w)
    for x, y in batches:
        p = softmax_by_hand(x @ w.T / t)
        g += (p - nn.functional.one_hot(y, w.shape[0]).double()).T @ x / (len(x) * t)
    hg = torch.zeros_like(w)
    for x, y in batches:
        p = softmax_by_hand(x @ w.T / t)
        gx = x @ g.T                                       # (N, c): G x_n
        jac_gx = p * gx - p * (p * gx).sum(1, keepdim=True)  # (diag p - p pᵀ) G x_n
        hg += jac_gx.T @ x / (len(x) * t * t)
    return g, hg


def test_grasp_is_theta_times_hessian_gradient_product():
    model = make(OneLinear)
    with torch.no_grad():
        model.fc.weight.mul_(60.0)  # large logits so the /200 temperature still leaves curvature
    batches = [(x * 30, y) for x, y in batches_for(4, 3, [6, 4], seed=1)]
    w = model.fc.weight.detach().double()
    dbatches = [(x.double(), y) for x, y in batches]
    g, hg = grasp_by_hand(w, dbatches)

    # Independent check of the hand formula with the full Hessian.
    def loss(flat):
        wm = flat.view_as(w)
        return sum(nn.functional.cross_entropy(x @ wm.T / GRASP_TEMPERATURE, y) for x, y in dbatches)
    hessian = torch.autograd.functional.hessian(loss, w.reshape(-1))
    torch.testing.assert_close(hessian @ g.reshape(-1), hg.reshape(-1))

    expected = w * hg
    s = scores.score("grasp", model, names_of(model), batches, gen())["fc.weight"].double()
    scale = expected.abs().max()
    torch.testing.assert_close(s / scale, expected / scale, rtol=1e-4, atol=1e-5)

    # Keep-largest of the signed score, which is not the same as keeping the largest |score|.
    keep = 6
    mask = scores.oneshot_mask("grasp", model, names_of(model), keep / w.numel(), batches, gen())["fc.weight"]
    top_signed = set(torch.topk(expected.reshape(-1), keep).indices.tolist())
    top_abs = set(torch.topk(expected.abs().reshape(-1), keep).indices.tolist())
    assert top_signed != top_abs
    assert set(mask.reshape(-1).nonzero().flatten().tolist()) == top_signed
    inverted = scores.oneshot_mask("grasp", model, names_of(model), keep / w.numel(), batches, gen(),
                                   invert=True)["fc.weight"]
    assert set(inverted.reshape(-1).nonzero().flatten().tolist()) == \
        set(torch.topk(-expected.reshape(-1), keep).indices.tolist())

    # GraSP-magnitude: the same θ ⊙ Hg, ranked by its absolute value.
    mag = scores.score("grasp_magnitude", model, names_of(model), batches, gen())["fc.weight"].double()
    torch.testing.assert_close(mag / scale, expected.abs() / scale, rtol=1e-4, atol=1e-5)
    mask = scores.oneshot_mask("grasp_magnitude", model, names_of(model), keep / w.numel(), batches, gen())
    assert set(mask["fc.weight"].reshape(-1).nonzero().flatten().tolist()) == top_abs


# --- SynFlow ----------------------------------------------------------------------------------

def test_synflow_equals_path_norm_formula_on_two_layer_linear_net():
    # R = 1ᵀ|W2||W1|1  =>  score(W1_ij) = |W1_ij|·Σ_k|W2_ki|,  score(W2_ki) = |W2_ki|·Σ_j|W1_ij|
    model = make(TwoLayerLinear)
    w1 = model.hidden.weight.detach().double().abs()
    w2 = model.fc.weight.detach().double().abs()
    s = scores.score("synflow", model, names_of(model), [], gen(), input_shape=(4,))
    torch.testing.assert_close(s["hidden.weight"], w1 * w2.sum(0)[:, None])
    torch.testing.assert_close(s["fc.weight"], w2 * w1.sum(1)[None, :])


def test_synflow_uses_absolute_bn_running_statistics_in_eval_mode():
    model = make(LinearBNLinear)
    with torch.no_grad():
        model.bn.running_mean.copy_(torch.tensor([-0.3, 0.2, -0.1]))
        model.bn.running_var.copy_(torch.tensor([2.0, 0.5, 1.5]))
        model.bn.weight.copy_(torch.tensor([-1.5, 0.7, 1.2]))
        model.bn.bias.copy_(torch.tensor([-0.2, 0.4, 0.1]))
    model.train()  # scoring must still use the running statistics
    w1 = model.hidden.weight.detach().double().abs()
    w2 = model.fc.weight.detach().double().abs()[0]
    mean, var = model.bn.running_mean.double().abs(), model.bn.running_var.double()
    gamma, beta = model.bn.weight.detach().double().abs(), model.bn.bias.detach().double().abs()
    gain = gamma / torch.sqrt(var + model.bn.eps)
    # R = Σ_i |W2_i| ((Σ_j |W1_ij| - |μ_i|) · |γ_i|/√(v_i+ε) + |β_i|)
    expected_w1 = w1 * (w2 * gain)[:, None]
    expected_w2 = w2 * ((w1.sum(1) - mean) * gain + beta)
    s = scores.score("synflow", model, names_of(model), [], gen(), input_shape=(2,))
    torch.testing.assert_close(s["hidden.weight"], expected_w1)
    torch.testing.assert_close(s["fc.weight"][0], expected_w2)
    assert model.training


def test_synflow_ignores_the_data():
    model = make(TwoLayerLinear)
    a = scores.score("synflow", model, names_of(model), batches_for(4, 2, [7], seed=1), gen())
    b = scores.score("synflow", model, names_of(model), batches_for(4, 2, [2, 3], seed=2), gen())
    c = scores.score("synflow", model, names_of(model), [], gen(), input_shape=(4,))
    for n in a:
        assert torch.equal(a[n], b[n]) and torch.equal(a[n], c[n])
    with pytest.raises(ValueError, match="input shape"):
        scores.score("synflow", model, names_of(model), [], gen())


def test_synflow_rounds_shrink_monotonically_to_the_exact_count():
    model = make(TwoLayerLinear, n_in=8, n_hidden=16, n_out=4)
    names = names_of(model)
    d = 8 * 16 + 16 * 4
    for invert in (False, True):
        seen = []
        final = scores.oneshot_mask("synflow", model, names, 0.1, [], gen(), rounds=10, invert=invert,
                                    input_shape=(8,), on_round=lambda r, m: seen.append(m))
        assert len(seen) == 10
        for r, m in enumerate(seen, start=1):
            assert masks.count_kept(m) == math.floor(0.1 ** (r / 10) * d + 1e-9)
        for earlier, later in zip(seen, seen[1:]):
            for n in names:
                assert not (later[n] & ~earlier[n]).any()  # nothing pruned ever comes back
        assert masks.count_kept(final) == math.floor(0.1 * d) == 19


def test_synflow_defaults_to_100_rounds_and_others_to_one():
    model = make(TwoLayerLinear)
    counts = {}
    for criterion in ("synflow", "magnitude"):
        rounds = []
        scores.oneshot_mask(criterion, model, names_of(model), 0.5, [], gen(), input_shape=(4,),
                            on_round=lambda r, m: rounds.append(r))
        counts[criterion] = len(rounds)
    assert counts == {"synflow": 100, "magnitude": 1}


def test_masked_weights_score_zero_in_synflow():
    model = make(TwoLayerLinear)
    mask = masks.full_mask(model, names_of(model))
    mask["hidden.weight"][0, 0] = False
    mask["fc.weight"][:, 1] = False  # hidden unit 1 no longer reaches the output
    s = scores.score("synflow", model, names_of(model), [], gen(), mask=mask, input_shape=(4,))
    assert s["hidden.weight"][0, 0] == 0 and (s["hidden.weight"][1] == 0).all()
    assert (s["fc.weight"][:, 1] == 0).all()


# --- the model is left exactly as found -----------------------------------------------------

@pytest.mark.parametrize("criterion", list(scores.CRITERIA))
def test_scoring_leaves_the_model_untouched(criterion):
    model = make(LinearBNLinear, relu=True)
    with torch.no_grad():
        model.bn.running_mean.fill_(-0.5)
        model.bn.running_var.fill_(3.0)
        model.bn.weight.fill_(-0.7)
    model.train()
    model.bn.eval()  # a mixed state must come back exactly as it was
    model.fc.bias.requires_grad_(False)
    model.hidden.weight.grad = torch.full_like(model.hidden.weight, 7.0)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [m.training for m in model.modules()]
    requires = [p.requires_grad for p in model.parameters()]

    batches = batches_for(2, 2, [4, 4])
    mask = scores.oneshot_mask(criterion, model, names_of(model), 0.5, batches, gen(), rounds=3)

    assert masks.count_kept(mask) == math.floor(0.5 * 12)
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]) and v.dtype == state[k].dtype, k
    assert [m.training for m in model.modules()] == flags
    assert [p.requires_grad for p in model.parameters()] == requires
    assert torch.equal(model.hidden.weight.grad, torch.full_like(model.hidden.weight, 7.0))
    assert model.fc.weight.grad is None


def test_unknown_criterion_lists_the_known_ones():
    model = make(TwoLayerLinear)
    with pytest.raises(ValueError, match=f"unknown pruning criterion 'obd'; known: {', '.join(CRITERIA)}$"):
        scores.oneshot_mask("obd", model, names_of(model), 0.5, [], gen())
    with pytest.raises(ValueError, match="known: random"):
        scores.score("obd", model, names_of(model), [], gen())


def test_oneshot_is_reproducible_under_the_same_seed():
    model = make(TwoLayerLinear)
    a = scores.oneshot_mask("random", model, names_of(model), 0.4, [], gen(3))
    b = scores.oneshot_mask("random", model, names_of(model), 0.4, [], gen(3))
    assert all(torch.equal(a[n], b[n]) for n in a)


# --- data for SNIP / GraSP --------------------------------------------------------------------

def test_per_class_sample_takes_exactly_per_class_of_each_class():
    y = torch.tensor([0] * 5 + [1] * 6 + [2] * 7)
    x = torch.arange(len(y), dtype=torch.float32)[:, None]  # x remembers the example's index
    xs, ys = scores.per_class_sample(x, y, 3, 3, gen(1))
    assert torch.bincount(ys, minlength=3).tolist() == [3, 3, 3]
    assert torch.equal(y[xs[:, 0].long()], ys)  # pairs stay together
    assert len(set(xs[:, 0].tolist())) == 9
    again = scores.per_class_sample(x, y, 3, 3, gen(1))
    assert torch.equal(again[0], xs) and torch.equal(again[1], ys)
    with pytest.raises(ValueError, match="class 0 has 5 training examples, fewer than samples_per_class=6"):
        scores.per_class_sample(x, y, 6, 3, gen(1))
