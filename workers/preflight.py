"""Load a spec's dataset and build its model once, so a bad data root or an invalid model or dataset option
fails on one line before Ray starts or anything is written.

`orchestrate` runs this in a child process (`python -m workers.preflight CONFIG_JSON`): the driver itself
then never imports torch, which would stay in its memory for the whole sweep.
"""
from __future__ import annotations

import json
import sys


def problem(dataset: dict, model: dict, plugins: dict | None = None) -> str | None:
    """A one-line description of what is wrong with the dataset or model config, or None."""
    from workers.data.dataset import dataset_from_config
    from workers.data.files import DataError
    from workers.models import build_model
    from workers.plugins import PluginError, ensure

    try:
        ensure(plugins, shipped=False)
    except PluginError as err:
        return str(err)
    try:
        data = dataset_from_config(dataset)
    except DataError as err:
        return f"dataset: {err}"
    except (TypeError, ValueError) as err:
        return f"dataset.options: {err}"
    try:
        build_model(model["name"], data.input_shape, data.num_classes, **model.get("options", {}))
    except PluginError as err:
        return f"model: {err}"
    except (TypeError, ValueError) as err:
        return f"model.options: {err}"
    return None


def main(argv: list[str]) -> int:
    config = json.loads(argv[0])
    message = problem(config["dataset"], config["model"], config.get("plugins"))
    if message:
        print(message, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
