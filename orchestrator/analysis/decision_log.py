"""The decision log of `submit --until-decided`: one JSON file per look under decisions/sweep=<s>/look-<k>.json.

A look's file is written once, atomically (ResultsStore.put_bytes: a hidden temporary, then a rename; an
existing file is never overwritten), after every stage of the look is stored. It holds the design it was made
under, the seeds of the look and one record per comparison analysed at it; a comparison decided at an earlier
look is frozen and not analysed again. `state()` folds the files into the current decision of each comparison,
which `compare` and `report` show.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from orchestrator.store.files import StoreError
from orchestrator.store.layout import layout_path
from orchestrator.store.results_store import ResultsStore

LOG_VERSION = 1
DECIDED, UNDECIDED, AT_BUDGET = "decided", "undecided", "undecided at budget"


class DecisionLogError(RuntimeError):
    """The stored log cannot be continued (another design, other seeds, data that changed); one line."""


def look_path(store: ResultsStore, sweep: str, look: int) -> str:
    return layout_path(store.root, "decision log", sweep=sweep, attempt=look)


def read_looks(store: ResultsStore, sweep: str) -> list[dict]:
    """The sweep's look files in look order (empty without any). A file that is not a look record raises."""
    out, look = [], 1
    while store.exists(look_path(store, sweep, look)):
        path = look_path(store, sweep, look)
        try:
            record = json.loads(store.get_bytes(path))
        except ValueError as err:
            raise DecisionLogError(f"{path}: not a decision log ({err})") from None
        if not isinstance(record, dict) or record.get("version") != LOG_VERSION or record.get("look") != look:
            raise DecisionLogError(f"{path}: not a version-{LOG_VERSION} decision log of look {look}")
        out.append(record)
        look += 1
    return out


def write_look(store: ResultsStore, sweep: str, record: dict) -> str:
    path = look_path(store, sweep, record["look"])
    try:
        store.put_bytes(path, json.dumps(record, indent=1, sort_keys=True).encode())
    except StoreError as err:
        raise DecisionLogError(str(err)) from None
    return path


def comparison_id(record: dict) -> tuple[str, str, float]:
    return record["method_a"], record["method_b"], round(float(record["target_sparsity"]), 9)


@dataclass
class LogState:
    design: dict
    looks: list[dict]
    latest: dict[tuple, dict]  # comparison -> its newest record (its decision, once decided)

    @property
    def finished(self) -> bool:
        return bool(self.latest) and all(r["status"] != UNDECIDED for r in self.latest.values())


def state(looks: list[dict]) -> LogState | None:
    if not looks:
        return None
    latest: dict[tuple, dict] = {}
    for look in looks:
        for record in look["comparisons"]:
            latest[comparison_id(record)] = record
    return LogState(looks[-1]["design"], looks, latest)


def _points(value) -> str:
    return "—" if value is None else f"{100 * value:+.2f}"


def _p(value) -> str:
    return "—" if value is None else f"{value:.3g}"


DECISION_HEADER = ["A", "B", "target", "decision", "at look", "seeds", "failed A/B", "B−A (pts)", "CI (pts)",
                   "ΣB−A (examples)",
                   "boundary", "p (this look)", "p (stagewise)", "α spent / allowed"]


def decision_cells(log: LogState) -> tuple[list[str], list[list[str]], set[int]]:
    """(header, rows, left-aligned columns) of the current decisions, as `compare` and `report` show them."""
    rows = []
    for key in sorted(log.latest, key=lambda k: (k[1], k[2])):
        r = log.latest[key]
        if r["status"] == DECIDED:
            decision = f"{r['method_b'] if r['verdict'] == 'B better' else r['method_a']} better"
        else:
            decision = r["status"]
        ci = "—" if r.get("ci_low") is None else f"[{_points(r['ci_low'])}, {_points(r['ci_high'])}]"
        rows.append([r["method_a"], r["method_b"], f"{r['target_sparsity']:.4f}", decision, str(r["look"]),
                     str(r["seeds"]), f"{r.get('failed_a', 0)}/{r.get('failed_b', 0)}", _points(r["mean_diff"]), ci,
                     f"{r['sum_diff']:+d}",
                     "—" if r["boundary"] is None else f"±{r['boundary']}", _p(r["p_look"]), _p(r["p_stagewise"]),
                     f"{r['alpha_spent']:.3g} / {r['alpha_cumulative']:.3g}"])
    return DECISION_HEADER, rows, {0, 1, 3}


def describe_design(design: dict) -> str:
    m = design["family"]
    return (f"looks at {', '.join(map(str, design['looks']))} seeds; family-wise α = {design['alpha']:g} over "
            f"{m} comparison(s), Bonferroni: α = {design['alpha'] / m:.3g} each, spent by the O'Brien–Fleming-type "
            f"function (Lan–DeMets); boundaries exact over the sign patterns of the integer differences "
            f"(correct test examples); {_failures(design)}; the CI is the paired t interval at 1 − α/{m} on the "
            f"seeds decided at, not adjusted for stopping")


def _failures(design: dict) -> str:
    if design.get("failures", "chance") == "chance":
        return "a diverged seed counts at chance accuracy"
    return "diverged seeds left out"


def format_decisions(log: LogState, markdown: bool = False) -> str:
    from orchestrator.analysis.text_tables import render

    header, rows, left = decision_cells(log)
    done = log.looks[-1]
    title = [f"sequential decisions (submit --until-decided), after look {done['look']} ({done['seeds_used']} seeds): "
             + describe_design(log.design)]
    return render(header, rows, left=left, markdown=markdown, title=title)
