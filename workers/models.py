"""Model registry: a name and the dataset's per-example input shape give a freshly initialised network.

Every model names its final linear layer in `output_layer` and says in `prune_output`
whether pruning touches it by default (OpenLTH's choice per model, see docs/methods.md).
Initialisation follows OpenLTH: kaiming-normal conv/linear weights, zero biases,
BatchNorm weight ~ U(0, 1) and bias 0; it draws from torch's global RNG, so a
`torch.manual_seed` before building fixes the weights.

Every model with BatchNorm takes `bn_running_stats` (default true): false builds BN without
running statistics, so evaluation normalises with each test batch's statistics too, as the
CTS authors' models do.
"""
from __future__ import annotations

import inspect
import math
from typing import Callable

from torch import nn
from torch.nn import functional as F

from workers.registry import PLUGIN_MODELS, unknown_model_options

_CONV = {1: nn.Conv1d, 2: nn.Conv2d}
_BN = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d}
SHORTCUT_KERNELS = (1, 3)


def _batchnorm(dims: int, channels: int, running_stats: bool) -> nn.Module:
    return _BN[dims](channels, track_running_stats=running_stats)


def build_model(name: str, input_shape: tuple[int, ...], num_classes: int, **options) -> nn.Module:
    """The named model for inputs of `input_shape` (per example) and `num_classes` outputs.

    Unknown names raise ValueError; unknown options TypeError (listing the known ones).
    """
    if name in PLUGIN_MODELS:
        return _plugin_model(name, tuple(int(s) for s in input_shape), int(num_classes), options)
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(MODELS)}")
    unknown_model_options(name, options)
    return MODELS[name](tuple(int(s) for s in input_shape), int(num_classes), **options)


def _plugin_model(name: str, input_shape: tuple[int, ...], num_classes: int, options: dict) -> nn.Module:
    """A plugin's model (workers/plugins.py), with the prunable-layer defaults set where its module sets none;
    whatever goes wrong is one line naming the plugin."""
    from workers.plugins import PluginError, REGISTERED, validated_options

    entry, plugin = PLUGIN_MODELS[name], REGISTERED[f"model:{name}"]
    label = f"model {name} (plugin {plugin['module']})"
    try:
        checked = validated_options(entry, "model", name, options, entry["builder"], 2)
    except PluginError as err:
        raise PluginError(f"{label}: option {err}") from None
    try:
        model = entry["builder"](input_shape, num_classes, **checked)
    except Exception as err:  # noqa: BLE001 - the plugin's failure, on one line naming it
        raise PluginError(f"{label}: the builder raised {_failure(err)}") from None
    if not isinstance(model, nn.Module):
        raise PluginError(f"{label}: the builder returned {type(model).__name__}, not a torch.nn.Module")
    if not hasattr(model, "output_layer"):
        linear = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
        model.output_layer = entry["output_layer"] or (linear[-1] if linear else None)
    if not hasattr(model, "prune_output"):
        model.prune_output = entry["prune_output"]
    return model


def _failure(err: BaseException) -> str:
    """`Type: message at file:line`, the line in the plugin's own code (as a path inside its code: path)."""
    from workers.plugins import where_in_plugin

    first = (str(err).strip().splitlines() or [""])[0]
    return f"{type(err).__name__}{': ' + first if first else ''}{where_in_plugin(err)}"


def model_options(name: str) -> list[str]:
    """The option names the named model's builder accepts (`registry.MODEL_OPTIONS` must list the same)."""
    return [p for p in inspect.signature(MODELS[name]).parameters if p not in ("input_shape", "num_classes")]


BN_INITS = ("uniform", "ones")


def _check_bn_init(bn_init: str) -> str:
    if bn_init not in BN_INITS:
        raise ValueError(f"bn_init must be one of {', '.join(BN_INITS)}, got {bn_init!r}")
    return bn_init


def initialise(model: nn.Module, bn_init: str = "uniform") -> nn.Module:
    """OpenLTH's initialisation. bn_init "uniform" (OpenLTH, and the CTS authors' code) or "ones" (torch default)."""
    _check_bn_init(bn_init)
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            nn.init.kaiming_normal_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            if bn_init == "uniform":
                nn.init.uniform_(m.weight, 0.0, 1.0)
            else:
                nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return model


def _sequence_shape(name: str, input_shape: tuple[int, ...]) -> tuple[int, int]:
    """(channels, length) of a 1-D input given as (L,) or (C, L)."""
    if len(input_shape) == 1:
        return 1, input_shape[0]
    if len(input_shape) == 2:
        return input_shape
    raise ValueError(f"model {name} needs input shape (L,) or (C, L), got {input_shape}")


def _image_shape(name: str, input_shape: tuple[int, ...], min_side: int) -> tuple[int, int, int]:
    if len(input_shape) != 3 or min(input_shape[1:]) < min_side:
        raise ValueError(f"model {name} needs input shape (C, H, W) with H, W >= {min_side}, got {input_shape}"
                         + ("; for sequences use resnet20_1d or conv1d" if len(input_shape) < 3 else ""))
    return input_shape


# ---------------------------------------------------------------- fully connected

class MLP(nn.Module):
    """Flatten, hidden linear layers with ReLU, then the output layer `fc` (LeNet-300-100 style)."""
    output_layer = "fc"
    prune_output = False  # OpenLTH ignores fc.weight for mnist_lenet_*

    def __init__(self, in_features: int, hidden: tuple[int, ...], num_classes: int):
        super().__init__()
        widths = [in_features, *hidden]
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.fc = nn.Linear(widths[-1], num_classes)

    def forward(self, x):
        x = x.flatten(1)
        for layer in self.hidden:
            x = F.relu(layer(x))
        return self.fc(x)


def mlp(input_shape, num_classes, hidden=(300, 100)) -> MLP:
    hidden = tuple(int(h) for h in hidden)
    if any(h <= 0 for h in hidden):
        raise ValueError(f"mlp hidden sizes must be positive, got {list(hidden)}")
    return initialise(MLP(math.prod(input_shape), hidden, num_classes))


def lenet_300_100(input_shape, num_classes) -> MLP:
    return mlp(input_shape, num_classes, hidden=(300, 100))


# ---------------------------------------------------------------- 1-D CNN

class Conv1dNet(nn.Module):
    """Conv1d + ReLU + max-pool(2) per stage, then a linear layer on the flattened features.

    Sized for MNIST-1D: with the defaults a 40-long sequence becomes 64 channels x 5 positions.
    """
    output_layer = "fc"
    prune_output = False

    def __init__(self, in_channels: int, length: int, channels: tuple[int, ...], kernel_sizes: tuple[int, ...],
                 num_classes: int, batchnorm: bool, bn_running_stats: bool = True):
        super().__init__()
        widths = [in_channels, *channels]
        # padding k // 2 keeps the length for odd kernels, so only the pooling shrinks it.
        self.convs = nn.ModuleList(nn.Conv1d(a, b, k, padding=k // 2)
                                   for a, b, k in zip(widths[:-1], widths[1:], kernel_sizes))
        self.norms = nn.ModuleList(_batchnorm(1, b, bn_running_stats) if batchnorm else nn.Identity() for b in channels)
        for _ in channels:
            length //= 2
        self.fc = nn.Linear(channels[-1] * length, num_classes)

    def forward(self, x):
        if x.dim() == 2:
            x = x.unsqueeze(1)
        for conv, norm in zip(self.convs, self.norms):
            x = F.max_pool1d(F.relu(norm(conv(x))), 2)
        return self.fc(x.flatten(1))


def conv1d(input_shape, num_classes, channels=(64, 64, 64), kernel_sizes=(5, 3, 3), batchnorm=True,
           bn_init="uniform", bn_running_stats=True) -> Conv1dNet:
    in_channels, length = _sequence_shape("conv1d", input_shape)
    channels, kernel_sizes = tuple(int(c) for c in channels), tuple(int(k) for k in kernel_sizes)
    if not channels or len(channels) != len(kernel_sizes):
        raise ValueError(f"conv1d needs one kernel size per conv layer, got channels {list(channels)} "
                         f"and kernel_sizes {list(kernel_sizes)}")
    if any(k % 2 == 0 for k in kernel_sizes):
        raise ValueError(f"conv1d kernel sizes must be odd, got {list(kernel_sizes)}")
    if length >> len(channels) == 0:
        raise ValueError(f"conv1d: input length {length} is too short for {len(channels)} pooling stages")
    return initialise(Conv1dNet(in_channels, length, channels, kernel_sizes, num_classes, bool(batchnorm),
                                _flag("bn_running_stats", bn_running_stats)), bn_init)


# ---------------------------------------------------------------- ResNet-20 (1-D and 2-D)

class ResidualBlock(nn.Module):
    """conv-BN-ReLU-conv-BN plus a shortcut (a strided conv + BN when the shape changes), then ReLU.

    The shortcut conv is 1x1 (OpenLTH) or 3x3 with padding 1 (the CTS authors' ResNet-20).
    """

    def __init__(self, dims: int, f_in: int, f_out: int, stride: int, shortcut_kernel: int = 1,
                 bn_running_stats: bool = True):
        super().__init__()
        conv = _CONV[dims]

        def bn(channels):
            return _batchnorm(dims, channels, bn_running_stats)

        self.conv1 = conv(f_in, f_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = bn(f_out)
        self.conv2 = conv(f_out, f_out, 3, stride=1, padding=1, bias=False)
        self.bn2 = bn(f_out)
        if stride != 1 or f_in != f_out:
            self.shortcut = nn.Sequential(conv(f_in, f_out, shortcut_kernel, stride=stride,
                                               padding=shortcut_kernel // 2, bias=False), bn(f_out))
        else:
            self.shortcut = nn.Identity()

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """CIFAR ResNet (He et al. 2016, OpenLTH cifar_resnet): 3 stages of widths w, 2w, 4w, global average pool, fc."""
    output_layer = "fc"
    prune_output = True  # OpenLTH prunes every layer of cifar_resnet_*

    def __init__(self, dims: int, in_channels: int, num_classes: int, width: int = 16, blocks_per_stage: int = 3,
                 shortcut_kernel: int = 1, bn_running_stats: bool = True):
        super().__init__()
        self.dims = dims
        self.conv = _CONV[dims](in_channels, width, 3, stride=1, padding=1, bias=False)
        self.bn = _batchnorm(dims, width, bn_running_stats)
        blocks, f_in = [], width
        for stage, f_out in enumerate((width, 2 * width, 4 * width)):
            for i in range(blocks_per_stage):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(ResidualBlock(dims, f_in, f_out, stride, shortcut_kernel, bn_running_stats))
                f_in = f_out
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(f_in, num_classes)

    def forward(self, x):
        if self.dims == 1 and x.dim() == 2:
            x = x.unsqueeze(1)
        x = F.relu(self.bn(self.conv(x)))
        x = self.blocks(x)
        return self.fc(x.flatten(2).mean(2))


def _shortcut_kernel(value) -> int:
    if value not in SHORTCUT_KERNELS or isinstance(value, bool):
        raise ValueError(f"shortcut_kernel must be one of {', '.join(map(str, SHORTCUT_KERNELS))}, got {value!r}")
    return int(value)


def _flag(name: str, value) -> bool:
    # YAML gives real booleans; a string such as "false" would silently mean True.
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, got {value!r}")
    return value


def resnet20(input_shape, num_classes, width=16, bn_init="uniform", shortcut_kernel=1,
             bn_running_stats=True) -> ResNet:
    c, _, _ = _image_shape("resnet20", input_shape, min_side=4)
    return initialise(ResNet(2, c, num_classes, width=int(width), shortcut_kernel=_shortcut_kernel(shortcut_kernel),
                             bn_running_stats=_flag("bn_running_stats", bn_running_stats)), bn_init)


def resnet20_1d(input_shape, num_classes, width=16, bn_init="uniform", shortcut_kernel=1,
                bn_running_stats=True) -> ResNet:
    c, length = _sequence_shape("resnet20_1d", input_shape)
    if length < 4:
        raise ValueError(f"resnet20_1d needs length >= 4, got {input_shape}")
    return initialise(ResNet(1, c, num_classes, width=int(width), shortcut_kernel=_shortcut_kernel(shortcut_kernel),
                             bn_running_stats=_flag("bn_running_stats", bn_running_stats)), bn_init)


# ---------------------------------------------------------------- VGG-16

VGG16_PLAN = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)


class VGG(nn.Module):
    """OpenLTH cifar_vgg: 3x3 conv-BN-ReLU layers with max-pools, global average pool, one fc layer."""
    output_layer = "fc"
    prune_output = False  # OpenLTH ignores fc.weight for cifar_vgg_*

    def __init__(self, in_channels: int, plan: tuple, num_classes: int, bn_running_stats: bool = True):
        super().__init__()
        layers, f_in = [], in_channels
        for item in plan:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                # No conv bias: the BatchNorm right after it has its own.
                layers += [nn.Conv2d(f_in, item, 3, padding=1, bias=False), _batchnorm(2, item, bn_running_stats),
                           nn.ReLU()]
                f_in = item
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(f_in, num_classes)

    def forward(self, x):
        # 32x32 inputs leave 2x2 after four pools; averaging makes the fc independent of the input size.
        return self.fc(self.layers(x).mean((2, 3)))


def vgg16(input_shape, num_classes, bn_init="uniform", bn_running_stats=True) -> VGG:
    c, _, _ = _image_shape("vgg16", input_shape, min_side=16)
    _check_bn_init(bn_init)  # before building 15M parameters
    return initialise(VGG(c, VGG16_PLAN, num_classes, _flag("bn_running_stats", bn_running_stats)), bn_init)


MODELS: dict[str, Callable[..., nn.Module]] = {
    "mlp": mlp, "lenet_300_100": lenet_300_100, "conv1d": conv1d,
    "resnet20": resnet20, "resnet20_1d": resnet20_1d, "vgg16": vgg16,
}
