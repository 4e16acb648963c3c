import math

import pytest
import torch
from torch import nn

from workers.data.registry import dataset_names, get_dataset_descriptor
from workers.masks import prunable_names
from workers.models import build_model
from workers.models.registry import get_model_descriptor, model_names


def built(name, shape, seed=0, num_classes=10, **options):
    torch.manual_seed(seed)
    return build_model(name, shape, num_classes, **options)


def shape_for(name):
    """The first registered dataset's input shape (default options) that the model builds for."""
    for dataset in dataset_names():
        shape = get_dataset_descriptor(dataset).input_shape_for({})
        try:
            build_model(name, shape, 2)
            return shape
        except ValueError:
            continue
    pytest.fail(f"model {name} builds for no registered dataset's input shape")


def test_an_unknown_model_is_refused_listing_the_registered_ones():
    with pytest.raises(ValueError, match=f"unknown model 'resnet18'; known: {', '.join(model_names())}$"):
        build_model("resnet18", (3, 32, 32), 10)


@pytest.mark.parametrize("name", model_names())
def test_forward_shape_and_the_descriptors_output_layer_rule(name):
    shape, descriptor = shape_for(name), get_model_descriptor(name)
    model = built(name, shape, num_classes=7)
    out = model(torch.randn(3, *shape))
    assert out.shape == (3, 7)
    modules = dict(model.named_modules())
    assert model.output_layer == descriptor.output_layer
    assert modules[model.output_layer].out_features == 7
    assert model.prune_output is descriptor.prune_output
    assert (f"{model.output_layer}.weight" in prunable_names(model)) is descriptor.prune_output
    assert (f"{model.output_layer}.weight" in prunable_names(model, prune_output=True))


@pytest.mark.parametrize("name", model_names())
def test_same_seed_same_weights_other_seed_other_weights(name):
    shape = shape_for(name)
    a, b, c = built(name, shape, 3).state_dict(), built(name, shape, 3).state_dict(), built(name, shape, 4).state_dict()
    out = f"{get_model_descriptor(name).output_layer}.weight"
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a[out], c[out])


@pytest.mark.parametrize("name", model_names())
def test_builders_take_exactly_their_typed_options(name):
    """build_model passes every option, validated, so a builder declares no default of its own."""
    import inspect
    descriptor = get_model_descriptor(name)
    params = list(inspect.signature(descriptor.build).parameters.values())
    assert [p.name for p in params[:2]] == ["input_shape", "num_classes"]
    assert {p.name for p in params[2:]} == set(descriptor.options.model_fields)
    assert all(p.default is p.empty for p in params[2:]), "a builder default would be a second default"


def test_the_pruning_rule_defaults_follow_openlth():
    # OpenLTH leaves fc.weight unpruned for mnist_lenet_* and cifar_vgg_*, and prunes every layer of cifar_resnet_*.
    assert [get_model_descriptor(n).prune_output for n in ("lenet_300_100", "vgg16", "resnet20")] == [False, False, True]


def test_lenet_300_100_parameter_count():
    model = built("lenet_300_100", (1, 28, 28))
    weights = sum(p.numel() for n, p in model.named_parameters() if n.endswith("weight"))
    assert weights == 784 * 300 + 300 * 100 + 100 * 10
    assert sum(p.numel() for p in model.parameters()) == weights + 300 + 100 + 10


def test_resnet20_parameter_count():
    model = built("resnet20", (3, 32, 32))
    conv3 = 9
    stage1 = 6 * 16 * 16 * conv3
    stage2 = 16 * 32 * conv3 + 5 * 32 * 32 * conv3 + 16 * 32      # + 1x1 shortcut
    stage3 = 32 * 64 * conv3 + 5 * 64 * 64 * conv3 + 32 * 64
    conv_and_fc = 3 * 16 * conv3 + stage1 + stage2 + stage3 + 64 * 10
    bn = 2 * (16 + 6 * 16 + 7 * 32 + 7 * 64)                     # weight + bias of every BatchNorm
    assert sum(p.numel() for p in model.parameters()) == conv_and_fc + bn + 10 == 272_474
    assert sum(p.numel() for n, p in model.named_parameters() if n in prunable_names(model)) == conv_and_fc


def test_resnet20_1d_is_the_same_network_with_1d_convs():
    model = built("resnet20_1d", (40,))
    weights = prunable_names(model)
    assert len(weights) == len(prunable_names(built("resnet20", (3, 32, 32)))) == 22  # 19 conv + 2 shortcut + fc
    assert all(p.dim() == 3 for n, p in model.named_parameters() if n in weights and n != "fc.weight")
    x = torch.randn(2, 40)
    model.eval()
    assert torch.equal(model(x), model(x.unsqueeze(1)))


def test_mlp_hidden_sizes_and_flattening():
    model = built("mlp", (1, 8, 8), hidden=[32, 16, 8])
    linear = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linear] == [(64, 32), (32, 16), (16, 8), (8, 10)]
    assert model(torch.randn(5, 1, 8, 8)).shape == (5, 10)
    assert [m.out_features for m in built("mlp", (40,)).modules() if isinstance(m, nn.Linear)] == [300, 100, 10]


def test_conv1d_takes_flat_or_channel_inputs_and_its_options():
    model = built("conv1d", (40,)).eval()
    x = torch.randn(2, 40)
    assert torch.equal(model(x), model(x.unsqueeze(1)))
    small = built("conv1d", (2, 40), channels=[8, 16], kernel_sizes=[3, 5], batchnorm=False)
    convs = [m for m in small.modules() if isinstance(m, nn.Conv1d)]
    assert [(m.in_channels, m.out_channels, m.kernel_size[0]) for m in convs] == [(2, 8, 3), (8, 16, 5)]
    assert small.fc.in_features == 16 * 10  # 40 -> 20 -> 10 after two pools
    assert not any(isinstance(m, nn.BatchNorm1d) for m in small.modules())
    assert small(torch.randn(3, 2, 40)).shape == (3, 10)


def test_vgg16_layers():
    model = built("vgg16", (3, 32, 32))
    convs = [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert convs == [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.modules()) == 4
    assert model.fc.in_features == 512


def test_initialisation_follows_openlth():
    model = built("resnet20", (3, 32, 32))
    big = model.blocks[8].conv2.weight  # 64 x 64 x 3 x 3: fan_in 576
    assert big.std().item() == pytest.approx(math.sqrt(2 / 576), rel=0.05)
    bn = model.blocks[0].bn1
    assert 0 <= bn.weight.min() and bn.weight.max() <= 1 and bn.weight.std() > 0.1
    assert torch.count_nonzero(bn.bias) == 0
    mlp = built("mlp", (40,))
    assert all(torch.count_nonzero(m.bias) == 0 for m in mlp.modules() if isinstance(m, nn.Linear))
    assert mlp.hidden[0].weight.std().item() == pytest.approx(math.sqrt(2 / 40), rel=0.05)
    ones = built("resnet20", (3, 32, 32), bn_init="ones")
    assert torch.equal(ones.bn.weight, torch.ones(16))


@pytest.mark.parametrize("name", [n for n in model_names()
                                  if "bn_running_stats" in get_model_descriptor(n).options.model_fields])
def test_bn_without_running_statistics_has_no_buffers_and_evaluates_with_batch_statistics(name):
    shape = shape_for(name)
    model = built(name, shape, 5, bn_running_stats=False)
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert norms and all(not m.track_running_stats for m in norms)
    assert list(model.buffers()) == []
    with_stats = built(name, shape, 5)
    assert len(list(with_stats.buffers())) == 3 * len(norms)     # running mean, variance and counter
    params = dict(with_stats.named_parameters())                 # the same seed draws the same parameters
    assert all(torch.equal(p, params[n]) for n, p in model.named_parameters())
    model.eval()
    x = torch.randn(6, *shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        # batch statistics in evaluation: an example's output depends on its batch
        assert not torch.allclose(model(x)[:3], model(x[:3]), atol=1e-4)
        model.train()
        assert torch.equal(model(x), model.eval()(x))


@pytest.mark.parametrize("name, shape, extra", [
    # 1x1 -> 3x3 shortcut convs (16->32 and 32->64 channels): 8 more weights per 1x1 weight in 2-D, 2 more in 1-D
    ("resnet20", (3, 32, 32), 8 * (16 * 32 + 32 * 64)),         # 20 480
    ("resnet20_1d", (40,), 2 * (16 * 32 + 32 * 64)),            # 5 120
])
def test_shortcut_kernel_3_adds_the_hand_computed_weights(name, shape, extra):
    one, three = built(name, shape), built(name, shape, shortcut_kernel=3)
    count = lambda m: sum(p.numel() for p in m.parameters())
    assert count(three) - count(one) == extra
    assert sum(p.numel() for n, p in three.named_parameters() if n in prunable_names(three)) - \
        sum(p.numel() for n, p in one.named_parameters() if n in prunable_names(one)) == extra
    shortcuts = [b.shortcut[0] for b in three.blocks if isinstance(b.shortcut, nn.Sequential)]
    assert [(c.kernel_size[0], c.stride[0], c.padding[0]) for c in shortcuts] == [(3, 2, 1), (3, 2, 1)]
    x = torch.randn(2, *shape)
    assert three(x).shape == (2, 10)
    with pytest.raises(ValueError, match=f"model {name}: shortcut_kernel: Input should be 1 or 3"):
        built(name, shape, shortcut_kernel=5)
    with pytest.raises(ValueError, match=f"model {name}: bn_running_stats: Input should be a valid boolean"):
        built(name, shape, bn_running_stats="no")


def test_batchnorm_keeps_running_statistics():
    model = built("resnet20_1d", (40,))
    before = model.bn.running_mean.clone()
    model.train()
    model(torch.randn(8, 40) + 3)
    assert not torch.equal(model.bn.running_mean, before)


@pytest.mark.parametrize("name, shape, message", [
    ("resnet20", (40,), r"needs input shape \(C, H, W\).*use resnet20_1d"),
    ("vgg16", (1, 8, 8), "H, W >= 16"),
    ("conv1d", (3, 32, 32), r"needs input shape \(L,\) or \(C, L\)"),
    ("resnet20_1d", (1, 28, 28), r"needs input shape \(L,\) or \(C, L\)"),
    ("conv1d", (4,), "too short for 3 pooling stages"),
])
def test_unsuitable_input_shapes(name, shape, message):
    with pytest.raises(ValueError, match=message):
        build_model(name, shape, 10)


def test_bad_options():
    with pytest.raises(TypeError, match="model lenet_300_100 has no option.* hidden; known: none"):
        build_model("lenet_300_100", (1, 28, 28), 10, hidden=[10])
    with pytest.raises(TypeError, match="has no option.* depth; known: bn_running_stats, bn_init, width, shortcut_kernel"):
        build_model("resnet20", (3, 32, 32), 10, depth=56)
    with pytest.raises(ValueError, match="one kernel size per conv layer"):
        build_model("conv1d", (40,), 10, channels=[8, 8])
    with pytest.raises(ValueError, match="conv1d kernel sizes must be odd"):
        build_model("conv1d", (40,), 10, kernel_sizes=[4, 3, 3])
    with pytest.raises(ValueError, match="model vgg16: bn_init: Input should be 'uniform' or 'ones'"):
        build_model("vgg16", (3, 32, 32), 10, bn_init="zeros")
    with pytest.raises(ValueError, match="model mlp: hidden.0: Input should be greater than 0"):
        build_model("mlp", (40,), 10, hidden=[0])
