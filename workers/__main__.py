"""Run one stage without Ray, for debugging:

    orchestrate plan SPEC --stage KEY > stage.json
    python -m workers stage.json --artifacts STORE/artifacts --output out.pt

Each input the stage reads is taken from ARTIFACTS/<parent key>/outputs.pt, or given
explicitly with --input ROLE=PATH.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import torch

from workers.data.dataset import DataError, dataset_from_config
from workers.plugins import PluginError, ensure
from workers.stages.dispatch import run_stage


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workers", description="Run one ticketsweep stage in this process.")
    parser.add_argument("stage", help="stage payload JSON (from `orchestrate plan SPEC --stage KEY`)")
    parser.add_argument("--artifacts", help="a local store's artifacts/ folder to read the stage's inputs from")
    parser.add_argument("--input", action="append", default=[], metavar="ROLE=PATH",
                        help="a parent's outputs.pt for a role the stage reads (overrides --artifacts)")
    parser.add_argument("--output", help="write the stage's outputs (weights, mask) here")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    with open(args.stage) as f:
        stage = json.load(f)
    paths = {}
    if args.artifacts:
        paths = {role: os.path.join(args.artifacts, key, "outputs.pt") for role, key in stage.get("inputs", {}).items()}
    for item in args.input:
        role, _, path = item.partition("=")
        if not path:
            parser.error(f"--input {item!r}: expected ROLE=PATH")
        paths[role] = path
    missing = [role for role in stage.get("inputs", {}) if role not in paths or not os.path.isfile(paths[role])]
    if missing:
        print(f"inputs missing for roles {', '.join(missing)}: give --artifacts or --input ROLE=PATH", file=sys.stderr)
        return 2
    inputs = {role: torch.load(path, map_location="cpu", weights_only=True) for role, path in paths.items()}
    try:
        ensure(stage["config"].get("plugins"), shipped=False)
    except PluginError as err:
        print(str(err), file=sys.stderr)
        return 2
    try:
        data = dataset_from_config(stage["config"]["dataset"])
    except DataError as err:
        print(f"dataset: {err}", file=sys.stderr)
        return 2
    result = run_stage(stage, inputs, data, on_epoch=lambda row: print(json.dumps(row), file=sys.stderr))
    if args.output:
        torch.save(result.outputs, args.output)
    print(json.dumps({"seconds": result.seconds, "point": result.point}, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
