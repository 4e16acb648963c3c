"""mlp: a fully connected network with the hidden widths given (LeNet-300-100 by default)."""
from __future__ import annotations

import math

from pydantic import Field, PositiveInt

from workers.models.registry import ModelDescriptor, register_model_descriptor
from workers.strict import Strict


class MlpOptions(Strict):
    hidden: list[PositiveInt] = Field(default=[300, 100], max_length=100,
                                      description="hidden layer widths, input side first")


def build(input_shape, num_classes, *, hidden):
    from workers.models.networks import MLP, initialise

    return initialise(MLP(math.prod(input_shape), tuple(hidden), num_classes))


DESCRIPTOR = register_model_descriptor(ModelDescriptor(
    name="mlp", description="flatten, hidden linear layers with ReLU, then the output layer fc; any input shape",
    build=build, options=MlpOptions,
    prune_output=False))  # OpenLTH leaves fc.weight unpruned for mnist_lenet_*
