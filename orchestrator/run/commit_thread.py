"""A run's store writes on one long-lived thread, in the order they were asked for.

Why: committing a stage attempt (a Parquet file per table it fills, each written atomically) costs the driver
several milliseconds of CPU. Done on the scheduling loop's thread, it kept the loop from noticing the next
finished stage and handing its trial actor new work, so actors waited on the driver's I/O. The loop now hands
each write over and goes back to waiting on Ray; what must follow a write (counting the stage as finished, its
progress line) runs on the loop's thread once the write has returned (`completed`), so nothing is counted
before it is durable in the store.

One thread, first in first out: a stage's later attempt is never written before an earlier one, nor a stage
before the parents whose seconds its standalone cost sums (the recorder keeps them as it writes). A write that
fails stops every later one; its error is raised on the loop's thread.
"""
from __future__ import annotations

import queue
import threading
from collections import deque
from typing import Callable


class CommitThread:
    def __init__(self):
        self._todo: queue.Queue = queue.Queue()
        self._written: deque[Callable[[], None]] = deque()
        self._error: BaseException | None = None
        self._drop = False
        self._thread = threading.Thread(target=self._loop, name="ticketsweep-commits", daemon=True)
        self._thread.start()

    def submit(self, write: Callable[[], object], then: Callable[[], None] | None = None) -> None:
        """Run `write` on the thread after every write submitted before it; `then` on the caller's thread once
        it has returned (see `completed`)."""
        self._raise()
        self._todo.put((write, then))

    def _loop(self) -> None:
        while True:
            item = self._todo.get()
            try:
                if item is None:
                    return
                write, then = item
                if self._error is None and not self._drop:
                    try:
                        write()
                    except BaseException as err:  # noqa: BLE001 - raised on the loop's thread (_raise)
                        self._error = err
                    else:
                        if then is not None:
                            self._written.append(then)
            finally:
                self._todo.task_done()

    def _raise(self) -> None:
        if self._error is not None:
            err, self._error = self._error, None
            self._drop = True  # nothing after a failed write is written: the run stops on its error
            raise err

    def completed(self) -> None:
        """Run, on the caller's thread, what follows each write that has returned; raise a write's error."""
        while self._written:
            self._written.popleft()()
        self._raise()

    def flush(self) -> None:
        """Wait until every write submitted so far has returned, then as `completed`."""
        self._todo.join()
        self.completed()

    def close(self, write_pending: bool = True) -> None:
        """End the thread; the writes still queued are made first unless `write_pending` is false."""
        if not write_pending:
            self._drop = True
        self._todo.put(None)
        self._thread.join()
