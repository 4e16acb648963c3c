"""The networks the built-in models build (torch): their layers and OpenLTH's initialisation.

Initialisation follows OpenLTH: kaiming-normal conv/linear weights, zero biases, BatchNorm weight ~ U(0, 1)
and bias 0; it draws from torch's global RNG, so a `torch.manual_seed` before building fixes the weights.

BatchNorm layers take `bn_running_stats`: false builds BN without running statistics, so evaluation
normalises with each test batch's statistics too, as the CTS authors' models do.
"""
from __future__ import annotations

from torch import nn
from torch.nn import functional as F

from workers.models.options import BN_INITS

_CONV = {1: nn.Conv1d, 2: nn.Conv2d}
_BN = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d}


def _batchnorm(dims: int, channels: int, running_stats: bool) -> nn.Module:
    return _BN[dims](channels, track_running_stats=running_stats)


def initialise(model: nn.Module, bn_init: str = "uniform") -> nn.Module:
    """OpenLTH's initialisation. bn_init "uniform" (OpenLTH, and the CTS authors' code) or "ones" (torch default)."""
    if bn_init not in BN_INITS:
        raise ValueError(f"bn_init must be one of {', '.join(BN_INITS)}, got {bn_init!r}")
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


def sequence_shape(name: str, input_shape: tuple[int, ...]) -> tuple[int, int]:
    """(channels, length) of a 1-D input given as (L,) or (C, L)."""
    if len(input_shape) == 1:
        return 1, input_shape[0]
    if len(input_shape) == 2:
        return input_shape
    raise ValueError(f"model {name} needs input shape (L,) or (C, L), got {input_shape}")


def image_shape(name: str, input_shape: tuple[int, ...], min_side: int) -> tuple[int, int, int]:
    if len(input_shape) != 3 or min(input_shape[1:]) < min_side:
        raise ValueError(f"model {name} needs input shape (C, H, W) with H, W >= {min_side}, got {input_shape}"
                         + ("; for sequences use resnet20_1d or conv1d" if len(input_shape) < 3 else ""))
    return input_shape


# ---------------------------------------------------------------- fully connected

class MLP(nn.Module):
    """Flatten, hidden linear layers with ReLU, then the output layer `fc` (LeNet-300-100 style)."""

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


# ---------------------------------------------------------------- 1-D CNN

class Conv1dNet(nn.Module):
    """Conv1d + ReLU + max-pool(2) per stage, then a linear layer on the flattened features.

    Sized for MNIST-1D: with the defaults a 40-long sequence becomes 64 channels x 5 positions.
    """

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


# ---------------------------------------------------------------- VGG-16

VGG16_PLAN = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)


class VGG(nn.Module):
    """OpenLTH cifar_vgg: 3x3 conv-BN-ReLU layers with max-pools, global average pool, one fc layer."""

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
