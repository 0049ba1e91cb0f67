"""The forwarder: delivers forward jobs to partners and records every attempt (SPEC §5, §6).

The main thread talks to Redis; ``concurrency`` delivery threads make the HTTP requests.
Each :meth:`Forwarder.process_batch` step

1. records the attempts that finished since the last step: one ``delivery_done`` script
   call per partition records them all (each attempt's ack + retry or dead letter +
   forwarded log + stats, so a crash never loses or doubles a job's bookkeeping), in one
   round trip; then partner health, pausing a partner that keeps failing;
2. claims entries of dead consumers now and then (XAUTOCLAIM, looping to cursor 0-0);
3. in one round trip, moves due retries back to the stream (``retry_due``), reads the
   config version and, only while there is room, reads jobs (its own pending ones first);
4. sorts the jobs: an inactive partner's are logged as failed, a paused partner's wait
   in the retry set for its next probe (one probe goes out), the rest go to the
   :class:`~processors.forwarder.slots.Slots`. Delivery threads take their next job from there
   themselves the moment they finish one, partners taking turns, at most
   ``partner_max_inflight`` of a partner at once, so a slow partner cannot take every
   thread nor stand in front of another's jobs, and a busy fast partner's slots are
   refilled at once from memory. A partner keeps about a second's worth of its
   deliveries waiting here (by its response time: a fast one up to the whole capacity,
   a 30 s one only its cap); only the surplus beyond that waits in the retry set for a
   second, without spending an attempt.

:meth:`Forwarder.run` is the loop around it: :meth:`stop` (SIGTERM/SIGINT) finishes the
deliveries in hand and returns; a lost Redis is retried with backoff.

Delivery is at least once: a process killed between a partner's 2xx and the bookkeeping
leaves the job pending, and another forwarder delivers it again after ``claim_idle_ms``.
Partners can de-duplicate on ``conversion_id`` + ``status``.

The parts: ``processors.forwarder.reader`` (reading and claiming jobs),
``processors.forwarder.slots`` (per-partner concurrency), ``processors.forwarder.send`` (one HTTP
attempt), ``processors.forwarder.bookkeeping`` (what recording an attempt writes) and
``storage.partner_health`` (pause, probe, resume).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import defaultdict

import redis
import requests
from urllib3 import Timeout

from core import delivery
from core.config import Settings
from core.delivery import Outcome
from core.partners import Partner
from processors.consumer import default_consumer
from processors.forwarder.bookkeeping import Finished, Held, Recorder
from processors.forwarder.reader import ForwardReader
from processors.forwarder.send import AddressGuard, attempt, make_session
from processors.forwarder.slots import Results, Slots
from processors.leases import Leases
from storage import partner_health
from storage.keys import FORWARDER_GROUP, Keys
from storage.redis_client import UNAVAILABLE, ensure_groups, worker_connection
from storage.scripts import Scripts, default_scripts

log = logging.getLogger(__name__)

#: Longest the main thread waits for results to gather before a step's bookkeeping.
BATCH_WAIT_S = 0.01
#: Weight of the newest answer in a partner's average response time.
LATENCY_EWMA = 0.3
#: Seconds a job of a partner over its in-memory bound waits in the retry set.
OVERFLOW_DELAY_S = 1.0
#: About how long a partner's jobs may wait here for one of its slots.
LOCAL_WAIT_S = 1.0
#: How long a partner's health read stays fresh in this process.
HEALTH_TTL_S = 1.0


class Forwarder:
    """One forwarder process: a Redis-facing main thread and ``concurrency`` delivery threads."""

    def __init__(
        self,
        settings: Settings,
        client: redis.Redis | None = None,
        *,
        consumer: str | None = None,
        concurrency: int | None = None,
        session: requests.Session | None = None,
        scripts: Scripts | None = None,
    ) -> None:
        self.settings = settings
        self._own_client = client is None
        self.r = client or worker_connection(settings)
        self.keys = Keys(settings.namespace, settings.partitions)
        self.scripts = scripts or default_scripts()
        self.consumer = consumer or default_consumer()
        self.concurrency = concurrency or settings.forward_concurrency
        self.capacity = self.concurrency * 2  # in flight + waiting locally
        self.session = session or make_session(self.concurrency)
        self.guard = AddressGuard()
        self._timeout = Timeout(
            connect=settings.forward_connect_timeout, read=settings.forward_timeout
        )
        self._results = Results()
        self._stop = threading.Event()

        # Every entry this process holds, from read until its bookkeeping is done.
        self._held: dict[tuple[int, str], Held] = {}
        self._slots = Slots(settings.partner_max_inflight, settings.pause_after_failures)
        self._latency_ms: dict[str, float] = {}
        self._to_record: list[Finished] = []

        self._config_version: int | None = None
        self._partners: dict[str, Partner | None] = {}
        self._health: dict[str, tuple[float, partner_health.Health]] = {}

        self._recorder = Recorder(
            self.r,
            self.keys,
            self.scripts,
            schedule=settings.retry_schedule,
            retention_ms=settings.retention_ms,
        )
        self._reader = ForwardReader(
            self.r, self.keys, settings, self.consumer, self.scripts, self._held
        )
        self._threads = [
            threading.Thread(target=self._work, name=f"deliver-{i}", daemon=True)
            for i in range(self.concurrency)
        ]
        for thread in self._threads:
            thread.start()

    # -- the step ----------------------------------------------------------------------
    def process_batch(self, block: bool = True) -> int:
        """One step: record finished attempts, claim, move due retries, read, dispatch.

        Returns how many attempts (and deferrals) were recorded in this step. With no job
        held it blocks on the stream (``settings.block_ms``). With jobs in flight it lets
        their results gather for up to ``BATCH_WAIT_S`` (fewer, larger bookkeeping round
        trips) while blocking on the stream, so that a job written meanwhile is read and
        dispatched at once; a step with no room, or with enough results in, blocks not.
        """
        recorded = self._record()
        entries = self._reader.claim(self.capacity)
        want = max(1, self.concurrency // 2)
        wait_ms = None
        if block and not entries:
            if not (self._held or recorded):
                wait_ms = self.settings.block_ms
            elif self.room() > 0 and self._results.waiting() < want:
                wait_ms = max(1, min(int(BATCH_WAIT_S * 1000), self.settings.block_ms))
        entries += self._poll(block_ms=wait_ms)
        self._dispatch(entries)
        if self._held and wait_ms is None:
            # The delivery threads meanwhile take jobs already waiting in the slots.
            self._wait_for_results(want, BATCH_WAIT_S)
        return recorded

    def room(self) -> int:
        return self.capacity - len(self._held)

    @property
    def busy(self) -> bool:
        """True while jobs are held: in flight, waiting for a slot, or not yet recorded."""
        return bool(self._held)

    # -- reading -----------------------------------------------------------------------
    def _poll(self, block_ms: int | None) -> list[Held]:
        """Move due retries, note the config version, read jobs while there is room."""
        version, entries = self._reader.poll(self.room(), block_ms)
        if version != self._config_version:
            self._config_version = version
            self._partners.clear()
        return entries

    # -- partners ----------------------------------------------------------------------
    def _load_partners(self, partner_ids: set[str]) -> None:
        missing = [pid for pid in partner_ids if pid not in self._partners]
        if not missing:
            return
        pipe = self.r.pipeline(transaction=False)
        for pid in missing:
            pipe.hgetall(self.keys.partner(pid))
        for pid, data in zip(missing, pipe.execute(), strict=True):
            self._partners[pid] = Partner.from_redis(data) if data.get("partner_id") else None

    def _load_health(self, partner_ids: set[str]) -> None:
        now = time.monotonic()
        stale = {
            pid
            for pid in partner_ids
            if now - self._health.get(pid, (-1e9, None))[0] > HEALTH_TTL_S
        }
        if stale:
            for pid, health in partner_health.read_health(self.r, self.keys, stale).items():
                self._health[pid] = (now, health)

    # -- dispatching -------------------------------------------------------------------
    def _dispatch(self, entries: list[Held]) -> None:
        new: dict[str, list[Held]] = defaultdict(list)
        for item in entries:
            if item.job is None:  # kept as a dead letter for a person to look at
                self._finish_now(item, None, Outcome(delivery.RETRY, error="malformed job"))
            else:
                new[item.partner_id].append(item)
        # Jobs already waiting are looked at again: a partner changed, deactivated or
        # paused (by any process) since they came in.
        partner_ids = set(new) | set(self._slots.partners_waiting())
        if not partner_ids:
            return
        self._load_partners(partner_ids)
        self._load_health(partner_ids)
        for pid in partner_ids:
            items = new.get(pid, [])
            partner = self._partners.get(pid)
            if partner is None or not partner.active:
                error = "partner not found" if partner is None else "partner inactive"
                for item in items + self._slots.remove(pid):
                    self._finish_now(item, partner, Outcome(delivery.FAILED, error=error))
                continue
            health = self._health[pid][1]
            if health.paused:
                self._dispatch_paused(partner, health, items + self._slots.remove(pid))
                continue
            self._slots.set_partner(partner)
            for item in items:
                self._slots.put(item, partner)
            # Beyond its in-memory bound a partner's waiting jobs go back to Redis for a
            # second (no attempt spent), newest first; looked at again every step, as
            # a partner that was fast may have turned slow.
            keep = self._held_limit(pid) - self._slots.inflight(pid)
            if self._slots.waiting(pid) > keep:
                due = self._now_ms() + int(OVERFLOW_DELAY_S * 1000)
                for item in self._slots.remove(pid, keep=keep):
                    self._defer(item, due)

    def _held_limit(self, partner_id: str) -> int:
        """How many of a partner's jobs this process may hold, in flight or waiting here.

        Its cap in flight, plus what its slots get through in about ``LOCAL_WAIT_S``, by
        its average response time or, when longer, by how long its oldest delivery in
        flight has been running: a partner answering in 5 ms may fill the whole
        capacity (it drains in a few milliseconds, and refilling its slots never waits
        for Redis); one answering in 30 s keeps its cap waiting and no more, so the jobs
        of the others behind its backlog in the stream are still read.
        """
        cap = self.settings.partner_max_inflight
        latency_s = max(
            self._latency_ms.get(partner_id, 0.0) / 1000, self._slots.oldest_running_s(partner_id)
        )
        if latency_s <= 0:  # nothing known yet: give it the benefit of the doubt
            return self.capacity
        return max(2 * cap, min(self.capacity, cap + int(cap * LOCAL_WAIT_S / latency_s)))

    def _dispatch_paused(
        self, partner: Partner, health: partner_health.Health, items: list[Held]
    ) -> None:
        """One job goes as the probe when it is time (cluster-wide); the rest wait for it."""
        pid = partner.partner_id
        now = self._now_ms()
        probing = any(h.probe for h in self._held.values() if h.partner_id == pid)
        if (
            items
            and not probing
            and partner_health.take_probe(
                self.r,
                self.keys,
                pid,
                probe_interval_s=self.settings.probe_interval_s,
                now_ms=now,
            )
        ):
            probe = items.pop(0)
            probe.probe = True
            health.next_probe = now + int(self.settings.probe_interval_s * 1000)
            log.info("partner %s is paused: probing with one delivery", pid)
            self._slots.put(probe, partner)
            self._slots.release(pid, 0)
        # Spread the waiting jobs a little past the probe so they do not all return at once.
        base = max(health.next_probe, now + int(OVERFLOW_DELAY_S * 1000))
        spread = max(int(self.settings.probe_interval_s * 100), 1)  # 10 % of the interval
        for item in items:
            self._defer(item, base + random.randint(0, spread))

    def _finish_now(self, item: Held, partner: Partner | None, outcome: Outcome) -> None:
        self._to_record.append(Finished(item, partner, None, outcome, self._now_ms()))

    def _defer(self, item: Held, due_ms: int) -> None:
        self._to_record.append(Finished(item, None, None, None, self._now_ms(), due_ms=due_ms))

    # -- delivering (delivery threads) -------------------------------------------------
    def _work(self) -> None:
        while (job := self._slots.take()) is not None:
            item, partner = job
            result = None
            try:
                request, outcome, started = attempt(
                    self.session,
                    self.guard,
                    partner,
                    item.job["payload"],
                    self._timeout,
                )
                if request is not None:  # an HTTP attempt: a health signal
                    result = outcome.result
                self._results.put(Finished(item, partner, request, outcome, int(started * 1000)))
            finally:
                self._slots.done(item, result)

    def _take(self, finished: Finished) -> None:
        """Note a finished delivery's response time; its bookkeeping follows in a batch."""
        pid = finished.held.partner_id
        ms = finished.outcome.response_ms if finished.outcome else None
        if ms is not None:
            before = self._latency_ms.get(pid, ms)
            self._latency_ms[pid] = before + LATENCY_EWMA * (ms - before)
        self._to_record.append(finished)

    def _wait_for_results(self, count: int, timeout: float) -> None:
        """Collect finished deliveries until ``count`` are in hand or ``timeout`` passes."""
        self._take_results()
        self._results.wait(count - len(self._to_record), timeout)
        self._take_results()

    def _take_results(self) -> None:
        for finished in self._results.take_all():
            self._take(finished)

    # -- recording ---------------------------------------------------------------------
    def _record(self) -> int:
        """Bookkeeping for everything finished: a script call per partition, one round trip."""
        self._take_results()
        batch = self._to_record
        if not batch:
            return 0
        answers = self._recorder.record(batch, self._now_ms())
        self._to_record = []
        tallies: dict[str, partner_health.Tally] = defaultdict(partner_health.Tally)
        attempts: dict[str, int] = defaultdict(int)
        for finished, result in answers:
            item = finished.held
            self._held.pop((item.partition, item.entry_id), None)
            if finished.request is not None:
                attempts[item.partner_id] += 1
            if isinstance(result, Exception):
                # Left pending: XAUTOCLAIM offers it again after claim_idle_ms.
                log.error("recording forward job %s failed: %s", item.entry_id, result)
            elif finished.outcome is not None and finished.request is not None:
                tallies[item.partner_id].add(
                    delivery.final_result(
                        finished.outcome, item.attempt, self.settings.retry_schedule
                    ),
                    finished.outcome.error,
                )
        self._update_health(tallies)
        for pid, count in attempts.items():
            self._slots.recorded(pid, count)
        self._settle_held()
        return len(answers)

    def _settle_held(self) -> None:
        """Decide about partners held for failing: paused (jobs wait for the probe) or not."""
        ready = self._slots.held_and_recorded()
        if not ready:
            return
        now = time.monotonic()
        self._load_partners(set(ready))
        for pid, health in partner_health.read_health(self.r, self.keys, ready).items():
            self._health[pid] = (now, health)
            partner = self._partners.get(pid)
            if partner is None or not partner.active:
                error = "partner not found" if partner is None else "partner inactive"
                for item in self._slots.remove(pid):
                    self._finish_now(item, partner, Outcome(delivery.FAILED, error=error))
                self._slots.release(pid, 0)
            elif health.paused:  # only a probe reaches the slots from now on
                self._dispatch_paused(partner, health, self._slots.remove(pid))
                self._slots.release(pid, 0)
            else:  # a 2xx elsewhere reset the count: carry on from Redis's count
                self._slots.release(pid, health.failures)

    def _update_health(self, tallies: dict[str, partner_health.Tally]) -> None:
        # Only write when something changes: failures, or a 2xx after known failures.
        needed = {
            pid: t
            for pid, t in tallies.items()
            if t.failures
            or (
                t.succeeded
                and (
                    pid not in self._health
                    or self._health[pid][1].failures
                    or self._health[pid][1].paused
                )
            )
        }
        if not needed:
            return
        now = time.monotonic()
        for pid, health in partner_health.record(
            self.r,
            self.keys,
            needed,
            pause_after=self.settings.pause_after_failures,
            probe_interval_s=self.settings.probe_interval_s,
            now_ms=self._now_ms(),
        ).items():
            previous = self._health.get(pid, (0, partner_health.Health()))[1]
            if health.paused:
                partner = self._partners.get(pid)
                if partner is not None:  # its waiting jobs wait for the probe instead
                    self._dispatch_paused(partner, health, self._slots.remove(pid))
            if health.paused and not previous.paused:
                log.warning("partner %s paused after %d failures in a row", pid, health.failures)
            elif previous.paused and not health.paused:
                log.info("partner %s resumed", pid)
            self._health[pid] = (now, health)

    # -- the loop ----------------------------------------------------------------------
    def stop(self) -> None:
        """Ask :meth:`run` to finish the deliveries in hand and return (signal-safe)."""
        self._stop.set()

    def run(self) -> None:
        """Process batches until :meth:`stop`; ride out Redis outages with backoff."""
        backoff = 0.5
        groups_ready = False
        log.info("forwarder %s: %d deliveries in flight at most", self.consumer, self.concurrency)
        self._reader.leases = leases = Leases(
            self.r, self.keys, FORWARDER_GROUP, self.consumer, lease_ms=self.settings.lease_ms
        )
        while not self._stop.is_set():
            try:
                if not groups_ready:
                    ensure_groups(self.r, self.keys)
                    groups_ready = True
                self.process_batch()
                backoff = 0.5
            except UNAVAILABLE as exc:
                log.warning("Redis unreachable (%s); retrying in %.1f s", exc, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)
            except redis.ResponseError as exc:
                if "NOGROUP" in str(exc):  # the stream was deleted (or Redis lost its data)
                    groups_ready = False
                    continue
                # BUSY, LOADING, OOM...: Redis answers but cannot serve now.
                log.error("Redis error (%s); retrying in %.1f s", exc, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)
        self.drain()
        try:
            leases.release_all()  # the others take these partitions over at once
        except (*UNAVAILABLE, redis.RedisError) as exc:
            log.warning("leases not released (%s): they lapse by themselves", exc)

    def drain(self, timeout: float | None = None) -> None:
        """Hand back waiting jobs, wait for in-flight deliveries and record them."""
        now = self._now_ms()
        for item in self._slots.clear():  # not started: free for any forwarder at once
            self._defer(item, now)
        deadline = time.monotonic() + (
            timeout
            if timeout is not None
            else self.settings.forward_connect_timeout + self.settings.forward_timeout + 5
        )
        backoff = 0.2
        while self._held and time.monotonic() < deadline:
            try:
                self._record()
            except UNAVAILABLE as exc:
                log.warning("Redis unreachable while stopping (%s)", exc)
                time.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            if self._held:
                self._wait_for_results(1, 0.1)
        if self._held:
            log.warning("%d jobs left pending; another forwarder will claim them", len(self._held))

    def close(self) -> None:
        """Stop the delivery threads (after their current delivery) and the HTTP pool."""
        self._slots.close(len(self._threads))
        self.session.close()
        if self._own_client:  # a client made here is closed here, its sockets with it
            self.r.close()

    # -- helpers -----------------------------------------------------------------------
    @staticmethod
    def _now_ms() -> int:
        return int(time.time() * 1000)
