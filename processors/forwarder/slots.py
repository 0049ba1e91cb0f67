"""The hand-offs between the main thread and the delivery threads.

:class:`Slots`: which waiting job a free delivery thread takes next (per-partner caps).
:class:`Results`: the finished attempts going back to the main thread.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import defaultdict, deque

from core import delivery
from core.partners import Partner
from processors.forwarder.bookkeeping import Finished, Held


class Slots:
    """Jobs waiting for a delivery thread, per partner; at most ``cap`` of a partner in flight.

    Thread-safe. Delivery threads call :meth:`take` for their next job and :meth:`done`
    after it; the main thread puts jobs in and takes back the ones that must wait
    elsewhere (a paused partner's, a partner's surplus). Threads wait on a queue of
    *tokens*, each a go for one job of one partner: a partner gets tokens only while it
    is under its cap, so its queue never stands in front of another's, and partners take
    turns in the order their tokens were issued.

    A partner whose deliveries here failed ``hold_after`` times in a row is held (no
    tokens) until the main thread has recorded all its attempts and either paused it or
    let it go (:meth:`release`): the threads are faster than the bookkeeping, and a
    partner about to be paused must not have its waiting jobs spend attempts meanwhile.
    """

    def __init__(self, cap: int, hold_after: int) -> None:
        self.cap = cap
        self.hold_after = hold_after
        self._lock = threading.Lock()
        self._tokens: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._issued: dict[str, int] = defaultdict(int)  # tokens in the queue
        self._waiting: dict[str, deque[Held]] = defaultdict(deque)
        self._partner: dict[str, Partner] = {}
        self._inflight: dict[str, int] = defaultdict(int)
        self._started: dict[str, dict[int, float]] = defaultdict(dict)  # id(job) → monotonic
        self._failures: dict[str, int] = defaultdict(int)  # in a row, as seen here
        self._unrecorded: dict[str, int] = defaultdict(int)  # attempts ended, not recorded

    def _issue(self, pid: str) -> None:
        """Tokens for what may start now (caller holds the lock)."""
        if self._failures[pid] >= self.hold_after:
            return
        room = min(self.cap - self._inflight[pid], len(self._waiting[pid])) - self._issued[pid]
        for _ in range(max(room, 0)):
            self._issued[pid] += 1
            self._tokens.put(pid)

    def put(self, item: Held, partner: Partner) -> None:
        with self._lock:
            self._partner[partner.partner_id] = partner
            self._waiting[item.partner_id].append(item)
            self._issue(item.partner_id)

    def set_partner(self, partner: Partner) -> None:
        """Newer configuration for the jobs still waiting."""
        with self._lock:
            self._partner[partner.partner_id] = partner

    def take(self) -> tuple[Held, Partner] | None:
        """The next job (waits for one), or None once closed."""
        while True:
            pid = self._tokens.get()
            if pid is None:
                return None
            with self._lock:
                self._issued[pid] -= 1
                # A token may be stale: its job was taken back, or the partner is held.
                if self._waiting[pid] and self._failures[pid] < self.hold_after:
                    self._inflight[pid] += 1
                    item = self._waiting[pid].popleft()
                    self._started[pid][id(item)] = time.monotonic()
                    return item, self._partner[pid]

    def done(self, item: Held, result: str | None = None) -> None:
        """A delivery ended; ``result`` is its outcome when an HTTP attempt was made."""
        partner_id = item.partner_id
        with self._lock:
            self._inflight[partner_id] -= 1
            self._started[partner_id].pop(id(item), None)
            if result is not None:
                self._unrecorded[partner_id] += 1
            if result == delivery.DELIVERED:
                self._failures[partner_id] = 0
            elif result == delivery.RETRY:
                self._failures[partner_id] += 1
            self._issue(partner_id)

    def recorded(self, partner_id: str, attempts: int) -> None:
        with self._lock:
            self._unrecorded[partner_id] -= attempts

    def held_and_recorded(self) -> list[str]:
        """Held partners whose every attempt is recorded: ready for a decision."""
        with self._lock:
            return [
                pid
                for pid, failures in self._failures.items()
                if failures >= self.hold_after and self._unrecorded[pid] <= 0
            ]

    def release(self, partner_id: str, failures: int = 0) -> None:
        """Hand out a held partner's jobs again, counting on from ``failures`` in a row."""
        with self._lock:
            self._failures[partner_id] = failures
            self._issue(partner_id)

    def inflight(self, partner_id: str) -> int:
        return self._inflight[partner_id]

    def waiting(self, partner_id: str) -> int:
        return len(self._waiting.get(partner_id, ()))

    def oldest_running_s(self, partner_id: str) -> float:
        """How long the partner's longest-running delivery has been going (0: none)."""
        with self._lock:
            started = self._started.get(partner_id)
            return time.monotonic() - min(started.values()) if started else 0.0

    def partners_waiting(self) -> list[str]:
        with self._lock:
            return [pid for pid, waiting in self._waiting.items() if waiting]

    def remove(self, partner_id: str, keep: int = 0) -> list[Held]:
        """Take back a partner's newest waiting jobs beyond ``keep`` (never a probe)."""
        with self._lock:
            waiting = self._waiting[partner_id]
            kept = [item for item in waiting if item.probe]
            others = [item for item in waiting if not item.probe]
            keep = max(0, keep - len(kept))
            waiting.clear()
            waiting.extend(kept + others[:keep])
            return others[keep:]

    def clear(self) -> list[Held]:
        with self._lock:
            items = [item for waiting in self._waiting.values() for item in waiting]
            self._waiting.clear()
            return items

    def close(self, threads: int) -> None:
        """Let ``threads`` waiting delivery threads go (each takes one stop token)."""
        for _ in range(threads):
            self._tokens.put(None)


class Results:
    """Finished attempts on their way from the delivery threads to the main thread.

    The main thread waits for a number of them and is woken once that many are in, not
    once per result: each wake-up is a GIL hand-over taken from the deliveries.
    """

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Finished] = queue.SimpleQueue()
        self._enough = threading.Event()
        self._want = 0  # how many the main thread waits for; 0 when it does not wait

    def put(self, finished: Finished) -> None:
        self._queue.put(finished)
        if self._want and self._queue.qsize() >= self._want:
            self._enough.set()

    def waiting(self) -> int:
        """Results put and not taken yet."""
        return self._queue.qsize()

    def take_all(self) -> list[Finished]:
        taken = []
        while True:
            try:
                taken.append(self._queue.get_nowait())
            except queue.Empty:
                return taken

    def wait(self, count: int, timeout: float) -> None:
        """Return once ``count`` results are waiting, or after ``timeout`` seconds."""
        if count <= 0:
            return
        self._enough.clear()
        self._want = count
        # A result put after this check sees _want and sets the event: none is missed.
        if self._queue.qsize() < count:
            self._enough.wait(timeout)
        self._want = 0
