"""`orchestrate report`: one self-contained HTML page (images embedded) and the same content as Markdown, for
attaching to a paper or a review: the spec and versions, the frontier and cost-accuracy plots, the frontier
table, the learning curves, every method compared with a reference, stage counts by status, total compute, and
the machines the stages ran on. Costs are in the unit chosen (`--cost`: seconds, epochs or flops).

Every number comes from the same cell functions as `results` and `compare`, so the page and the CLI agree.
"""
from __future__ import annotations

import base64
import html
import json
import os
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from orchestrator.analysis.compare import LEGEND, compare_all, comparison_cells, comparison_footer, family_line
from orchestrator.analysis.cost_units import DEFAULT_COST
from orchestrator.spec.plan import sweep_plan
from orchestrator.analysis.frontier import (DENSE, MACHINE_HEADER, frontier, frontier_cells, frontier_header, machine_cells,
                                 machines, plot_frontier, write_text)
from orchestrator.analysis.text_tables import render

_CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:110em}
table{border-collapse:collapse;margin:1em 0;font-size:0.9em}th,td{border:1px solid #ccc;padding:0.25em 0.5em}
td.num{text-align:right;font-variant-numeric:tabular-nums}th{background:#f3f3f3}img{max-width:100%}
pre{background:#f7f7f7;padding:1em;overflow:auto}caption{text-align:left;font-style:italic;padding:0.3em 0}"""


def build_report(spec_path: str, spec, store, points: pd.DataFrame, out_dir: str,
                 reference: str | None = None, judging: dict | None = None, cost: str = DEFAULT_COST) -> list[str]:
    """Write report.html, report.md and the plots they show (the frontier, the cost-accuracy frontier, and the
    learning curves when the store has them) into `out_dir`; returns the paths written.
    `judging`: compare_all's adjust / min_effect / failures (its defaults when None); `cost`: the unit of the
    costs (seconds, epochs, flops). Raises CompareError when `reference` names no method of the sweep."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table = frontier(points, cost=cost)
    methods = [m for m in table["method"].astype(str).unique() if m != DENSE]
    if reference is None:
        reference = "ltr" if "ltr" in methods else (methods[0] if methods else None)
    comparison = (compare_all(points, reference, **(judging or {}), cost=cost)
                  if reference and len(methods) > 1 else None)
    images = {"frontier.png": ("accuracy vs density", ("density",)),
              "cost.png": (f"cost-accuracy frontier ({cost})", ("cost",))}
    for name, (_, panels) in images.items():
        plot_frontier(table, out / name, panels=panels, cost=cost)
    if _plot_curves(points, store, spec.name, out / CURVES):
        images[CURVES] = ("learning curves: mean over seeds and 95 % interval, per target sparsity", ())
    sections = _sections(spec_path, spec, store, points, table, comparison, reference, cost)
    md = _markdown(spec, sections, images)
    page = _html(spec, sections, {name: (title, out / name) for name, (title, _) in images.items()})
    write_text(out / "report.md", md)
    write_text(out / "report.html", page)
    return [str(out / "report.html"), str(out / "report.md"), *(str(out / n) for n in images)]


def _plot_curves(points: pd.DataFrame, store, sweep: str, path: Path) -> bool:
    """The curves of the frontier's runs (orchestrate curves' default picture); False when none are stored."""
    from orchestrator.analysis.curves import CurveError, curve_rows, plot_curves, summarize

    try:
        plot_curves(summarize(curve_rows(points, store.read("curves", sweep))), path)
    except CurveError:
        return False
    return True


def _sections(spec_path, spec, store, points, table, comparison, reference, cost) -> dict:
    stage_counts, attempts, seconds, log = _stage_counts(store, spec)
    ran = pd.DataFrame(log, columns=_LOG_COLUMNS)
    versions = sorted({v for v in points.get("versions", pd.Series(dtype=object)).dropna().astype(str)})
    compare_section = None
    if comparison is not None:
        header, rows, left = comparison_cells(comparison)
        compare_section = {"reference": reference, "header": header, "rows": rows, "left": left,
                           "family": family_line(comparison), "footer": comparison_footer(comparison)}
    return {
        "spec": Path(spec_path).read_text(),
        "versions": [json.loads(v) for v in versions],
        "frontier": {"header": frontier_header(cost), "note": _frontier_note(cost),
                     "rows": [frontier_cells(r, cost) for r in table.itertuples(index=False)], "left": {0}},
        "comparison": compare_section,
        "decisions": _decisions(store, spec.name),
        "stages": stage_counts,
        "compute": {"attempts": attempts, "seconds": seconds, "work": _counted_work(log)},
        "machines": machine_cells(machines(ran[ran["status"] == "ok"])),
    }


def _decisions(store, sweep: str) -> dict | None:
    """The `submit --until-decided` decisions, as `compare` prints them; None without a decision log."""
    from orchestrator.analysis.decision_log import decision_cells, describe_design, read_looks, state

    log = state(read_looks(store, sweep))
    if log is None:
        return None
    header, rows, left = decision_cells(log)
    return {"header": header, "rows": rows, "left": left, "design": describe_design(log.design),
            "after": f"after look {log.looks[-1]['look']} ({log.looks[-1]['seeds_used']} seeds)"}


_LOG_COLUMNS = ["stage_key", "attempt", "status", "seconds", "train_epochs", "search_epochs", "train_flops",
                "search_flops", "host", "cpu_model", "logical_cores", "gpu_model", "torch_threads", "load_start",
                "load_end"]


def _stage_counts(store, spec) -> tuple[dict[str, int], int, float, list[dict]]:
    """Latest status of every stage of the spec's plan (a stage that once succeeded counts as ok), stages not
    yet run as "to run"; every attempt's count and seconds, failed ones included (they were paid for); and the
    plan's attempts from the commit log (work and machine columns included)."""
    keys = set(sweep_plan(spec).stages)
    log = store.committed(spec.name, _LOG_COLUMNS).table.to_pylist()
    latest: dict[str, str] = {}
    for row in sorted(log, key=lambda r: r["attempt"]):
        if row["stage_key"] in keys and latest.get(row["stage_key"]) != "ok":
            latest[row["stage_key"]] = row["status"]
    counts = Counter(latest.values())
    counts["to run"] = len(keys) - len(latest)
    attempts = [r for r in log if r["stage_key"] in keys]
    return (dict(sorted(counts.items())), len(attempts), float(sum(r["seconds"] or 0.0 for r in attempts)),
            attempts)


def _counted_work(attempts: list[dict]) -> dict:
    """The train + search work of the ok attempts that counted it, and how many ok attempts did not."""
    ok = [r for r in attempts if r["status"] == "ok"]
    counted = [r for r in ok if None not in (r["train_epochs"], r["search_epochs"], r["train_flops"],
                                             r["search_flops"])]
    return {"epochs": sum(r["train_epochs"] + r["search_epochs"] for r in counted),
            "flops": sum(r["train_flops"] + r["search_flops"] for r in counted), "uncounted": len(ok) - len(counted)}


def _compute_line(compute: dict) -> str:
    work = compute["work"]
    missing = f" ({work['uncounted']} ok attempt(s) without a count left out)" if work["uncounted"] else ""
    return (f"Total compute: {compute['seconds']:.1f} s of stage time in {compute['attempts']} stage attempt(s), "
            f"failed attempts included; counted work of the ok attempts: {work['epochs']:.2f} training and search "
            f"epochs, {work['flops']:.4g} FLOPs{missing}.")


_MACHINES_NOTE = ("The machines the ok stage attempts ran on, as each attempt recorded it: the seconds above were "
                  "measured there, under the 1-minute load average shown (lowest and highest at the attempts' "
                  "starts and ends); epochs and FLOPs do not depend on them.")


def _markdown(spec, s: dict, images: dict) -> str:
    lines = [f"# ticketsweep report: sweep {spec.name}", "", _generated(), "", "## Spec", "", "```yaml",
             s["spec"].rstrip(), "```", "", "## Versions", ""]
    lines += [f"- {_version_text(v)}" for v in s["versions"]] or ["- (no finished results)"]
    lines += ["", "## Frontier", ""]
    lines += [f"![{title}]({name})" + "\n" for name, (title, _) in images.items() if name != CURVES]
    f = s["frontier"]
    lines += [f["note"], "", render(f["header"], f["rows"], left=f["left"], markdown=True), ""]
    if CURVES in images:
        lines += ["## Learning curves", "", _CURVES_NOTE, "", f"![{images[CURVES][0]}]({CURVES})", ""]
    c = s["comparison"]
    lines += ["## Comparisons", ""]
    if c is None:
        lines += ["Fewer than two methods: nothing to compare.", ""]
    else:
        lines += [f"Every method (B) against `{c['reference']}` (A). {LEGEND}.", "", c["family"] + ".", "",
                  render(c["header"], c["rows"], left=c["left"], markdown=True, footer=c["footer"]), ""]
    d = s.get("decisions")
    if d is not None:
        lines += ["## Sequential decisions (submit --until-decided)", "", f"{d['after']}: {d['design']}.", "",
                  render(d["header"], d["rows"], left=d["left"], markdown=True), ""]
    lines += ["## Stages", "", render(["status", "stages"], [[k, str(v)] for k, v in s["stages"].items()],
                                      left={0}, markdown=True), "", _compute_line(s["compute"]), ""]
    lines += ["## Machines", "", _MACHINES_NOTE, "", render(MACHINE_HEADER, s["machines"], left={0, 1, 3},
                                                            markdown=True), ""]
    return "\n".join(lines)


CURVES = "curves.png"
_CURVES_NOTE = ("Per-epoch validation and test accuracy and loss of the runs in the frontier table: the mean over "
                "seeds with its 95 % t interval as a band, dense training dashed; `orchestrate curves` draws any "
                "method and sparsity, and gives the numbers as csv.")
_FRONTIER_NOTE = ("acc %: test accuracy at the evaluation with the best validation accuracy, mean ± std over "
                  "seeds, and its 95 % t interval; final acc %: at the end of training; val acc %: the best "
                  "validation accuracy; standalone s: the whole cost of one point from scratch.")
_WORK_NOTE = {"epochs": " Costs in epochs: the training and search epochs the workers counted (docs/cost.md), which "
                        "a rerun reproduces exactly on any machine; the measured standalone seconds beside them.",
              "flops": " Costs in FLOPs: of the masked network, counted by the workers for training, search and "
                       "scoring (evaluation apart; docs/cost.md), which a rerun reproduces exactly on any machine; "
                       "the measured standalone seconds beside them."}


def _frontier_note(cost: str) -> str:
    return _FRONTIER_NOTE + _WORK_NOTE.get(cost, "")


def _html(spec, s: dict, images: dict) -> str:
    body = [f"<h1>ticketsweep report: sweep {_e(spec.name)}</h1>", f"<p>{_e(_generated())}</p>",
            "<h2>Spec</h2>", f"<pre>{_e(s['spec'])}</pre>", "<h2>Versions</h2><ul>"]
    body += [f"<li>{_e(_version_text(v))}</li>" for v in s["versions"]] or ["<li>(no finished results)</li>"]
    body += ["</ul>", "<h2>Frontier</h2>"]
    body += [_figure(title, path) for name, (title, path) in images.items() if name != CURVES]
    f = s["frontier"]
    body += [f"<p>{_e(f['note'])}</p>", _html_table("frontier", f["header"], f["rows"], f["left"])]
    if CURVES in images:
        body += ["<h2>Learning curves</h2>", f"<p>{_e(_CURVES_NOTE)}</p>", _figure(*images[CURVES])]
    c = s["comparison"]
    body.append("<h2>Comparisons</h2>")
    if c is None:
        body.append("<p>Fewer than two methods: nothing to compare.</p>")
    else:
        body += [f"<p>Every method (B) against <code>{_e(c['reference'])}</code> (A). {_e(LEGEND)}.</p>",
                 f"<p>{_e(c['family'])}.</p>",
                 _html_table("comparison", c["header"], c["rows"], c["left"])]
        body += [f"<p>{_e(line)}</p>" for line in c["footer"]]
    d = s.get("decisions")
    if d is not None:
        body += ["<h2>Sequential decisions (submit --until-decided)</h2>",
                 f"<p>{_e(d['after'])}: {_e(d['design'])}.</p>", _html_table("decisions", d["header"], d["rows"], d["left"])]
    body += ["<h2>Stages</h2>", _html_table("stages", ["status", "stages"],
                                            [[k, str(v)] for k, v in s["stages"].items()], {0}),
             f"<p>{_e(_compute_line(s['compute']))}</p>",
             "<h2>Machines</h2>", f"<p>{_e(_MACHINES_NOTE)}</p>",
             _html_table("machines", MACHINE_HEADER, s["machines"], {0, 1, 3})]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>ticketsweep report: {_e(spec.name)}</title><style>{_CSS}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")


def _figure(title: str, path) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f'<figure><img alt="{_e(title)}" src="data:image/png;base64,{data}"></figure>'


def _html_table(name: str, header, rows, left: set[int]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    number = ' class="num"'
    body = "".join("<tr>" + "".join(f"<td{'' if i in left else number}>{_e(c)}</td>" for i, c in enumerate(row))
                   + "</tr>" for row in rows)
    return f'<table id="{name}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _version_text(v: dict) -> str:
    return ", ".join(f"{k} {v[k]}" for k in sorted(v))


def _generated() -> str:
    return f"Generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC} on {os.uname().nodename}."


def _e(text) -> str:
    return html.escape(str(text))
