"""One driver per sweep: a lease file in the store, held and renewed by the running driver.

`<store>/leases/<sweep>.json` names the holder (host, pid, since) and when it was last renewed. A lease
not renewed for TTL seconds, or held by a dead process on this host, is stale and may be taken over;
a live one is only taken over on request (`submit --take-over`). On local disk the first lease is created
with O_EXCL, so of two drivers starting at once exactly one wins; on object storage (no exclusive create
through pyarrow) the writer reads its lease back after a pause and only proceeds if it still holds it.
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone

import pyarrow.fs as pafs

from orchestrator.store.files import StoreError
from orchestrator.store.layout import layout_path
from orchestrator.store.results_store import ResultsStore

TTL_SECONDS = 30.0
RENEW_SECONDS = TTL_SECONDS / 3
SETTLE_SECONDS = 1.0  # object storage: how long to wait before reading our lease back


class LeaseHeld(RuntimeError):
    """Another live driver holds the sweep; the message names it and how to take over."""


def _now() -> float:
    return time.time()


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class StopRequested(KeyboardInterrupt):
    """`orchestrate cancel` asked this driver to stop: handled as Ctrl-C is (committed rows kept, lease released)."""


def stop_path(store: ResultsStore, sweep: str) -> str:
    return layout_path(store.root, "stop request", sweep=sweep)


def _stop_token(store: ResultsStore, sweep: str) -> str | None:
    """The lease token a stop request names; None when there is none (or it cannot be read)."""
    path = stop_path(store, sweep)
    try:
        return json.loads(store.get_bytes(path)).get("token") if store.exists(path) else None
    except (OSError, StoreError, ValueError):
        return None  # a damaged or half-written request: the next look, or the SIGINT, decides


def request_stop(store: ResultsStore, sweep: str) -> bool:
    """Ask the driver holding the sweep's lease to stop; False if no driver holds it. The request names the
    holder's token, so it can never stop a later driver."""
    holder = Lease(store, sweep).read()
    if not holder:
        return False
    path = stop_path(store, sweep)
    if store.exists(path):  # an earlier request: it names this holder or one that is gone
        store.fs.delete_file(path)
    store.put_bytes(path, json.dumps({"token": holder.get("token"), "at": _iso(_now())}).encode())
    return True


@dataclass
class Lease:
    store: ResultsStore
    sweep: str
    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    lost: threading.Event = field(default_factory=threading.Event)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _checked_at: float = 0.0

    @property
    def path(self) -> str:
        return layout_path(self.store.root, "lease", sweep=self.sweep)

    def stop_requested(self, every_s: float = 1.0) -> bool:
        """Whether `orchestrate cancel` asked this driver to stop (looked up at most once every `every_s`).

        Cancelling relies on this, not only on the SIGINT Ray's job stop sends: under load that signal was
        seen to go unanswered until Ray killed the driver after its stop wait (deploy/detached.py STOP_WAIT_S),
        by when the sweep had run on."""
        t = time.monotonic()
        if t - self._checked_at < every_s:
            return False
        self._checked_at = t
        return _stop_token(self.store, self.sweep) == self.token

    def _record(self, since: float) -> bytes:
        return json.dumps({"sweep": self.sweep, "host": socket.gethostname(), "pid": os.getpid(),
                           "token": self.token, "since": since, "renewed": _now()}).encode()

    def read(self) -> dict | None:
        if not self.store.exists(self.path):
            return None
        try:
            return json.loads(self.store.get_bytes(self.path))
        except (StoreError, ValueError):
            return None  # vanished or half-visible: treated as free, the read-back settles it

    def check(self, take_over: bool = False) -> None:
        """Raise LeaseHeld if a live driver holds the sweep, without writing anything: `submit` asks this first,
        before the data check, the plan or Ray's start-up, so a second driver is refused within seconds."""
        try:
            self._refuse_if_held(self.read(), take_over)
        except OSError as err:
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise StoreError(f"store {self.store.location}: cannot read the lease {self.path} ({first})") from None

    def _refuse_if_held(self, holder: dict | None, take_over: bool) -> None:
        if holder and not take_over and not stale(holder):
            raise LeaseHeld(describe_holder(holder, self.store.location))

    def acquire(self, take_over: bool = False) -> "Lease":
        try:
            return self._acquire(take_over)
        except OSError as err:
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise StoreError(f"store {self.store.location}: cannot write the lease {self.path} ({first})") from None

    def _acquire(self, take_over: bool) -> "Lease":
        holder = self.read()
        self._refuse_if_held(holder, take_over)
        local = isinstance(self.store.fs, pafs.LocalFileSystem)
        self.store.check_no_link(self.path)
        since = _now()
        if holder is None and local:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return self._acquire(take_over=False)  # lost the race: report the winner
            with os.fdopen(fd, "wb") as f:
                f.write(self._record(since))
        else:
            self._replace(since)
            if not local:
                time.sleep(SETTLE_SECONDS)
        mine = self.read()
        if not mine or mine.get("token") != self.token:
            raise LeaseHeld(describe_holder(mine or {}, self.store.location))
        self._since = since
        self._thread = threading.Thread(target=self._renew_loop, name=f"lease-{self.sweep}", daemon=True)
        self._thread.start()
        return self

    def _replace(self, since: float) -> None:
        """Write the lease under a temporary name and rename it over the old one (one atomic step)."""
        fs, directory = self.store.fs, self.path.rsplit("/", 1)[0]
        tmp = f"{directory}/.{self.sweep}.{uuid.uuid4().hex}.tmp"
        fs.create_dir(directory, recursive=True)
        with fs.open_output_stream(tmp) as f:
            f.write(self._record(since))
        fs.move(tmp, self.path)

    def _renew_loop(self) -> None:
        while not self._stop.wait(RENEW_SECONDS):
            try:
                current = self.read()
                if not current or current.get("token") != self.token:
                    self.lost.set()
                    return
                self._replace(self._since)
            except (OSError, StoreError):
                continue  # a transient store error: the next renewal tries again, well within the TTL

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            current = self.read()
            if current and current.get("token") == self.token:
                self.store.fs.delete_file(self.path)
            if _stop_token(self.store, self.sweep) == self.token:
                self.store.fs.delete_file(stop_path(self.store, self.sweep))
        except (OSError, StoreError):
            pass  # an unreleased lease simply expires after TTL_SECONDS; a stop request names a token no one holds


def stale(holder: dict) -> bool:
    if _now() - float(holder.get("renewed", 0)) > TTL_SECONDS:
        return True
    return holder.get("host") == socket.gethostname() and not _alive(int(holder.get("pid", -1)))


def describe_holder(holder: dict, location: str) -> str:
    if not holder:
        return f"store {location}: another driver took the lease of this sweep at the same moment; try again"
    age = _now() - float(holder.get("renewed", 0))
    return (f"sweep {holder.get('sweep')} is already running: driver pid {holder.get('pid')} on "
            f"{holder.get('host')} since {_iso(float(holder.get('since', 0)))} (lease renewed {age:.0f} s ago). "
            f"If that driver is gone, its lease expires {TTL_SECONDS:.0f} s after its last renewal; "
            f"to take over now, run submit again with --take-over")
