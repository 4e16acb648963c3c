"""vgg16: OpenLTH's cifar_vgg_16 for images (C, H, W) with H, W >= 16."""
from __future__ import annotations

from workers.models.options import BatchNormOptions
from workers.models.registry import ModelDescriptor, register_model_descriptor


def build(input_shape, num_classes, *, bn_init, bn_running_stats):
    from workers.models.networks import VGG, VGG16_PLAN, image_shape, initialise

    c, _, _ = image_shape("vgg16", input_shape, min_side=16)
    return initialise(VGG(c, VGG16_PLAN, num_classes, bn_running_stats), bn_init)


DESCRIPTOR = register_model_descriptor(ModelDescriptor(
    name="vgg16", description="VGG-16: 13 conv-BN-ReLU layers with max-pools, global average pool, fc",
    build=build, options=BatchNormOptions,
    prune_output=False))  # OpenLTH leaves fc.weight unpruned for cifar_vgg_*
