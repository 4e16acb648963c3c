"""`compare` and `report` on a real sweep (6 seeds, so the exact test can reach 5 %): the numbers every form
shows agree, bad input is one line and exit 2, and the report opens in a real headless browser."""
from __future__ import annotations

import html.parser
import re
import shutil
import subprocess

import pytest
import yaml
from click.testing import CliRunner

from orchestrator.cli import main

pytestmark = pytest.mark.slow  # a real sweep on Ray, and a headless browser

SPEC = {
    "name": "verdicts",
    "model": {"name": "mlp", "options": {"hidden": [16]}},
    "dataset": {"name": "synthetic", "options": {"n_train": 160, "n_test": 64}, "validation": 0.2},
    "training": {"epochs": 3, "batch_size": 32, "lr": 0.05, "rewind": "2it"},
    "methods": [{"kind": "oneshot", "criterion": "random"}, {"kind": "oneshot", "criterion": "magnitude"}],
    "sparsities": [0.5, 0.9],
    "seeds": [0, 1, 2, 3, 4, 5],
    # One trial actor: a second is one more process start importing torch, dearer than these tiny stages.
    "resources": {"max_concurrent": 1},
}


@pytest.fixture(scope="module")
def sweep(ray_cluster, tmp_path_factory):
    folder = tmp_path_factory.mktemp("verdicts")
    spec = folder / "spec.yaml"
    spec.write_text(yaml.safe_dump({**SPEC, "store": str(folder / "store")}))
    r = CliRunner().invoke(main, ["submit", str(spec), "--no-progress", "--no-dashboard"])
    assert r.exit_code == 0, r.output
    return spec, folder


def cells(text: str) -> list[list[str]]:
    """The rows of a fixed-width table printed by the CLI: cells are separated by two or more spaces."""
    lines = text.strip().splitlines()
    start = next(i for i, line in enumerate(lines) if set(line) <= {"-", " "} and line.strip()) + 1
    return [re.split(r"\s{2,}", line.strip()) for line in lines[start:] if line.strip() and
            not line.startswith(("not compared", "["))]  # the footer: skipped methods, numbered notes


def test_compare_two_methods_and_every_method_against_a_reference(sweep):
    spec, _ = sweep
    run = CliRunner().invoke
    r = run(main, ["compare", str(spec), "random", "magnitude"])
    assert r.exit_code == 0, r.output
    rows = cells(r.output)
    assert [row[:4] for row in rows] == [["random", "magnitude", "0.5000", "6"], ["random", "magnitude", "0.9000", "6"]]
    everyone = run(main, ["compare", str(spec), "--reference", "random", "--all"])
    assert everyone.exit_code == 0 and cells(everyone.output) == rows
    import json
    records = json.loads(run(main, ["compare", str(spec), "random", "magnitude", "--format", "json"]).output)
    assert [r["n"] for r in records] == [6, 6] and all(r["test"] == "exact" for r in records)
    # The workers recorded the counts: the test ran on integers; the two sparsities are one Holm family.
    assert all(r["test_on"] == "counts" and r["family_size"] == 2 and r["adjust"] == "holm" for r in records)
    assert all(r["p_holm"] == pytest.approx(min(1.0, 2 * min(x["p_value"] for x in records)))
               for r in records if r["p_value"] == min(x["p_value"] for x in records))
    assert "verdicts: Holm-adjusted p (p Holm) < 0.05 over a family of 2 comparison(s)" in r.output
    # 2/64 with six pairs that differ; tied accuracies (tiny test sets) raise it (tests/stats/test_stats.py)
    assert all(r["min_p"] >= 2 / 64 - 1e-12 and r["can_reject"] == (r["min_p"] < 0.05) for r in records)


@pytest.mark.parametrize("args, message", [
    (["random", "magnitud"], "compare: no method 'magnitud'"),
    (["random", "magnitude", "--metric", "best_test_accuracy"], "best_test_accuracy"),
    (["random"], "compare: give two methods A B (got 1), or --reference A --all"),
    (["--reference", "random"], "compare: --all and --reference go together"),
])
def test_compare_bad_input_is_one_line_and_exit_2(sweep, args, message):
    spec, _ = sweep
    r = CliRunner().invoke(main, ["compare", str(spec), *args])
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1 and message in r.output, r.output
    if "magnitud" in args:
        assert "did you mean 'magnitude'" in r.output


@pytest.mark.parametrize("args, message", [
    (["--adjust", "bonferroni"], "'bonferroni' is not one of 'holm', 'bh', 'none'"),
    (["--min-effect", "0"], "Invalid value for '--min-effect'"),
    (["--failures", "drop"], "'drop' is not one of 'chance', 'exclude'"),
])
def test_compare_judging_options_are_checked_by_click(sweep, args, message):
    spec, _ = sweep
    r = CliRunner().invoke(main, ["compare", str(spec), "random", "magnitude", *args])
    assert r.exit_code == 2 and message in r.output, r.output


class _Tables(html.parser.HTMLParser):
    """The cells of every <table id=...> of a page."""

    def __init__(self):
        super().__init__()
        self.tables, self._table, self._row, self._cell = {}, None, None, None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self._table = self.tables.setdefault(dict(attrs).get("id"), [])
        elif tag == "tr" and self._table is not None:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = ""

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append(self._cell)
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self._table.append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data


def test_report_is_self_contained_and_every_number_equals_the_clis(sweep):
    spec, folder = sweep
    out = folder / "report"
    r = CliRunner().invoke(main, ["report", str(spec), "-o", str(out), "--reference", "random"])
    assert r.exit_code == 0, r.output
    page = (out / "report.html").read_text()
    assert not re.search(r'(src|href)="(?!data:)', page)  # nothing outside the page
    assert page.count('src="data:image/png;base64,') == 3  # frontier, cost, learning curves
    tables = _Tables()
    tables.feed(page)
    run = CliRunner().invoke
    assert tables.tables["frontier"][1:] == cells(run(main, ["results", "--spec", str(spec)]).output)
    compared = run(main, ["compare", str(spec), "--reference", "random", "--all"]).output
    assert tables.tables["comparison"][1:] == cells(compared)
    assert {"failed", "p", "p Holm", "q BH", "seeds 80 %"} <= set(tables.tables["comparison"][0])
    family = next(line for line in compared.splitlines() if line.startswith("verdicts: "))
    assert html.escape(family) in page and family in (out / "report.md").read_text()
    notes = [line for line in compared.splitlines() if line.startswith("[")]
    assert all(html.escape(line) in page for line in notes)
    bh = folder / "report-bh"
    assert run(main, ["report", str(spec), "-o", str(bh), "--reference", "random", "--adjust", "bh",
                      "--min-effect", "2"]).exit_code == 0
    tables_bh = _Tables()
    tables_bh.feed((bh / "report.html").read_text())
    assert tables_bh.tables["comparison"][1:] == cells(run(main, [
        "compare", str(spec), "--reference", "random", "--all", "--adjust", "bh", "--min-effect", "2"]).output)
    assert dict(tables.tables["stages"][1:]) == {"ok": str(6 * 7), "to run": "0"}
    assert [row[-2] for row in tables.tables["machines"][1:]] == [str(6 * 7)]  # every stage, on this machine
    for cost in ("epochs", "flops"):  # the same check, costs in work units
        where = folder / f"report-{cost}"
        written = run(main, ["report", str(spec), "-o", str(where), "--reference", "random", "--cost", cost])
        assert written.exit_code == 0, written.output
        in_units = _Tables()
        in_units.feed((where / "report.html").read_text())
        frontier_cli = run(main, ["results", "--spec", str(spec), "--cost", cost]).output
        assert in_units.tables["frontier"][1:] == cells(frontier_cli)
        assert in_units.tables["comparison"][1:] == cells(run(main, [
            "compare", str(spec), "--reference", "random", "--all", "--cost", cost]).output)
        assert f"cost B/A ({cost})" in in_units.tables["comparison"][0]
        assert in_units.tables["frontier"][0][-1] == "standalone s"
    md = (out / "report.md").read_text()
    assert "![accuracy vs density](frontier.png)" in md and (out / "frontier.png").read_bytes()[:4] == b"\x89PNG"
    assert "(curves.png)" in md and (out / "curves.png").read_bytes()[:4] == b"\x89PNG"
    for row in tables.tables["frontier"][1:]:
        assert "| " + row[0] in md


@pytest.mark.skipif(not (shutil.which("chromium") or shutil.which("chromium-browser")),
                    reason="no Chromium: `apt-get install chromium` (Debian) to open the report in a real browser")
def test_the_report_opens_in_a_headless_browser(sweep, tmp_path):
    spec, folder = sweep
    out = folder / "browsed"
    assert CliRunner().invoke(main, ["report", str(spec), "-o", str(out)]).exit_code == 0
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run(flags + ["--dump-dom", (out / "report.html").as_uri()], capture_output=True, text=True,
                         timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    tables = _Tables()
    tables.feed(dom.stdout)
    assert {"frontier", "comparison", "stages"} <= set(tables.tables)
    assert len(tables.tables["frontier"]) == 1 + 5   # header, dense, 2 methods x 2 sparsities
    shot = tmp_path / "page.png"
    subprocess.run(flags + [f"--screenshot={shot}", "--window-size=1400,2400", (out / "report.html").as_uri()],
                   capture_output=True, timeout=120, check=True)
    from PIL import Image
    image = Image.open(shot).convert("L")
    colours = image.getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50  # the plots were drawn, not a blank page
