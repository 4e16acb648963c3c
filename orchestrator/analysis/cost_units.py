"""The units a cost is given in (`--cost`), without pandas, so the CLI can offer them at no import cost.

Wall-clock seconds as measured, or the work the workers counted (workers/work.py), which a rerun reproduces
exactly on any machine under any load: training and search epochs, or FLOPs of the masked network. Seconds are
the default, so that existing outputs keep their meaning.
"""
from __future__ import annotations

COSTS = ("seconds", "epochs", "flops")
DEFAULT_COST = "seconds"
# Per unit, the points columns of a stage's search, of the whole stage (marginal) and of the point from scratch
# (standalone). A work unit's marginal is its train + search count, which orchestrator.analysis.frontier.finished adds.
COST_COLUMNS = {unit: {"search": f"search_{unit}", "marginal": f"marginal_{unit}", "standalone": f"standalone_{unit}"}
                for unit in COSTS}
# The counted parts a work unit's marginal sums.
WORK_PARTS = {"epochs": ("train_epochs", "search_epochs"), "flops": ("train_flops", "search_flops")}


def check_cost(cost: str) -> str:
    if cost not in COSTS:
        raise ValueError(f"unknown cost unit {cost!r}; known: {', '.join(COSTS)}")
    return cost
