"""resnet20_1d: ResNet-20 with 1-D convolutions, for sequences (L,) or (C, L)."""
from __future__ import annotations

from workers.models.registry import ModelDescriptor, register_model_descriptor
from workers.models.resnet20 import ResNetOptions


def build(input_shape, num_classes, *, width, bn_init, shortcut_kernel, bn_running_stats):
    from workers.models.networks import ResNet, initialise, sequence_shape

    c, length = sequence_shape("resnet20_1d", input_shape)
    if length < 4:
        raise ValueError(f"resnet20_1d needs length >= 4, got {input_shape}")
    return initialise(ResNet(1, c, num_classes, width=width, shortcut_kernel=shortcut_kernel,
                             bn_running_stats=bn_running_stats), bn_init)


DESCRIPTOR = register_model_descriptor(ModelDescriptor(
    name="resnet20_1d", description="resnet20 with 1-D convolutions, for sequences",
    build=build, options=ResNetOptions,
    prune_output=True))  # as resnet20
