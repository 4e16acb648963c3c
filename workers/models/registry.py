"""The model registry: every model a spec may name, as a torch-free descriptor.

A descriptor says what the driver needs to validate, explain and plan a spec (the name, a description, the
options as a typed pydantic model) and what the workers need to build the network (the builder, which imports
torch only when called, and which parameters pruning may touch). The built-in models register themselves in
`workers/models/__init__.py`, one line each.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from workers.registry_table import DescriptorTable
from workers.strict import NoOptions, Strict, validated_options

# Torch layer classes (torch.nn names) whose `.weight` pruning may touch; biases and norm parameters never.
PRUNABLE_LAYERS = ("Linear", "Conv1d", "Conv2d")


@dataclass(frozen=True)
class ModelDescriptor:
    """A model: `build(input_shape, num_classes, **options) -> nn.Module`, a freshly initialised network for
    per-example inputs of `input_shape` (drawing from torch's global RNG, so a `torch.manual_seed` before it
    fixes the weights), with the validated `options` as keyword arguments.

    Pruning touches the `.weight` of every module of a `prunable_layers` class, except the module named
    `output_layer` unless `prune_output` (the spec's `prune_output` overrides it per sweep). A builder may
    override these defaults by setting the same attributes on the module it returns."""
    name: str
    description: str
    build: Callable[..., Any]
    options: type[Strict] = NoOptions
    output_layer: str | None = "fc"      # the module name of the final layer; None: every layer is prunable
    prune_output: bool = False           # OpenLTH's default for most of its models
    prunable_layers: tuple[str, ...] = PRUNABLE_LAYERS

    def validated(self, options: dict) -> Strict:
        """The options as the typed model; unknown ones raise TypeError (listing the known ones), bad values
        ValueError, each on one line naming the model."""
        return validated_options(f"model {self.name}", self.options, options)


# The models by name; the module-level names below are what the built-in modules, plugins and the spec call.
MODELS: DescriptorTable[ModelDescriptor] = DescriptorTable("model")
register_model_descriptor = MODELS.register
remove_model_descriptor = MODELS.remove
get_model_descriptor = MODELS.get
model_names = MODELS.names
