"""What a store holds for a plan, checked: which stages are really done, and what needs repair.

A stage is done only if it has an ok commit whose views are readable (or can be re-made from the commit)
and, while some of its dependants are unfinished, its artifact is present and sound. Everything found wrong
is reported (`orchestrate status` prints `StoreState.problems()`) and repaired by `submit` (`repair`):
unreadable files, files the store did not write, view files with no commit and damaged artifacts are moved to
quarantine (never deleted); files an interrupted compaction left behind are deleted once every row they
hold is found in the compacted file; missing views are re-made from their commits.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from orchestrator.spec.plan import Plan
from orchestrator.store import artifacts
from orchestrator.store.lease import Lease, LeaseHeld
from orchestrator.store.layout import FOREIGN, TABLE_KINDS, TEMPORARY, attempt_name, claimed_sweeps, utc_stamp
from orchestrator.store.schemas import TABLES, WORK_SUMMARY
from orchestrator.store.results_store import ResultsStore

_CHECK_THREADS = 16  # artifact checks: one or two small reads each, latency-bound on object storage


@dataclass
class DamagedArtifact:
    key: str
    label: str
    path: str
    why: str
    files: list[str]  # the artifact and its checksum file, as found


@dataclass
class StoreState:
    sweep: str
    attempts: dict[str, int] = field(default_factory=dict)     # last committed attempt per stage
    status: dict[str, str] = field(default_factory=dict)       # latest committed status per stage
    ok_seconds: dict[str, float] = field(default_factory=dict)  # stage seconds of the ok attempt
    ok_work: dict[str, dict] = field(default_factory=dict)      # its work columns (None where not counted)
    done: set[str] = field(default_factory=set)
    diverged: set[str] = field(default_factory=set)
    dense_accuracy: dict[str, float] = field(default_factory=dict)
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    foreign: list[tuple[str, str]] = field(default_factory=list)  # files and directories the store did not write
    # Partitions of sweeps that have neither a commit log nor a plan, by sweep: only that sweep's lease may move them.
    unclaimed: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    orphans: list[str] = field(default_factory=list)            # view files of attempts with no commit
    unmaterialized: set[str] = field(default_factory=set)       # committed attempts whose views are missing
    merged: list[tuple[str, str]] = field(default_factory=list)  # left by an interrupted compaction: (file, holder)
    missing_artifacts: list[str] = field(default_factory=list)  # done stages whose dependants need their outputs
    damaged_artifacts: list[DamagedArtifact] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)       # stage labels, for the stages named in problems
    temporaries: list[str] = field(default_factory=list)

    @property
    def needs_repair(self) -> bool:
        return bool(self.unreadable or self.foreign or self.unclaimed or self.orphans or self.unmaterialized
                    or self.merged or self.damaged_artifacts)

    def problems(self) -> list[str]:
        lines = [f"unreadable file: {p} ({why})" for p, why in self.unreadable]
        lines += [f"foreign (not written by the store): {p} ({why}; submit moves it to quarantine)"
                  for p, why in self.foreign]
        lines += [f"foreign (not written by the store): {p} ({why}; submit moves it to quarantine unless a driver of "
                  f"sweep {sweep} holds its lease)" for sweep, found in self.unclaimed.items() for p, why in found]
        lines += [f"uncommitted view file (no commit for it): {p}" for p in self.orphans]
        if self.unmaterialized:
            lines.append(f"{len(self.unmaterialized)} committed attempt(s) whose view files are missing "
                         f"(submit re-makes them from the commit)")
        by_holder: dict[str, int] = {}
        for _, holder in self.merged:
            by_holder[holder] = by_holder.get(holder, 0) + 1
        lines += [f"interrupted compaction: {n} file(s) already merged into {holder} are still there (a raw "
                  f"pandas read sees their rows twice; submit or compact deletes them)"
                  for holder, n in by_holder.items()]
        lines += [f"damaged artifact of finished stage {d.key[:12]} ({d.label}): {d.path} ({d.why}; its dependants "
                  f"need it: submit moves it to quarantine and runs that stage again)" for d in self.damaged_artifacts]
        lines += [f"missing artifact of finished stage {k[:12]} ({self.labels.get(k, '?')}) (its dependants need it; "
                  f"submit runs it again)" for k in self.missing_artifacts]
        if self.temporaries:
            lines.append(f"{len(self.temporaries)} temporary file(s) from interrupted writes "
                         f"(invisible to readers; `orchestrate clean` removes them)")
        return lines


def inspect(store: ResultsStore, plan: Plan | None, sweep: str, check_artifacts: bool = True) -> StoreState:
    state = StoreState(sweep)
    entries = store.walk(sweep)  # the one listing of the store; every check below reuses it
    files = _sort_listing(entries, state)
    log = store.committed(sweep, ["stage_key", "attempt", "token", "status", "error_type", "seconds", "n_points",
                                  "n_curve", "n_trials", *WORK_SUMMARY], files=files["stages"])
    state.unreadable += log.bad
    state.foreign += log.foreign
    state.merged += log.merged
    rows = sorted(log.table.to_pylist(), key=lambda r: r["attempt"])
    names, latest = set(), {}
    for r in rows:
        key = r["stage_key"]
        names.add(attempt_name(key, r["attempt"], r["token"]))
        state.attempts[key] = max(state.attempts.get(key, 0), r["attempt"])
        state.status[key] = r["status"]
        latest[key] = r
        if r["status"] == "ok":
            state.ok_seconds[key] = float(r["seconds"] or 0.0)
            state.ok_work[key] = {c: r[c] for c in WORK_SUMMARY}

    views = {}
    for table, count in (("points", "n_points"), ("curves", "n_curve"), ("tuning", "n_trials")):
        views[table] = v = store.view_names(table, sweep, files[table])
        state.unreadable += v.bad
        state.foreign += v.foreign
        state.merged += v.merged
        for r in rows:
            name = attempt_name(r["stage_key"], r["attempt"], r["token"])
            # Schema-1 commits carry no payload (count None): their views cannot be re-made, only trusted.
            if r[count] and name not in v.names:
                state.unmaterialized.add(name)
        state.orphans += [f.path for f in v.files
                          if f.base_name[:-len(".parquet")] not in names and not f.base_name.startswith("compacted-")]

    ok = set(state.ok_seconds)
    state.diverged = {k for k, s in state.status.items() if s == "diverged" and k not in ok}
    state.done = set(ok)
    dense = [f.path for f in views["points"].files if "/method=dense/" in f.path]
    if dense:
        s = store.scan("points", sweep, ["stage_key", "status", "selected_test_accuracy"], files=dense)
        state.unreadable += s.bad
        state.foreign += s.foreign
        state.dense_accuracy = {r["stage_key"]: r["selected_test_accuracy"] for r in s.table.to_pylist()
                                if r["status"] == "ok"}

    if plan is not None:
        state.done &= set(plan.stages)
        if check_artifacts:
            failed = {attempt_name(k, r["attempt"], r["token"]) for k, r in latest.items()
                      if k in plan.stages and k not in ok and r["status"] == "failed" and r["error_type"] == "artifact"}
            named = set()
            if failed:  # a trial that could not load an artifact named it: read it whole, whatever its size says
                named = {artifacts.key_named(r["error"])
                         for r in store.commit_rows(sweep, failed, ["error"], files=files["stages"])}
            _check_artifacts(store, plan, state, entries, named)
    return state


def _sort_listing(entries: list, state: StoreState) -> dict[str, list]:
    """The sweep's files of each table; its temporaries and the foreign entries it reports go into `state`."""
    sweeps = claimed_sweeps(entries)
    files: dict[str, list] = {t: [] for t in TABLES}
    for e in entries:
        if e.kind in TABLE_KINDS:
            if e.sweep == state.sweep:
                files[e.top].append(e.info)
        elif e.kind == TEMPORARY:
            if e.sweep == state.sweep:
                state.temporaries.append(e.path)
        # Foreign entries in another sweep's partitions are that sweep's to report and repair; those in partitions
        # of no sweep (neither a commit log nor a plan) may be moved only under that sweep's lease.
        elif e.kind == FOREIGN and e.sweep in (None, state.sweep):
            state.foreign.append((e.path, e.why))
        elif e.kind == FOREIGN and e.sweep not in sweeps:
            state.unclaimed.setdefault(e.sweep, []).append((e.path, e.why))
    return files


def _check_artifacts(store: ResultsStore, plan: Plan, state: StoreState, entries, named: set) -> None:
    """Take out of `done` each stage whose artifact an unfinished stage reads but that is missing or damaged,
    until none is left (a stage that runs again reads its own parents' artifacts)."""
    sizes = {e.parts["key"]: e.info.size for e in entries if e.kind == "artifact"}
    checksums = {e.parts["key"]: e.path for e in entries if e.kind == "checksum"}
    children = plan.children()

    def reads(child: str) -> set[str]:
        stage = plan.stages[child]
        return {stage.parents[r] for r in stage.inputs}

    def check(key: str) -> str | None:
        if key not in sizes:
            return artifacts.MISSING
        return artifacts.problem(store.fs, store.root, key, sizes[key], key in checksums, deep=key in named)

    todo = sorted(k for k in state.done if any(c not in state.done and k in reads(c) for c in children[k]))
    checked: set[str] = set()
    while todo:
        with ThreadPoolExecutor(min(_CHECK_THREADS, len(todo))) as pool:
            found = list(zip(todo, pool.map(check, todo)))
        checked.update(todo)
        lost = []
        for key, why in found:
            if why is None:
                continue
            lost.append(key)
            state.labels[key] = plan.stages[key].label
            if why == artifacts.MISSING:
                state.missing_artifacts.append(key)
            else:
                files = [artifacts.artifact_path(store.root, key)] + ([checksums[key]] if key in checksums else [])
                state.damaged_artifacts.append(DamagedArtifact(key, plan.stages[key].label, files[0], why, files))
        state.done -= set(lost)
        todo = sorted({p for k in lost for p in reads(k) if p in state.done and p not in checked})


def repair(store: ResultsStore, state: StoreState, echo) -> None:
    """Quarantine unreadable, foreign and uncommitted view files and damaged artifacts, finish an interrupted
    compaction, then re-make missing views from their commits.

    `state` must have been inspected while holding the sweep's lease (what another driver did before it was
    taken may have changed everything). Inspect again afterwards: a quarantined commit takes its attempt with it.
    """
    stamp = utc_stamp()

    def moved(path: str, what: str) -> None:
        target = store.quarantine(path, stamp)
        echo(f"quarantined {what} -> {target}" if target else f"{what} was moved away meanwhile by another process")

    for path, why in state.unreadable:
        moved(path, f"unreadable {path} ({why})")
    for path, why in state.foreign:
        moved(path, f"foreign {path} ({why})")
    for sweep, found in state.unclaimed.items():
        _quarantine_unclaimed(store, sweep, found, moved, echo)
    for path in state.orphans:
        moved(path, f"uncommitted {path}")
    for d in state.damaged_artifacts:
        targets = [store.quarantine(p, stamp) for p in d.files]
        echo(f"quarantined damaged artifact {d.path} of stage {d.key[:12]} ({d.label}: {d.why}) -> "
             f"{targets[0] or 'moved meanwhile by another process'}; the stage runs again")
    if state.merged:
        deleted, kept = store.finish_compaction(state.merged)
        echo(f"finished an interrupted compaction: deleted {len(deleted)} merged file(s), every row of each found "
             f"in its compacted file")
        for path, why in kept:
            echo(f"left {path} in place: {why}")
    if state.unreadable or state.foreign or state.unclaimed or state.orphans:
        state = inspect(store, None, state.sweep, check_artifacts=False)
    if state.unmaterialized:
        rows = store.commit_rows(state.sweep, state.unmaterialized)
        written = sum(store.materialize(state.sweep, row) for row in rows)
        echo(f"re-made {written} view file(s) of {len(rows)} committed attempt(s) from their commits")


def _quarantine_unclaimed(store: ResultsStore, sweep: str, found: list[tuple[str, str]], moved, echo) -> None:
    """Move partitions of a sweep that has neither a commit log nor a plan, holding that sweep's lease: a driver
    of that sweep may be starting (it takes its lease before it writes anything), so what is moved is looked at
    again under the lease, and nothing is moved while another driver holds it."""
    try:
        lease = Lease(store, sweep).acquire()
    except LeaseHeld:
        echo(f"left {len(found)} file(s) of sweep {sweep} in place: a driver of that sweep holds its lease")
        return
    try:
        entries = store.walk()
        if sweep in claimed_sweeps(entries):
            return  # its driver recorded its plan or committed meanwhile: these are its files now
        still = {e.path for e in entries if e.sweep == sweep and e.kind == FOREIGN}
        for path, why in found:
            if path in still:
                moved(path, f"foreign {path} ({why})")
    finally:
        lease.release()
