"""Group commit: the script calls of concurrent threads sent as one pipeline.

The edge's request threads each write their postback with one script call. Sent one
round trip each, N concurrent requests cost N pipelines: N pool check-outs, N socket
writes and reads, N wake-ups. Here the first caller becomes the *leader*: it sends its
own calls at once; callers arriving while that round trip is out queue up, and when it
ends the next leader sends all of theirs in one pipeline. A caller still returns only
after the pipeline holding its own calls has been answered; nobody waits for a timer,
and a lone caller pays nothing but a lock.

    >>> writes = GroupCommit(lambda calls: scripts.run_many(client, "ingest", calls))
    >>> writes.run_many([(keys, args)])       # from any thread; [result or exception]

A failure of the whole round trip (a lost connection) is raised in every caller whose
calls were in it; errors of single calls come back in place, as ``run_many`` gives them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

Call = tuple[Sequence, Sequence]


class _Waiter:
    __slots__ = ("calls", "done", "error", "lead", "results")

    def __init__(self, calls: list[Call]) -> None:
        self.calls = calls
        self.done = threading.Event()
        self.lead = False
        self.results: list | None = None
        self.error: BaseException | None = None


class GroupCommit:
    """Thread-safe; ``run_many(calls) -> [result or exception per call]`` does the I/O.

    ``most`` bounds the calls one pipeline carries (a leader takes whole callers up to
    it; the rest go in the next one).
    """

    def __init__(self, run_many: Callable[[list[Call]], list], most: int = 512) -> None:
        self._run = run_many
        self._most = most
        self._lock = threading.Lock()
        self._queue: list[_Waiter] = []
        self._busy = False
        #: Pipelines sent and calls carried, for the benchmark and tests.
        self.rounds = 0
        self.calls = 0

    def run_many(self, calls: Sequence[Call]) -> list:
        waiter = _Waiter(list(calls))
        with self._lock:
            self._queue.append(waiter)
            lead = not self._busy
            self._busy = True
        if not lead:
            waiter.done.wait()
            if waiter.lead:  # handed the lead: its calls go in the next pipeline
                self._lead()
        else:
            self._lead()
        if waiter.error is not None:
            raise waiter.error
        return waiter.results

    def _lead(self) -> None:
        with self._lock:
            batch, size = [], 0
            while self._queue and (not batch or size + len(self._queue[0].calls) <= self._most):
                waiter = self._queue.pop(0)
                batch.append(waiter)
                size += len(waiter.calls)
        try:
            results = self._run([call for waiter in batch for call in waiter.calls])
            error = None
        except BaseException as exc:  # every caller of this round trip hears of it
            results, error = [], exc
        self.rounds += 1
        self.calls += size
        at = 0
        for waiter in batch:
            if error is not None:
                waiter.error = error
            else:
                waiter.results = results[at : at + len(waiter.calls)]
                at += len(waiter.calls)
        with self._lock:
            successor = self._queue[0] if self._queue else None
            if successor is not None:
                successor.lead = True
            else:
                self._busy = False
        for waiter in batch:
            waiter.done.set()
        if successor is not None:
            successor.done.set()
