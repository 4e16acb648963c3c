"""A real `orchestrate` driver whose Ray gives up on a node sooner, for tests that make a start fail on purpose.

Ray 2.60 waits for a new node to register in a loop fixed at 30 s in `Node.__init__` (ray/_private/node.py),
around a call that itself waits up to RAY_raylet_start_wait_time_s; the product's retry is built on the
second. A test that stalls the node's start waits out the fixed 30 s on each start for nothing: run in this
driver, the loop gives up after `seconds`, so a failed start lasts as long as the setting the test gives
(the longer of the two, as in Ray). Everything else about the start and the retry is Ray's and the product's.
"""
from __future__ import annotations

import inspect
import sys
from pathlib import Path

RAY_FIXED_NODE_WAIT_S = 30
_LINE = f"raylet_start_wait_time_s = {RAY_FIXED_NODE_WAIT_S}"
ROOT = Path(__file__).resolve().parents[2]

# Run as `python -c DRIVER <seconds> <orchestrate arguments...>`.
DRIVER = f"""
import sys
sys.path.insert(0, {str(ROOT)!r})
from tests.helpers.ray_node_wait import shorten_node_wait
shorten_node_wait(float(sys.argv[1]))
from orchestrator.cli import main
main(sys.argv[2:])
"""


def driver_command(seconds: float) -> list[str]:
    return [sys.executable, "-c", DRIVER, str(seconds)]


def shorten_node_wait(seconds: float) -> None:
    """Make Ray's fixed node wait `seconds` in this process; a Ray whose code no longer has that one literal is
    an error here rather than a test that silently waits the old way."""
    from ray._private import node

    init = node.Node.__init__
    code = init.__code__
    literals = [c for c in code.co_consts if type(c) is int and c == RAY_FIXED_NODE_WAIT_S]
    if inspect.getsource(init).count(str(RAY_FIXED_NODE_WAIT_S)) != 1 or _LINE not in inspect.getsource(init) \
            or len(literals) != 1:
        raise RuntimeError(f"ray._private.node.Node.__init__ no longer waits with `{_LINE}`: update {__file__}")
    init.__code__ = code.replace(co_consts=tuple(
        seconds if type(c) is int and c == RAY_FIXED_NODE_WAIT_S else c for c in code.co_consts))
