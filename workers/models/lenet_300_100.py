"""lenet_300_100: OpenLTH's mnist_lenet_300_100, the mlp with hidden widths 300 and 100."""
from __future__ import annotations

from workers.models.mlp import build as build_mlp
from workers.models.registry import ModelDescriptor, register_model_descriptor


def build(input_shape, num_classes):
    return build_mlp(input_shape, num_classes, hidden=(300, 100))


DESCRIPTOR = register_model_descriptor(ModelDescriptor(
    name="lenet_300_100", description="the mlp with hidden widths 300, 100 (OpenLTH mnist_lenet_300_100)",
    build=build, prune_output=False))  # OpenLTH leaves fc.weight unpruned for mnist_lenet_*
