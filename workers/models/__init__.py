"""Models: every network a spec may name, one module each, with a torch-free descriptor (`registry.py`).

Importing a model's module registers it: adding a model is one module here holding its descriptor and builder,
plus its name in the import line below. Importing this package imports no torch: a builder imports it when
called, so the driver validates and plans with the descriptors alone.
"""
from __future__ import annotations

# The built-in models, in the order `validate --explain` lists them; importing one registers it.
from workers.models import mlp, lenet_300_100, conv1d, resnet20, resnet20_1d, vgg16  # noqa: F401
from workers.models.registry import get_model_descriptor


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
