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
4. sorts the jobs (``processors.forwarder.dispatch``): an inactive partner's are logged
   as failed, a paused partner's wait in the retry set for its next probe (one probe
   goes out), the rest go to the :class:`~processors.forwarder.slots.Slots`. Delivery
   threads take their next job from there themselves the moment they finish one,
   partners taking turns, at most ``partner_max_inflight`` of a partner at once, so a
   slow partner cannot take every thread nor stand in front of another's jobs, and a
   busy fast partner's slots are refilled at once from memory. A partner keeps about a
   second's worth of its deliveries waiting here (by its response time); only the
   surplus beyond that waits in the retry set for a second, without spending an attempt.

:meth:`Forwarder.run` is the shared worker loop around it (``processors.loop``: leases,
signals, backoff, reconnects): :meth:`stop` (SIGTERM/SIGINT) finishes the deliveries in
hand and returns.

Delivery is at least once: a process killed between a partner's 2xx and the bookkeeping
leaves the job pending, and another forwarder delivers it again (at once when it takes
the partition over, else after ``claim_idle_ms``). Only the jobs it held can be sent
twice so: ``capacity`` at most, twice its concurrency. Partners can de-duplicate on
``conversion_id`` + ``status``.

The parts: ``processors.forwarder.reader`` (reading and claiming jobs),
``processors.forwarder.dispatch`` (where each job goes, by its partner's state),
``processors.forwarder.slots`` (per-partner concurrency), ``processors.forwarder.send`` (one
HTTP attempt), ``processors.forwarder.bookkeeping`` (what recording an attempt writes) and
``storage.partner_health`` (pause, probe, resume).
"""

from __future__ import annotations

import logging
import threading
import time

import redis
import requests
from urllib3 import Timeout

from core.config import Settings
from processors.backoff import Backoff
from processors.consumer import default_consumer
from processors.forwarder.bookkeeping import Finished, Held, Recorder
from processors.forwarder.dispatch import Dispatcher
from processors.forwarder.reader import ForwardReader
from processors.forwarder.send import AddressGuard, attempt, make_session
from processors.forwarder.slots import Results, Slots
from processors.loop import Stopping, WorkerLoop
from storage.keys import FORWARDER_GROUP, Keys
from storage.redis_client import UNAVAILABLE, worker_connection
from storage.scripts import Scripts, default_scripts

log = logging.getLogger(__name__)

#: Longest the main thread waits for results to gather before a step's bookkeeping.
BATCH_WAIT_S = 0.01


class Forwarder:
    """One forwarder process: a Redis-facing main thread and ``concurrency`` delivery threads."""

    group = FORWARDER_GROUP

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
        # In flight + waiting locally + finished and not yet recorded: never more held.
        self.capacity = self.concurrency * 2
        self.session = session or make_session(self.concurrency)
        self.guard = AddressGuard()
        self._timeout = Timeout(
            connect=settings.forward_connect_timeout, read=settings.forward_timeout
        )
        self._results = Results()

        # Every entry this process holds, from read until its bookkeeping is done.
        self._held: dict[tuple[int, str], Held] = {}
        self._slots = Slots(settings.partner_max_inflight, settings.pause_after_failures)
        # Attempts finished (or jobs deferred) whose bookkeeping the next step does.
        self._to_record: list[Finished] = []
        self._dispatcher = Dispatcher(
            self.r,
            self.keys,
            settings,
            capacity=self.capacity,
            slots=self._slots,
            held=self._held,
            outbox=self._to_record,
        )

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
        self._loop = WorkerLoop(self, self.r, self.keys, settings)

    # -- the step ----------------------------------------------------------------------
    def process_batch(
        self, block: bool = True, *, partitions: list[int] | None = None, wait_ms: int | None = None
    ) -> int:
        """One step: record finished attempts, claim, move due retries, read, dispatch.

        Works ``partitions`` (default: all of them). Returns how many attempts (and
        deferrals) were recorded in this step. With no job held it blocks on the stream
        (``wait_ms``, default ``settings.block_ms``). With jobs in flight it lets their
        results gather for up to ``BATCH_WAIT_S`` (fewer, larger bookkeeping round trips)
        while blocking on the stream, so that a job written meanwhile is read and
        dispatched at once; a step with no room, or with enough results in, blocks not.
        """
        if partitions is None:
            partitions = list(self.keys.all_partitions())
        budget_ms = self.settings.block_ms if wait_ms is None else wait_ms
        recorded = self._record()
        entries = self._reader.claim(partitions, self.capacity)
        want = max(1, self.concurrency // 2)
        block_ms = None
        if block and not entries:
            if not (self._held or recorded):
                block_ms = budget_ms
            elif self.room() > 0 and self._results.waiting() < want:
                block_ms = max(1, min(int(BATCH_WAIT_S * 1000), budget_ms))
        entries += self._poll(partitions, block_ms=block_ms)
        self._dispatcher.dispatch(self._within_capacity(entries))
        if self._held and block_ms is None:
            # The delivery threads meanwhile take jobs already waiting in the slots.
            self._wait_for_results(want, BATCH_WAIT_S)
        return recorded

    def room(self) -> int:
        return self.capacity - len(self._held)

    def _within_capacity(self, entries: list[Held]) -> list[Held]:
        """The entries just read, less the newest beyond ``capacity`` held: those go back
        to the retry set unsent (due at once, no attempt spent).

        What bounds the deliveries sent twice when this process is killed: only the jobs
        it holds (read, not yet recorded) can have reached a partner without their
        bookkeeping, and it holds ``capacity`` at most. The reads ask for the room only
        (``ForwardReader.shares``); a blocking read over every stream of a single Redis
        counts per stream, and may bring up to one a stream beyond a room smaller than
        the number of partitions.
        """
        over = len(self._held) - self.capacity
        if over <= 0:
            return entries
        kept: list[Held] = []
        now = self._now_ms()
        for item in reversed(entries):
            if over > 0 and item.job is not None:  # (a malformed one is never sent)
                self._dispatcher.defer(item, now)
                over -= 1
            else:
                kept.append(item)
        return kept[::-1]

    @property
    def busy(self) -> bool:
        """True while jobs are held: in flight, waiting for a slot, or not yet recorded."""
        return bool(self._held)

    # -- reading -----------------------------------------------------------------------
    def _poll(self, partitions: list[int], block_ms: int | None) -> list[Held]:
        """Move due retries, note the config version, read jobs while there is room."""
        version, entries = self._reader.poll(partitions, self.room(), block_ms)
        self._dispatcher.config_version(version)
        return entries

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
        self._dispatcher.observe(finished)
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
        if not self._to_record:
            return 0
        answers = self._recorder.record(self._to_record, self._now_ms())
        self._to_record.clear()  # (in place: the dispatcher adds to the same list)
        for finished, result in answers:
            item = finished.held
            self._held.pop((item.partition, item.entry_id), None)
            if isinstance(result, Exception):
                # Left pending: XAUTOCLAIM offers it again after claim_idle_ms.
                log.error("recording forward job %s failed: %s", item.entry_id, result)
        self._dispatcher.recorded(answers)
        return len(answers)

    # -- the loop (processors.loop) ---------------------------------------------------
    def run(self) -> int:
        """Process batches on this process's partitions until :meth:`stop` or a signal."""
        log.info("forwarder %s: %d deliveries in flight at most", self.consumer, self.concurrency)
        return self._loop.run()

    def stop(self) -> None:
        """Ask :meth:`run` to finish the deliveries in hand and return (signal-safe)."""
        self._loop.stop()

    def step(self, partitions: list[int], *, wait_ms: int, stopping: Stopping) -> None:
        self.process_batch(partitions=partitions, wait_ms=wait_ms)

    def take_over(self, partition: int, live: set[str]) -> None:
        self._reader.take_over(partition)  # claimed within the room of the next steps

    def rebalancing(self) -> None:
        """Nothing to settle: jobs of a partition given up are still recorded here."""

    def reconnected(self) -> None:
        """Nothing to redo: a job whose bookkeeping was lost stays held and is recorded again."""

    def finish(self) -> None:
        self.drain()

    def drain(self, timeout: float | None = None) -> None:
        """Hand back waiting jobs, wait for in-flight deliveries and record them."""
        now = self._now_ms()
        for item in self._slots.clear():  # not started: free for any forwarder at once
            self._dispatcher.defer(item, now)
        deadline = time.monotonic() + (
            timeout
            if timeout is not None
            else self.settings.forward_connect_timeout + self.settings.forward_timeout + 5
        )
        backoff = Backoff()
        while self._held and time.monotonic() < deadline:
            try:
                self._record()
            except UNAVAILABLE as exc:
                log.warning("Redis unreachable while stopping (%s)", exc)
                time.sleep(min(backoff.next(), max(deadline - time.monotonic(), 0)))
                continue
            if self._held:
                self._wait_for_results(1, 0.1)
        if self._held:
            log.warning("%d jobs left pending; another forwarder will claim them", len(self._held))

    def close(self) -> None:
        """Stop the delivery threads (after their current delivery) and the HTTP pool."""
        self._slots.close(len(self._threads))
        self._reader.close()
        self.session.close()
        if self._own_client:  # a client made here is closed here, its sockets with it
            self.r.close()

    # -- helpers -----------------------------------------------------------------------
    @staticmethod
    def _now_ms() -> int:
        return int(time.time() * 1000)
