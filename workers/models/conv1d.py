"""conv1d: a small 1-D CNN for sequences such as MNIST-1D."""
from __future__ import annotations

from pydantic import Field, PositiveInt, StrictBool, model_validator

from workers.models.options import BatchNormOptions
from workers.models.registry import ModelDescriptor, register_model_descriptor


class Conv1dOptions(BatchNormOptions):
    channels: list[PositiveInt] = Field(default=[64, 64, 64], min_length=1, max_length=100,
                                        description="output channels of each conv layer")
    kernel_sizes: list[PositiveInt] = Field(default=[5, 3, 3], min_length=1, max_length=100,
                                            description="odd kernel size of each conv layer")
    batchnorm: StrictBool = Field(default=True, description="BatchNorm after each conv layer")

    @model_validator(mode="after")
    def _one_odd_kernel_per_layer(self) -> "Conv1dOptions":
        if len(self.channels) != len(self.kernel_sizes):
            raise ValueError(f"conv1d needs one kernel size per conv layer, got channels {self.channels} "
                             f"and kernel_sizes {self.kernel_sizes}")
        if any(k % 2 == 0 for k in self.kernel_sizes):
            raise ValueError(f"conv1d kernel sizes must be odd, got {self.kernel_sizes}")
        return self


def build(input_shape, num_classes, *, channels, kernel_sizes, batchnorm, bn_init, bn_running_stats):
    from workers.models.networks import Conv1dNet, initialise, sequence_shape

    in_channels, length = sequence_shape("conv1d", input_shape)
    if length >> len(channels) == 0:
        raise ValueError(f"conv1d: input length {length} is too short for {len(channels)} pooling stages")
    return initialise(Conv1dNet(in_channels, length, tuple(channels), tuple(kernel_sizes), num_classes, batchnorm,
                                bn_running_stats), bn_init)


DESCRIPTOR = register_model_descriptor(ModelDescriptor(
    name="conv1d", description="conv + ReLU + max-pool(2) per layer, then the linear layer fc; inputs (L,) or (C, L)",
    build=build, options=Conv1dOptions, prune_output=False))
