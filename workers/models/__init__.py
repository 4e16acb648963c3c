"""Models: every network a spec may name, one module each, with a torch-free descriptor (`registry.py`).

Adding a model is one module here holding its descriptor and builder, plus its line in BUILT_IN. Importing this
package imports no torch: a builder imports it when called, so the driver validates and plans with the
descriptors alone.
"""
from __future__ import annotations

from workers.models import conv1d, lenet_300_100, mlp, resnet20, resnet20_1d, vgg16
from workers.models.registry import get_model_descriptor, register_model_descriptor

BUILT_IN = (mlp, lenet_300_100, conv1d, resnet20, resnet20_1d, vgg16)
for _module in BUILT_IN:
    register_model_descriptor(_module.DESCRIPTOR)


def build_model(name: str, input_shape: tuple[int, ...], num_classes: int, **options):
    """The named model for inputs of `input_shape` (per example) and `num_classes` outputs, its pruning rule
    (output_layer, prune_output, prunable_layers) set from its descriptor unless its builder set it.

    Unknown names raise ValueError; unknown options TypeError (listing the known ones), bad values ValueError.
    """
    descriptor = get_model_descriptor(name)
    validated = descriptor.validated(options)
    model = descriptor.build(tuple(int(s) for s in input_shape), int(num_classes), **dict(validated))
    for rule in ("output_layer", "prune_output", "prunable_layers"):
        if not hasattr(model, rule):
            setattr(model, rule, getattr(descriptor, rule))
    return model
