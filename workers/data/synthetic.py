"""synthetic: Gaussian classes, a tiny learnable dataset for tests, fully determined by its options."""
from __future__ import annotations

from pydantic import Field, PositiveInt

from workers.data.registry import DatasetDescriptor, register_dataset_descriptor
from workers.strict import Strict


class SyntheticOptions(Strict):
    n_train: PositiveInt = Field(default=256, le=10_000_000, description="training examples")
    n_test: PositiveInt = Field(default=128, le=10_000_000, description="test examples")
    input_shape: list[PositiveInt] = Field(default=[40], min_length=1, max_length=4,
                                           description="per-example input shape")
    num_classes: int = Field(default=10, ge=2, le=100_000, description="classes, balanced")
    seed: int = Field(default=0, ge=0, description="seed of the class means, the noise and the label order")
    noise: float = Field(default=1.0, ge=0, description="standard deviation of the noise around each class mean")


def load(root, *, n_train, n_test, input_shape, num_classes, seed, noise):
    """One standard-normal mean per class plus `noise`-scaled normal noise; balanced labels."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    means = torch.randn((num_classes, *input_shape), generator=gen)

    def split(n: int):
        y = (torch.arange(n) % num_classes)[torch.randperm(n, generator=gen)]
        x = means[y] + noise * torch.randn((n, *input_shape), generator=gen)
        return x.float(), y.long()

    return (*split(n_train), *split(n_test))


DESCRIPTOR = register_dataset_descriptor(DatasetDescriptor(
    name="synthetic", description="Gaussian classes around standard-normal means: a tiny learnable set for tests",
    load=load, options=SyntheticOptions, train_size=lambda o: o.n_train, input_shape=lambda o: o.input_shape,
    num_classes=lambda o: o.num_classes, test_size=lambda o: o.n_test))
