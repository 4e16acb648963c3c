"""`orchestrate status`, `sweeps`, `compact` and `clean`: looking after what a store holds."""
from __future__ import annotations

import os
import time
from collections import Counter

import click

from orchestrator.cli.common import fail, plan_of, spec_from, store_at
from orchestrator.store.files import StoreError
from orchestrator.store.results_store import ResultsStore
from orchestrator.spec.suggest import suggest

CLEAN_AFTER_S = 3600  # a temporary file younger than this may belong to a write still in progress


def _sweep_or_fail(store: ResultsStore, sweep: str) -> None:
    names = store.sweeps()
    if sweep not in names:
        fail(f"store {store.location}: no sweep {sweep!r}{suggest(sweep, names, list_known=True)}")


def _state_counts(state) -> Counter:
    """Latest status per stage, where a stage that once succeeded counts as ok whatever came after."""
    return Counter("ok" if k in state.ok_seconds else s for k, s in state.status.items())


def _counts(store: ResultsStore, sweep: str) -> tuple[Counter, object]:
    log = store.committed(sweep, ["stage_key", "attempt", "status", "finished_at"]).table.to_pandas()
    latest = log.sort_values("attempt").drop_duplicates("stage_key", keep="last")
    # A stage that once succeeded is done, whatever a later attempt did.
    ok = set(log.loc[log["status"] == "ok", "stage_key"])
    latest.loc[latest["stage_key"].isin(ok), "status"] = "ok"
    return Counter(latest["status"]), (log["finished_at"].max() if len(log) else None)


def _driver_line(store: ResultsStore, sweep: str) -> str:
    """Whether a driver holds the sweep's lease now (orchestrator/store/lease.py), and which."""
    from datetime import datetime, timezone

    from orchestrator.store.lease import Lease, stale

    try:
        holder = Lease(store, sweep).read()
    except StoreError as err:
        return f"driver: cannot tell ({err})"
    if not holder:
        return "no driver is running"
    who = f"pid {holder.get('pid')} on {holder.get('host')}"
    renewed = time.time() - float(holder.get("renewed", 0))
    if stale(holder):
        return (f"no driver is running (the lease of {who} was last renewed {renewed:.0f} s ago: that driver is "
                f"gone; the next submit takes the lease over)")
    return (f"driver running: {who} since "
            f"{datetime.fromtimestamp(float(holder.get('since', 0)), timezone.utc):%Y-%m-%d %H:%M:%S UTC} "
            f"(lease renewed {renewed:.0f} s ago)")


def _job_line(location: str, sweep: str) -> str | None:
    try:
        from orchestrator.deploy import detached
    except ImportError:
        return None
    return detached.job_line(location, sweep)


@click.command()
@click.argument("spec_path", metavar="SPEC", required=False)
@click.option("--store", "store_location", help="Results store (default: the spec's).")
@click.option("--sweep", help="Only this sweep (default: the spec's, else every sweep in the store).")
def status(spec_path: str | None, store_location: str | None, sweep: str | None) -> None:
    """Progress of a sweep, and anything wrong in the store: unreadable files, missing artifacts, leftovers."""
    from orchestrator.store import health

    spec = spec_from(spec_path) if spec_path else None
    if not (store_location or spec):
        fail("status: give a SPEC or --store")
    store = store_at(store_location or spec.store)
    sweep = sweep or (spec.name if spec else None)
    try:
        if sweep is None:
            names = store.sweeps()
            if not names:
                click.echo(f"{store.location}: no sweeps yet")
            for name in names:
                counts, _ = _counts(store, name)
                driver = _driver_line(store, name)
                click.echo(f"sweep {name}: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
                           + ("" if driver.startswith("no driver") else f"; {driver}"))
            return
        if spec is None:
            _sweep_or_fail(store, sweep)
        plan = plan_of(spec) if spec is not None and spec.name == sweep else None
        state = health.inspect(store, plan, sweep)
        counts = _state_counts(state)
    except StoreError as err:
        fail(str(err))
    detail = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "nothing stored yet"
    if not counts and spec is not None and not store_location and "store" not in spec.model_fields_set:
        # The default store is relative to where the command runs: from another folder it is another store.
        click.echo(f"store {spec.store} relative to the working directory ({os.getcwd()}): nothing stored; "
                   f"the spec names no store, so run from the folder the sweep ran in or add `store:` to it")
    if plan is not None:
        done = len(state.done)
        diverged = len(state.diverged & set(plan.stages))
        click.echo(f"sweep {sweep}: {done}/{len(plan.stages)} stages done, {len(plan.stages) - done} to run "
                   f"({detail}) in {store.location}")
        if diverged:
            click.echo(f"  {diverged} stage(s) diverged: submit does not run them again unless --retry-diverged")
        superseded = len(set(state.status) - set(plan.stages))
        if superseded:
            click.echo(f"  {superseded} stored stage(s) are no longer in this spec's plan: their rows are kept, and "
                       f"left out of results, plot, compare and report")
    else:
        click.echo(f"sweep {sweep}: {detail} in {store.location}")
    click.echo(f"  {_driver_line(store, sweep)}")
    job = _job_line(store.location, sweep)
    if job:
        click.echo(f"  {job}")
    problems = state.problems()
    for line in problems:
        click.echo(f"  problem: {line}")
    if not problems:
        click.echo("  store checks: nothing unreadable, foreign, damaged, missing or left over")


@click.command()
@click.option("--store", "store_location", default="./ticketsweep-store", show_default=True, help="Results store.")
def sweeps(store_location: str) -> None:
    """List the sweeps in a store with their stages by latest status, and the totals over all of them."""
    store = store_at(store_location)
    try:
        names = store.sweeps()
        if not names:
            click.echo(f"{store.location}: no sweeps yet")
            return
        click.echo(f"{'sweep':24} {'ok':>6} {'failed':>7} {'diverged':>9} {'skipped':>8}  last finished")
        total, latest = Counter(), None

        def line(name: str, counts: Counter, last) -> str:
            when = last.strftime("%Y-%m-%d %H:%M:%S UTC") if last is not None and last == last else "—"
            return (f"{name:24} {counts.get('ok', 0):>6} {counts.get('failed', 0):>7} "
                    f"{counts.get('diverged', 0):>9} {counts.get('skipped', 0):>8}  {when}")

        for name in names:
            counts, last = _counts(store, name)
            click.echo(line(name, counts, last))
            total.update(counts)
            if last is not None and last == last and (latest is None or last > latest):
                latest = last
        click.echo(line(f"total ({len(names)} sweep{'s' if len(names) > 1 else ''})", total, latest))
    except StoreError as err:
        fail(str(err))


@click.command()
@click.argument("spec_path", metavar="SPEC", required=False)
@click.option("--store", "store_location", help="Results store (default: the spec's).")
@click.option("--sweep", help="The sweep (default: the spec's).")
def compact(spec_path: str | None, store_location: str | None, sweep: str | None) -> None:
    """Merge a sweep's small result files into one file per directory (readers never see a gap or a duplicate)."""
    spec = spec_from(spec_path) if spec_path else None
    if not (sweep or spec) or not (store_location or spec):
        fail("compact: give a SPEC, or --store and --sweep")
    store = store_at(store_location or spec.store)
    sweep = sweep or spec.name
    _sweep_or_fail(store, sweep)
    t0 = time.perf_counter()
    try:
        merged = store.compact(sweep)
    except StoreError as err:
        fail(str(err))
    files = sum(n for n, _ in merged.values())
    click.echo(f"sweep {sweep}: merged {files} file(s) in {len(merged)} director(ies) "
               f"({time.perf_counter() - t0:.1f} s)")


@click.command()
@click.option("--store", "store_location", default="./ticketsweep-store", show_default=True, help="Results store.")
@click.option("--older-than", default=CLEAN_AFTER_S, show_default=True, type=int,
              help="Only temporary files older than this many seconds (younger ones may be writes in progress).")
def clean(store_location: str, older_than: int) -> None:
    """Delete the temporary files of interrupted writes (they are never visible to readers)."""
    store = store_at(store_location)
    cutoff = time.time() - older_than
    try:
        old = [f for f in store.temporaries() if f.mtime is None or f.mtime.timestamp() < cutoff]
        for f in old:
            store.fs.delete_file(f.path)
            click.echo(f"deleted {f.path}")
    except (StoreError, OSError) as err:
        fail(f"store {store.location}: {err}")
    click.echo(f"{len(old)} temporary file(s) deleted")


COMMANDS = (status, sweeps, compact, clean)
