"""What a store holds for a plan, checked: which stages are really done, and what needs repair.

A stage is done only if it has an ok commit whose views are readable (or can be re-made from the commit)
and, while some of its dependants are unfinished, its artifact is present. Everything found wrong is
reported (`orchestrate status`) and repaired by `submit` (`repair`): unreadable files and view files with no
commit are moved to quarantine (never deleted), missing views are re-made from their commits.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from orchestrator import artifacts
from orchestrator.plan import Plan
from orchestrator.store import ResultsStore, attempt_name, utc_stamp


@dataclass
class StoreState:
    sweep: str
    attempts: dict[str, int] = field(default_factory=dict)     # last committed attempt per stage
    status: dict[str, str] = field(default_factory=dict)       # latest committed status per stage
    ok_seconds: dict[str, float] = field(default_factory=dict)  # stage seconds of the ok attempt
    done: set[str] = field(default_factory=set)
    diverged: set[str] = field(default_factory=set)
    dense_accuracy: dict[str, float] = field(default_factory=dict)
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)            # view files of attempts with no commit
    unmaterialized: set[str] = field(default_factory=set)       # committed attempts whose views are missing
    missing_artifacts: list[str] = field(default_factory=list)  # done stages whose dependants need their outputs
    temporaries: list[str] = field(default_factory=list)

    @property
    def needs_repair(self) -> bool:
        return bool(self.unreadable or self.orphans or self.unmaterialized)

    def problems(self) -> list[str]:
        lines = [f"unreadable file: {p} ({why})" for p, why in self.unreadable]
        lines += [f"uncommitted view file (no commit for it): {p}" for p in self.orphans]
        if self.unmaterialized:
            lines.append(f"{len(self.unmaterialized)} committed attempt(s) whose view files are missing "
                         f"(submit re-makes them from the commit)")
        lines += [f"missing artifact of finished stage {k[:12]} (its dependants need it; submit runs it again)"
                  for k in self.missing_artifacts]
        if self.temporaries:
            lines.append(f"{len(self.temporaries)} temporary file(s) from interrupted writes "
                         f"(invisible to readers; `orchestrate clean` removes them)")
        return lines


def inspect(store: ResultsStore, plan: Plan | None, sweep: str, check_artifacts: bool = True) -> StoreState:
    state = StoreState(sweep)
    log = store.committed(sweep, ["stage_key", "attempt", "token", "status", "seconds", "n_points", "n_curve",
                                  "n_trials"])
    state.unreadable += log.bad
    rows = sorted(log.table.to_pylist(), key=lambda r: r["attempt"])
    names = set()
    for r in rows:
        key = r["stage_key"]
        names.add(attempt_name(key, r["attempt"], r["token"]))
        state.attempts[key] = max(state.attempts.get(key, 0), r["attempt"])
        state.status[key] = r["status"]
        if r["status"] == "ok":
            state.ok_seconds[key] = float(r["seconds"] or 0.0)

    listed = {}
    for table, count in (("points", "n_points"), ("curves", "n_curve"), ("tuning", "n_trials")):
        present, bad, listed[table] = store.view_names(table, sweep)
        state.unreadable += bad
        for r in rows:
            name = attempt_name(r["stage_key"], r["attempt"], r["token"])
            # Schema-1 commits carry no payload (count None): their views cannot be re-made, only trusted.
            if r[count] and name not in present:
                state.unmaterialized.add(name)
        files = {f.base_name[:-len(".parquet")]: f.path for f in listed[table]}
        state.orphans += [path for name, path in files.items()
                          if name not in names and not name.startswith("compacted-")]

    ok = set(state.ok_seconds)
    state.diverged = {k for k, s in state.status.items() if s == "diverged" and k not in ok}
    state.done = set(ok)
    dense = [f.path for f in listed["points"] if "/method=dense/" in f.path]
    if dense:
        t = store.scan("points", sweep, ["stage_key", "status", "selected_test_accuracy"], files=dense).table.to_pylist()
        state.dense_accuracy = {r["stage_key"]: r["selected_test_accuracy"] for r in t if r["status"] == "ok"}

    if plan is not None:
        state.done &= set(plan.stages)
        if check_artifacts:
            children = plan.children()
            for key in sorted(state.done):
                readers = [c for c in children[key] if c not in state.done
                           and key in {plan.stages[c].parents[r] for r in plan.stages[c].inputs}]
                if readers and not artifacts.exists(store.location, key):
                    state.missing_artifacts.append(key)
            state.done -= set(state.missing_artifacts)
    state.temporaries = [f.path for f in store.temporaries() if f"sweep={sweep}" in f.path]
    return state


def repair(store: ResultsStore, state: StoreState, echo) -> None:
    """Quarantine unreadable and uncommitted view files, then re-make missing views from their commits.

    Inspect again afterwards: a quarantined commit takes its attempt with it.
    """
    stamp = utc_stamp()
    for path, why in state.unreadable:
        echo(f"quarantined unreadable {path} ({why}) -> {store.quarantine(path, stamp)}")
    for path in state.orphans:
        echo(f"quarantined uncommitted {path} -> {store.quarantine(path, stamp)}")
    if state.unreadable or state.orphans:
        state = inspect(store, None, state.sweep, check_artifacts=False)
    if state.unmaterialized:
        rows = store.commit_rows(state.sweep, state.unmaterialized)
        written = sum(store.materialize(state.sweep, row) for row in rows)
        echo(f"re-made {written} view file(s) of {len(rows)} committed attempt(s) from their commits")
