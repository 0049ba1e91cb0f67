"""The loop both workers run around their step: leases, signals, backoff, reconnects.

A worker is a step plus this loop (STYLE.md). The step (:class:`Work`) reads what is
new on the partitions it is given, applies or delivers it, and records the outcome;
tests call it directly. The loop, written once for the matcher and the forwarder:

- holds the process's fair share of the partitions (``processors.leases``), renewed and
  rebalanced every third of ``lease_ms``; each partition just taken over goes to
  :meth:`Work.take_over` with the live consumers, so a dead holder's pending entries
  are claimed at once rather than after ``claim_idle_ms``;
- gives the step a wait budget that never outlasts a lease renewal
  (``min(block_ms, lease_ms // 4)``), so an idle worker blocked on Redis keeps its leases;
- makes the consumer groups at start, and again when Redis answers NOGROUP (it
  restarted empty, or a stream was deleted);
- rides out a lost Redis with :class:`~processors.backoff.Backoff`, then calls
  :meth:`Work.reconnected` (replies in flight may have been lost with the connection);
- on SIGTERM or SIGINT (handlers installed when it runs on the main thread) or
  :meth:`WorkerLoop.stop`, lets the step finish what it holds (:meth:`Work.finish`),
  gives the leases back so the others take over at once, and returns 0.

    >>> WorkerLoop(work, client, keys, settings).run()   # until SIGTERM; returns 0
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from typing import Protocol

import redis

from core.config import Settings
from processors.backoff import Backoff
from processors.leases import Leases, live_members
from storage.keys import Keys
from storage.redis_client import UNAVAILABLE, ensure_groups


class Stopping:
    """Whether the loop was asked to stop; set from a signal handler or another thread.

    A plain attribute rather than a ``threading.Event``: setting an Event takes its lock,
    which the very thread a signal handler interrupts may be holding (inside
    ``Event.wait``), and the handler would wait for it forever.
    """

    #: How often :meth:`wait` looks at the flag.
    TICK_S = 0.05

    def __init__(self) -> None:
        self._set = False

    def set(self) -> None:
        self._set = True

    def is_set(self) -> bool:
        return self._set

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``, less once set; True when set."""
        deadline = time.monotonic() + seconds
        while not self._set and (left := deadline - time.monotonic()) > 0:
            time.sleep(min(self.TICK_S, left))
        return self._set


class Work(Protocol):
    """A worker's own part of the loop: its step and what it does at the loop's turns."""

    #: The consumer group it reads (``matcher`` or ``forwarder``), and its name in it.
    group: str
    consumer: str

    @property
    def busy(self) -> bool:
        """True while it holds entries whose bookkeeping needs a step, partitions or not."""

    def step(self, partitions: list[int], *, wait_ms: int, stopping: Stopping) -> None:
        """Read, apply or deliver, record; block up to ``wait_ms`` only when idle."""

    def take_over(self, partition: int, live: set[str]) -> None:
        """A partition whose lease was just taken: claim what its dead holders left."""

    def rebalancing(self) -> None:
        """Leases are about to be renewed, and some perhaps given up: settle what is sent."""

    def reconnected(self) -> None:
        """Redis failed or lost the group: what was in flight may not have been applied."""

    def finish(self) -> None:
        """Stopping: finish the work in hand (Redis may be unreachable)."""


class WorkerLoop:
    """Runs a :class:`Work` until :meth:`stop` or a signal, on its share of the partitions."""

    def __init__(self, work: Work, client, keys: Keys, settings: Settings) -> None:
        self.work = work
        self.r = client
        self.keys = keys
        self.settings = settings
        self.stopping = Stopping()
        self.log = logging.getLogger(f"postback.{work.group}")

    def stop(self, *_: object) -> None:
        """Ask :meth:`run` to finish the work in hand and return (signal-safe)."""
        self.stopping.set()

    def run(self) -> int:
        work, settings, stopping = self.work, self.settings, self.stopping
        self._install_signals()
        leases = Leases(self.r, self.keys, work.group, work.consumer, lease_ms=settings.lease_ms)
        self.log.info(
            "%s %s serving its share of %d partition(s)",
            work.group,
            work.consumer,
            self.keys.partitions,
        )
        # Never block past a lease renewal: a lease must not lapse while we wait.
        wait_ms = max(min(settings.block_ms, settings.lease_ms // 4), 1)
        backoff, groups_ready = Backoff(), False
        while not stopping.is_set():
            try:
                if not groups_ready:
                    ensure_groups(self.r, self.keys)
                    groups_ready = True
                if leases.due():
                    self._rebalance(leases)
                partitions = sorted(leases.held)
                if partitions or work.busy:
                    work.step(partitions, wait_ms=wait_ms, stopping=stopping)
                else:  # more processes than partitions: wait for a share
                    stopping.wait(min(leases.refresh_every_s, 1.0))
                if backoff.reset():
                    self.log.info("Redis is back")
            except UNAVAILABLE as exc:
                delay = backoff.next()
                self.log.warning("Redis unavailable (%s); retrying in %.1f s", exc, delay)
                stopping.wait(delay)
                work.reconnected()
            except redis.ResponseError as exc:
                if "NOGROUP" in str(exc):
                    # Redis restarted empty, or the stream was deleted: make the group again.
                    self.log.warning("consumer group missing (%s); creating it", exc)
                    groups_ready = False
                    work.reconnected()
                else:  # BUSY, LOADING, OOM...: Redis answers but cannot serve now.
                    delay = backoff.next()
                    self.log.error("Redis error: %s; retrying in %.1f s", exc, delay)
                    stopping.wait(delay)
        try:
            work.finish()
        except (*UNAVAILABLE, redis.RedisError) as exc:
            self.log.warning("work in hand left pending (%s): it is claimed later", exc)
        try:
            leases.release_all()  # the others take these partitions over at once
        except (*UNAVAILABLE, redis.RedisError) as exc:
            self.log.warning("leases not released (%s): they lapse by themselves", exc)
        return 0

    def _rebalance(self, leases: Leases) -> None:
        self.work.rebalancing()
        gained, _ = leases.refresh()
        if gained:
            live = live_members(self.r, self.keys, self.work.group)
            for n in sorted(gained):
                self.work.take_over(n, live)

    def _install_signals(self) -> None:
        """SIGTERM and SIGINT stop the loop; only the main thread may set handlers."""
        if threading.current_thread() is not threading.main_thread():
            return

        def on_signal(signum: int, _frame) -> None:
            self.log.info("%s: finishing the work in hand", signal.Signals(signum).name)
            self.stop()

        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, on_signal)
