"""The training recipe: one typed, torch-free configuration that is both the spec's `training:` field and what
`train()` receives, so every knob is declared, defaulted and validated once, and an unknown key is an error
on both sides."""
from __future__ import annotations

import math
import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from workers.strict import Strict

REWIND_PATTERN = re.compile(r"^\s*(\d+)\s*(it|ep)\s*$")


class Recipe(Strict):
    """The training recipe shared by every method (dense, retraining after pruning, LTR levels)."""
    epochs: int = Field(gt=0, le=100_000, description="training length T in epochs")
    batch_size: int = Field(default=128, gt=0, le=1 << 20, description="mini-batch size")
    optimizer: Literal["sgd", "adam"] = Field(default="sgd", description="sgd (with momentum) or adam")
    lr: float = Field(default=0.1, gt=0, le=1e4, description="initial learning rate")
    momentum: float = Field(default=0.9, ge=0, lt=1, description="SGD momentum")
    nesterov: bool = Field(default=False, description="Nesterov momentum for SGD")
    weight_decay: float = Field(default=0.0, ge=0, le=1, description="L2 weight decay (coupled, as torch SGD)")
    milestones: list[int] = Field(default_factory=list, description="epochs at which the lr is multiplied by gamma")
    gamma: float = Field(default=0.1, gt=0, le=10, description="lr decay factor at each milestone")
    rewind: str = Field(default="0it", description="rewind point k: '500it' (iterations) or '9ep' (epochs)")
    grad_clip: float | None = Field(default=None, gt=0, le=1e6, description="global grad-norm clip; none by default")
    eval_every: int = Field(default=1, gt=0, le=100_000,
                            description="evaluate (validation and test) every this many epochs, and at the end")
    loss_reduction: Literal["mean", "sum"] = Field(
        default="mean", description="cross-entropy over a batch: mean, or sum (the CTS authors' recipe; scales the gradient by the batch size)")
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        default="fp32", description="training forward pass: fp32, or bf16/fp16 autocast on CUDA (fp16 with loss scaling); needs gpus_per_trial > 0")

    @field_validator("rewind")
    @classmethod
    def _rewind(cls, v: str) -> str:
        if not REWIND_PATTERN.match(v):
            raise ValueError(f"rewind must look like '500it' or '9ep', got {v!r}")
        return v.strip()

    @model_validator(mode="after")
    def _consistent(self) -> "Recipe":
        if any(m <= 0 or m >= self.epochs for m in self.milestones):
            raise ValueError(f"milestones must lie strictly between 0 and epochs={self.epochs}")
        if sorted(self.milestones) != self.milestones:
            raise ValueError("milestones must be increasing")
        num, unit = REWIND_PATTERN.match(self.rewind).groups()
        if unit == "ep" and int(num) >= self.epochs:
            raise ValueError(f"rewind {self.rewind} is not before the end of training ({self.epochs} epochs)")
        return self

    @classmethod
    def from_dict(cls, d: dict) -> "Recipe":
        """The recipe a stage carries (its config's training, tuned values applied); unknown keys are errors."""
        return cls.model_validate(d)

    def rewind_epochs(self, n_train: int) -> float:
        """The rewind point in epochs of a training set of `n_train` examples."""
        num, unit = REWIND_PATTERN.match(self.rewind).groups()
        return float(num) if unit == "ep" else int(num) * self.batch_size / n_train

    def iterations_per_epoch(self, n_train: int) -> int:
        return math.ceil(n_train / self.batch_size)

    def at_final_lr(self) -> "Recipe":
        """The same recipe held at its schedule's final learning rate (fine-tuning)."""
        return self.model_copy(update={"lr": self.lr * self.gamma ** len(self.milestones), "milestones": []})

    def lr_at(self, iteration: int, iterations_per_epoch: int) -> float:
        passed = sum(1 for m in self.milestones if iteration >= m * iterations_per_epoch)
        return self.lr * self.gamma ** passed
