"""The random streams of a run, named in one place.

Every random draw a result depends on comes from a generator (or a seed) made by `seed_for(seed, stream)`, or
`seed_for(seed, epoch, stream)` for the streams drawn anew each epoch, so that a stage's draws depend on its
seed and on what they are for, never on what ran before it in the process. The numbers are in every stored
result: changing one changes results, which needs a `plan.CODE_VERSION` bump.
"""
from __future__ import annotations

from enum import IntEnum, unique


@unique
class Stream(IntEnum):
    DATA_ORDER = 1     # an epoch's order of the training examples (per epoch)
    AUGMENTATION = 2   # an epoch's augmentation draws (per epoch)
    IMP_LEVEL = 3      # an IMP level's global top-k: which of tied scores survive
    ONESHOT = 4        # one-shot scoring: the class-balanced sample, random scores, ties
    CTS_SEARCH = 5     # the CTS search: batch order and Concrete noise
    SHUFFLE = 6        # the shuffle ablation's permutation of a mask within each layer
    REINIT = 7         # the reinit ablation's fresh initialisation (a seed for the model's initialiser)
    STAGE = 8          # torch's global generator while a stage runs (e.g. a model's dropout)
    GRADUAL = 9        # GMP and GraNet: a sparse start's random mask, ties, regrowth
    BIP_SEARCH = 10    # the BiP search: batch orders, augmentation, ties


def seed_for(*parts: int) -> int:
    """A 63-bit seed from small integers (stable across processes, unlike hash())."""
    h = 1469598103934665603
    for p in parts:
        h = ((h ^ (p & 0xFFFFFFFFFFFFFFFF)) * 1099511628211) % (1 << 63)
    return h
