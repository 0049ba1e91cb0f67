"""Ending an idle worker's wait on a Redis Cluster the moment a partition gets an entry.

On a single Redis one XREADGROUP blocks on every partition's stream at once. On a
cluster the streams lie in different hash slots and a command's keys must share one,
so a worker could block on one partition at a time only, each in turn: a job written
to another waited for that read to end (``block_ms / partitions``: 125 ms with the
defaults). Instead :class:`Wakeup` keeps a watcher thread per partition. While the
worker is idle (:meth:`Wakeup.wait`), each watcher blocks in a plain ``XREAD`` from its
group's last-delivered ID, which answers as soon as the stream holds an entry the
group has not been given; the first answer ends the wait. The worker then reads its
partitions as it always does (XREADGROUP, without blocking): watchers never take an
entry, so nothing about pending entries, acks or claims changes.

Why nothing is missed: a watcher starts each read from the group's last-delivered ID,
so an entry added before the read began answers it at once, and one added later ends
it. A read still blocked when the worker goes idle again is kept: blocked means nothing
was added since it began. Each watcher holds one connection of its node's pool while
it reads; a watcher whose partition is no longer worked stops after its read.

    >>> wakeup = Wakeup(client, "matcher", keys.input_stream, block_ms=2000)
    >>> wakeup.wait([0, 3, 7], timeout_ms=2000)   # True: one of them got an entry
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

import redis

from processors.backoff import Backoff
from storage.redis_client import UNAVAILABLE

log = logging.getLogger(__name__)


class Wakeup:
    """One watcher thread per partition; :meth:`wait` returns when any sees a new entry."""

    def __init__(
        self, client, group: str, stream_of: Callable[[int], str], *, block_ms: int
    ) -> None:
        self.r = client
        self.group = group
        self.stream_of = stream_of
        self.block_ms = max(block_ms, 1)
        self._lock = threading.Lock()
        self._watchers: dict[int, threading.Thread] = {}
        self._wanted: set[int] = set()
        self._idle = threading.Event()  # watchers start a read only while the worker waits
        self._woken = threading.Event()
        self._closed = False

    def wait(self, partitions: Iterable[int], timeout_ms: int) -> bool:
        """Block until one of ``partitions`` holds an entry not yet given to the group, or
        ``timeout_ms`` passes; True when woken. Call it after reads that found nothing."""
        partitions = list(partitions)
        with self._lock:
            self._wanted = set(partitions)
            for n in partitions:
                if n not in self._watchers:
                    watcher = threading.Thread(
                        target=self._watch, args=(n,), name=f"wakeup-{n}", daemon=True
                    )
                    self._watchers[n] = watcher
                    watcher.start()
        # A watcher that answered since the last wait reads again from the group's
        # last-delivered ID before it can end this one: clearing loses nothing.
        self._woken.clear()
        self._idle.set()
        try:
            return self._woken.wait(max(timeout_ms, 0) / 1000)
        finally:
            self._idle.clear()

    def close(self) -> None:
        """Stop every watcher after its read (they are daemon threads: exit needs no wait)."""
        with self._lock:
            self._closed = True
        self._idle.set()

    def _watch(self, n: int) -> None:
        stream, backoff = self.stream_of(n), Backoff()
        while True:
            self._idle.wait()
            with self._lock:
                if self._closed or n not in self._wanted:
                    del self._watchers[n]
                    return
            try:
                since = self._last_delivered(stream)
                reply = self.r.xread({stream: since}, count=1, block=self.block_ms)
                backoff.reset()
            except Exception as exc:  # noqa: BLE001 - a watcher outlives any error
                if self._closed:  # its client closed under its read: expected on the way out
                    continue
                # The worker's own reads meet a lost Redis too and back off; wake it so they do.
                level = (
                    logging.DEBUG
                    if isinstance(exc, (*UNAVAILABLE, redis.RedisError))
                    else logging.WARNING
                )
                log.log(level, "wakeup watcher of %s: %s", stream, exc)
                self._woken.set()
                time.sleep(backoff.next())
                continue
            if reply:
                self._woken.set()

    def _last_delivered(self, stream: str) -> str:
        for group in self.r.xinfo_groups(stream):
            if group["name"] == self.group:
                return group["last-delivered-id"]
        raise redis.ResponseError(f"NOGROUP no {self.group} group on {stream}")
