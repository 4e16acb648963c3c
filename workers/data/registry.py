"""The dataset registry: every dataset a spec may name, as a torch-free descriptor.

A descriptor says what the driver needs to validate, explain and plan a spec (name, description, typed
options, the training-set size, the per-example input shape and the number of classes, each a constant or a
function of the validated options), where a file dataset's files lie under a data root and where `orchestrate
data fetch` downloads them, and what the workers need to read the data: the loader, which imports torch only
when called. The built-in datasets register themselves in `workers/data/__init__.py`, one line each.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from workers.registry_table import DescriptorTable
from workers.strict import NoOptions, Strict, validated_options


@dataclass(frozen=True)
class Layout:
    """Where a file dataset's loader looks for it under a data root."""
    what: str                      # for messages: the files expected
    folders: tuple[str, ...]       # candidate folders under the root, in the loader's order ("" is the root)
    required: tuple[str, ...]      # the files the loader reads
    gz: bool                       # a file may also be present as <name>.gz (the plain one is read first)


@dataclass(frozen=True)
class Archive:
    name: str
    size: int | None = None
    sha256: str | None = None
    md5: str | None = None


@dataclass(frozen=True)
class Manifest:
    """What `orchestrate data fetch` downloads and where the loader looks for it."""
    dataset: str
    mirrors: tuple[str, ...]       # base URLs, tried in order; a file's URL is base + archive name
    archives: tuple[Archive, ...]
    target: str                    # directory under the root that the unpacked files go to
    required: tuple[str, ...]      # files whose presence means the dataset is there
    unpack: str                    # "keep": the archives are the files (idx .gz); "tar": extract target/ from it
    gz_ok: bool = False            # a required file may also be present as <name>.gz


@dataclass(frozen=True)
class DatasetDescriptor:
    """A dataset: `load(root, **options)` returns (x_train, y_train, x_test, y_test), or with an official
    validation split (x_train, y_train, x_test, y_test, x_val, y_val): float32 inputs of shape
    (N, *input_shape) and int64 labels in [0, num_classes), on the CPU. `root` is the spec's data root (None:
    the default one), which only a dataset with `files` reads.

    `train_size`, `test_size`, `input_shape` and `num_classes` are constants or functions of the validated
    options; the loader's tensors must agree with them (the planner estimates work from the training-set size,
    `until_decided` turns accuracies of rows without counts into counts with the test-set size). A dataset
    with its own validation split uses it instead of holding a fraction of the training set out."""
    name: str
    description: str
    load: Callable[..., tuple]
    train_size: int | Callable[[Any], int]
    input_shape: tuple[int, ...] | Callable[[Any], tuple[int, ...]]
    num_classes: int | Callable[[Any], int]
    test_size: int | Callable[[Any], int]
    options: type[Strict] = NoOptions
    files: Layout | None = None          # a file dataset: its files under a data root (stage keys hash them)
    manifest: Manifest | None = None     # where `orchestrate data fetch` downloads the files from
    augment: Callable | None = None      # (batch, torch.Generator) -> batch, applied to training batches

    def validated(self, options: dict) -> Strict:
        """The options as the typed model; unknown ones raise TypeError (listing the known ones), bad values
        ValueError, each on one line naming the dataset."""
        return validated_options(f"dataset {self.name}", self.options, options)

    def train_size_for(self, options: dict) -> int:
        return int(_value(self.train_size, self.validated(options)))

    def test_size_for(self, options: dict) -> int:
        return int(_value(self.test_size, self.validated(options)))

    def input_shape_for(self, options: dict) -> tuple[int, ...]:
        return tuple(int(s) for s in _value(self.input_shape, self.validated(options)))

    def num_classes_for(self, options: dict) -> int:
        return int(_value(self.num_classes, self.validated(options)))


def _value(attribute, options: Strict):
    return attribute(options) if callable(attribute) else attribute


# The datasets by name; the module-level names below are what the built-in modules, plugins and the spec call.
DATASETS: DescriptorTable[DatasetDescriptor] = DescriptorTable("dataset")
register_dataset_descriptor = DATASETS.register
remove_dataset_descriptor = DATASETS.remove
get_dataset_descriptor = DATASETS.get
dataset_names = DATASETS.names
