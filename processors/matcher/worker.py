"""The matcher process: :class:`processors.matcher.step.Matcher` driven by the shared
worker loop (``processors.loop``: leases, signals, backoff, reconnects).

>>> MatcherWorker(settings, client=client).run()  # until SIGTERM; returns 0
"""

from __future__ import annotations

import logging
import time

import redis

from core.config import Settings
from processors.consumer import default_consumer
from processors.loop import Stopping, WorkerLoop
from processors.matcher.holds import HOLD_CHECK_S
from processors.matcher.step import GROUP, Matcher
from processors.wakeup import Wakeup
from storage.keys import Keys
from storage.redis_client import is_cluster, worker_connection

log = logging.getLogger("postback.matcher")


class MatcherWorker:
    """The matcher's step as the loop drives it, on the partitions it holds leases on.

    Each step claims stale entries every ``claim_idle_ms / 2``, credits held points that
    came due every ``HOLD_CHECK_S`` (``processors.matcher.holds``), reads each partition
    without blocking, and waits (the loop's wait budget) only when a whole round found
    nothing: on a single Redis in one XREADGROUP over all its partitions, on a cluster
    until a watcher sees an entry on any of them (``processors.wakeup``), then reads
    them all again. A batch is kept running in Redis while the next is planned
    (``overlap``); its replies are read before leases move and when stopping, so SIGTERM
    and SIGINT let the batch in hand finish (it is acked by its scripts). On reconnect
    the worker re-reads its own pending entries, whose replies may have been lost, and
    ``match.lua`` turns the ones already applied into no-ops.
    """

    group = GROUP
    #: Nothing of the matcher's waits for a step beyond the batch replies it flushes.
    busy = False

    def __init__(
        self,
        settings: Settings,
        *,
        consumer: str | None = None,
        client: redis.Redis | None = None,
    ) -> None:
        self.settings = settings
        self.consumer = consumer or default_consumer()
        self.keys = Keys(settings.namespace, settings.partitions)
        self.client = client or worker_connection(settings)
        self.matcher = Matcher(self.client, settings, consumer=self.consumer, overlap=True)
        self.loop = WorkerLoop(self, self.client, self.keys, settings)
        self._claim_every_s = settings.claim_idle_ms / 2000
        self._next_claim = self._next_holds = 0.0
        # On a cluster a read blocks on one slot: watchers end the idle wait instead.
        self._wakeup = (
            Wakeup(self.client, GROUP, self.keys.input_stream, block_ms=settings.block_ms)
            if is_cluster(self.client)
            else None
        )

    def run(self) -> int:
        code = self.loop.run()
        log.info("matcher %s stopped: %s", self.consumer, dict(self.matcher.outcomes))
        return code

    def stop(self, *_: object) -> None:
        self.loop.stop()

    # -- the step ----------------------------------------------------------------------
    def step(self, partitions: list[int], *, wait_ms: int, stopping: Stopping) -> None:
        matcher = self.matcher
        if not partitions:
            return
        if time.monotonic() >= self._next_claim:
            for n in partitions:
                matcher.claim_stale(n)
            self._next_claim = time.monotonic() + self._claim_every_s
        if time.monotonic() >= self._next_holds:
            matcher.release_holds(partitions)
            self._next_holds = time.monotonic() + HOLD_CHECK_S
        handled = 0
        for n in partitions:
            if stopping.is_set():
                return
            handled += matcher.process_batch(n)
        if handled or stopping.is_set():
            return
        matcher.flush()
        # A postback written to any partition ends the wait at once.
        if self._wakeup is None:
            matcher.process_any(partitions, block_ms=wait_ms)
        elif self._wakeup.wait(partitions, wait_ms):
            for n in partitions:
                if stopping.is_set():
                    return
                matcher.process_batch(n)

    # -- the loop's turns --------------------------------------------------------------
    def take_over(self, partition: int, live: set[str]) -> None:
        self.matcher.take_over(partition, live)

    def rebalancing(self) -> None:
        self.matcher.flush()  # replies of batches of partitions about to be given up

    def reconnected(self) -> None:
        self.matcher.restart()

    def finish(self) -> None:
        if self._wakeup is not None:
            self._wakeup.close()
        self.matcher.flush()
