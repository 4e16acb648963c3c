"""resnet20: the CIFAR ResNet-20 (He et al. 2016; OpenLTH cifar_resnet_20) for images (C, H, W)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, PositiveInt

from workers.models.options import BatchNormOptions
from workers.models.registry import ModelDescriptor, register_model_descriptor


class ResNetOptions(BatchNormOptions):
    width: PositiveInt = Field(default=16, le=4096, description="channels of the first stage (then 2x, 4x)")
    shortcut_kernel: Literal[1, 3] = Field(
        default=1, description="kernel of the strided shortcut convs: 1 (OpenLTH) or 3 (the CTS authors' ResNet-20)")


def build(input_shape, num_classes, *, width, bn_init, shortcut_kernel, bn_running_stats):
    from workers.models.networks import ResNet, image_shape, initialise

    c, _, _ = image_shape("resnet20", input_shape, min_side=4)
    return initialise(ResNet(2, c, num_classes, width=width, shortcut_kernel=shortcut_kernel,
                             bn_running_stats=bn_running_stats), bn_init)


DESCRIPTOR = register_model_descriptor(ModelDescriptor(
    name="resnet20", description="CIFAR ResNet-20: 3 stages of 3 residual blocks, global average pool, fc",
    build=build, options=ResNetOptions,
    prune_output=True))  # OpenLTH prunes every layer of cifar_resnet_*
