"""Run one stage without Ray, for debugging:

    orchestrate plan SPEC --stage KEY > stage.json
    python -m workers stage.json --input warmup=STORE/artifacts/<key>/outputs.pt --output out.pt
"""
from __future__ import annotations

import argparse
import json
import sys

import torch

from workers.data import DataError, load_dataset
from workers.stages import run_stage


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workers", description="Run one ticketsweep stage in this process.")
    parser.add_argument("stage", help="stage payload JSON (from `orchestrate plan SPEC --stage KEY`)")
    parser.add_argument("--input", action="append", default=[], metavar="ROLE=PATH",
                        help="a parent's outputs.pt for each role the stage reads")
    parser.add_argument("--output", help="write the stage's outputs (weights, mask) here")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    with open(args.stage) as f:
        stage = json.load(f)
    inputs = {}
    for item in args.input:
        role, _, path = item.partition("=")
        if not path:
            parser.error(f"--input {item!r}: expected ROLE=PATH")
        inputs[role] = torch.load(path, map_location="cpu", weights_only=True)
    cfg = stage["config"]["dataset"]
    try:
        data = load_dataset(cfg["name"], cfg.get("root"), **cfg.get("options", {}))
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
