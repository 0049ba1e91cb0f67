"""Where each job read goes, by what is known of its partner (SPEC §5, §6).

The :class:`Dispatcher` keeps, per partner, its configuration (reloaded when the config
version moves), its health (``storage.partner_health``, fresh for ``HEALTH_TTL_S``) and
its average response time, and sorts the jobs the forwarder read:

- an unknown or inactive partner's jobs are logged as failed;
- a paused partner's wait in the retry set for its next probe (one probe goes out, the
  slot of a cluster-wide probe taken with ``take_probe``);
- the rest go to the :class:`~processors.forwarder.slots.Slots`, from which delivery
  threads take them, at most ``partner_max_inflight`` of a partner at once. A partner
  keeps about ``LOCAL_WAIT_S`` worth of its deliveries waiting here (by its response
  time: a fast one up to the whole capacity, a 30 s one only its cap); the surplus waits
  in the retry set for ``OVERFLOW_DELAY_S``, without spending an attempt.

After each round of bookkeeping it updates the partners' health from the attempts
recorded (pausing one that keeps failing), and settles partners the slots held back
after failures in a row: paused, gone, or carrying on.

Jobs finished or deferred here are appended to ``outbox``, the forwarder's list of
attempts to record in its next bookkeeping round.
"""

from __future__ import annotations

import logging
import random
import time
from collections import defaultdict

from core import delivery
from core.config import Settings
from core.delivery import Outcome
from core.partners import Partner
from processors.forwarder.bookkeeping import Finished, Held
from processors.forwarder.slots import Slots
from storage import partner_health
from storage.keys import Keys

log = logging.getLogger(__name__)

#: Weight of the newest answer in a partner's average response time.
LATENCY_EWMA = 0.3
#: Seconds a job of a partner over its in-memory bound waits in the retry set.
OVERFLOW_DELAY_S = 1.0
#: About how long a partner's jobs may wait here for one of its slots.
LOCAL_WAIT_S = 1.0
#: How long a partner's health read stays fresh in this process.
HEALTH_TTL_S = 1.0


class Dispatcher:
    """Sorts jobs to the slots, the retry set or the forwarded log; main thread only."""

    def __init__(
        self,
        client,
        keys: Keys,
        settings: Settings,
        *,
        capacity: int,
        slots: Slots,
        held: dict[tuple[int, str], Held],
        outbox: list[Finished],
    ) -> None:
        self.r = client
        self.keys = keys
        self.settings = settings
        self.capacity = capacity
        self._slots = slots
        self._held = held
        self._outbox = outbox
        self._latency_ms: dict[str, float] = {}
        self._config_version: int | None = None
        self._partners: dict[str, Partner | None] = {}
        self._health: dict[str, tuple[float, partner_health.Health]] = {}

    def config_version(self, version: int) -> None:
        """The config version read with the jobs: partners are read again when it moved."""
        if version != self._config_version:
            self._config_version = version
            self._partners.clear()

    def observe(self, finished: Finished) -> None:
        """Note a finished delivery's response time (its bookkeeping follows in a batch)."""
        pid = finished.held.partner_id
        ms = finished.outcome.response_ms if finished.outcome else None
        if ms is not None:
            before = self._latency_ms.get(pid, ms)
            self._latency_ms[pid] = before + LATENCY_EWMA * (ms - before)

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
    def dispatch(self, entries: list[Held]) -> None:
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
                due = _now_ms() + int(OVERFLOW_DELAY_S * 1000)
                for item in self._slots.remove(pid, keep=keep):
                    self.defer(item, due)

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
        now = _now_ms()
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
            self.defer(item, base + random.randint(0, spread))

    def _finish_now(self, item: Held, partner: Partner | None, outcome: Outcome) -> None:
        self._outbox.append(Finished(item, partner, None, outcome, _now_ms()))

    def defer(self, item: Held, due_ms: int) -> None:
        """Put a job back in the retry set until ``due_ms``, without spending an attempt."""
        self._outbox.append(Finished(item, None, None, None, _now_ms(), due_ms=due_ms))

    # -- after bookkeeping -------------------------------------------------------------
    def recorded(self, answers: list[tuple[Finished, object]]) -> None:
        """Partner health from the attempts just recorded; then the held partners settled."""
        tallies: dict[str, partner_health.Tally] = defaultdict(partner_health.Tally)
        attempts: dict[str, int] = defaultdict(int)
        for finished, result in answers:
            item = finished.held
            if finished.request is not None:
                attempts[item.partner_id] += 1
            if isinstance(result, Exception):
                continue  # left pending: XAUTOCLAIM offers it again after claim_idle_ms
            if finished.outcome is not None and finished.request is not None:
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
            now_ms=_now_ms(),
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


def _now_ms() -> int:
    return int(time.time() * 1000)
