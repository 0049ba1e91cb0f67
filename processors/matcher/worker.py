"""The matcher process: a thin loop around :class:`processors.matcher.step.Matcher`.

>>> MatcherWorker(settings).run()  # claims, blocking reads, signals, backoff; returns 0
"""

from __future__ import annotations

import logging
import signal
import time

import redis

from core.config import Settings
from processors.backoff import Backoff
from processors.consumer import default_consumer
from processors.leases import Leases, live_members
from processors.matcher.holds import HOLD_CHECK_S
from processors.matcher.step import GROUP, Matcher
from storage.keys import Keys
from storage.redis_client import UNAVAILABLE, ensure_groups, is_cluster, worker_connection

log = logging.getLogger("postback.matcher")


class MatcherWorker:
    """The matcher process: a thin loop around :class:`Matcher`.

    Works the partitions it holds a lease on (``processors.leases``: a fair share of
    them among the live matchers, rebalanced every third of ``lease_ms``; a partition
    taken over has its pending entries claimed at once). Claims stale entries every
    ``claim_idle_ms / 2``, credits held points that came due every ``HOLD_CHECK_S``
    (``processors.matcher.holds``) on its partitions, reads each of them without blocking and
    blocks (``block_ms``) only when a whole round found nothing; on a clean stop it
    gives its leases back. SIGTERM
    and SIGINT let the batch in hand finish (it is acked by its scripts), then ``run``
    returns 0. A lost Redis is retried with backoff (``processors.backoff``); on
    reconnect the worker re-reads its own pending entries, whose replies may have been
    lost, and ``match.lua`` turns the ones already applied into no-ops.
    """

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
        self.client = client
        self.stopping = False

    def stop(self, *_: object) -> None:
        self.stopping = True

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self.stop)
        log.info(
            "matcher %s serving its share of %d partition(s)", self.consumer, self.keys.partitions
        )
        matcher: Matcher | None = None
        leases: Leases | None = None
        partitions: list[int] = []
        claim_every = self.settings.claim_idle_ms / 2000
        next_claim, turn, groups_ok = 0.0, 0, False
        backoff = Backoff()
        next_holds = 0.0
        while not self.stopping:
            try:
                if matcher is None:
                    matcher = Matcher(
                        self.client or worker_connection(self.settings),
                        self.settings,
                        consumer=self.consumer,
                        overlap=True,
                    )
                    leases = Leases(
                        matcher.r,
                        self.keys,
                        GROUP,
                        self.consumer,
                        lease_ms=self.settings.lease_ms,
                    )
                if not groups_ok:
                    ensure_groups(matcher.r, self.keys)
                    groups_ok = True
                if leases.due():
                    matcher.flush()  # replies of batches of partitions about to be given up
                    gained, _ = leases.refresh()
                    live = live_members(matcher.r, self.keys, GROUP) if gained else set()
                    for n in sorted(gained):
                        matcher.take_over(n, live)
                    partitions = sorted(leases.held)
                if not partitions:  # more processes than partitions: wait for a share
                    self._sleep(min(leases.refresh_every_s, 1.0))
                    continue
                # Never block past a lease renewal: a lease must not lapse while we wait.
                block_ms = max(
                    min(self.settings.block_ms, self.settings.lease_ms // 4) // len(partitions), 1
                )
                if time.monotonic() >= next_claim:
                    for n in partitions:
                        matcher.claim_stale(n)
                    next_claim = time.monotonic() + claim_every
                if time.monotonic() >= next_holds:
                    matcher.release_holds(partitions)
                    next_holds = time.monotonic() + HOLD_CHECK_S
                handled = 0
                for n in partitions:
                    if self.stopping:
                        break
                    handled += matcher.process_batch(n)
                if not handled and not self.stopping:
                    matcher.flush()
                    if is_cluster(matcher.r):  # one slot per read: each partition in turn
                        n = partitions[turn % len(partitions)]
                        matcher.process_batch(n, block_ms=block_ms)
                        turn += 1
                    else:  # a postback written to any partition ends the wait at once
                        wait_ms = min(self.settings.block_ms, self.settings.lease_ms // 4)
                        matcher.process_any(partitions, block_ms=wait_ms)
                if self.stopping:
                    matcher.flush()
                if backoff.reset():
                    log.info("Redis is back")
            except UNAVAILABLE as exc:
                delay = backoff.next()
                log.warning("Redis unavailable (%s); retrying in %.1f s", exc, delay)
                self._sleep(delay)
                if matcher is not None:
                    matcher.restart()
            except redis.ResponseError as exc:
                if "NOGROUP" in str(exc):
                    # Redis restarted empty, or the stream was deleted: make the group again.
                    log.warning("consumer group missing (%s); creating it", exc)
                    groups_ok = False
                    if matcher is not None:
                        matcher.restart()
                else:
                    delay = backoff.next()
                    log.error("Redis error: %s; retrying in %.1f s", exc, delay)
                    self._sleep(delay)
        if leases is not None:
            try:
                leases.release_all()  # the others take these partitions over at once
            except (*UNAVAILABLE, redis.RedisError) as exc:
                log.warning("leases not released (%s): they lapse by themselves", exc)
        log.info("matcher %s stopped: %s", self.consumer, dict(matcher.outcomes) if matcher else {})
        return 0

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.stopping and time.monotonic() < deadline:
            time.sleep(min(0.05, max(deadline - time.monotonic(), 0)))
