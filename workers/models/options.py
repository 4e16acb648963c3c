"""Option types several built-in models share (torch-free)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, StrictBool

from workers.strict import Strict

BN_INITS = ("uniform", "ones")


class BatchNormOptions(Strict):
    """Options of every built-in model with BatchNorm layers."""
    # A string such as "false" must not pass for a boolean: YAML gives real ones.
    bn_running_stats: StrictBool = Field(
        default=True, description="BatchNorm keeps running statistics; false: evaluation normalises with each "
                                  "batch's own statistics, as the CTS authors' models do")
    bn_init: Literal[BN_INITS] = Field(  # type: ignore[valid-type]
        default="uniform", description="BatchNorm weights at init: uniform on [0, 1] (OpenLTH, the CTS authors) "
                                       "or ones (as torch initialises BatchNorm)")
