"""Partner health: pause a partner that keeps failing, probe it once a minute, resume on 2xx.

SPEC §5: a partner failing ``pause_after_failures`` deliveries in a row is paused; its jobs
wait in the retry set without spending attempts; one probe per ``probe_interval_s``
across *all* forwarder processes tests it (``SET NX PX`` on ``keys.partner_probe(id)``:
whoever sets it sends the probe); the first 2xx resumes it, and its whole backlog in the
retry sets is due at once (``release_waiting``).

What counts: only failures that say the partner is down (5xx, 408, 429, timeouts,
connection errors) count towards a pause; a 2xx ends the run. Other answers (a 400 for
one postback, a redirect) say the partner is up but refused that one, so they neither
count nor reset.

State, ``keys.partner_health(id)`` (hash)::

    failures       retryable failures in a row
    paused         "1" while paused
    paused_since   ms
    next_probe     ms: when the next probe may go
    last_error     the last failure's error

The health keys have no hash tag (configuration, SPEC §9 plan), so they are updated with
plain pipelined commands, never inside a slot-bound script.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import orjson
import redis

from core.records import Record
from storage.keys import Keys


@dataclass
class Health(Record):
    failures: int = 0
    paused: bool = False
    paused_since: int = 0
    next_probe: int = 0
    last_error: str = ""


@dataclass
class Tally:
    """One partner's attempts in a batch, in the order they finished."""

    succeeded: bool = False  # a 2xx came: the run of failures restarts from it
    failures: int = 0  # retryable failures after the last 2xx (or all, without one)
    last_error: str = ""

    def add(self, result: str, error: str = "") -> None:
        """Count one attempt's result (delivered / retry / dead-lettered / failed)."""
        if result == "delivered":
            self.succeeded, self.failures = True, 0
        elif result in ("retry", "dead-lettered"):
            self.failures += 1
            self.last_error = error


def read_health(client: redis.Redis, keys: Keys, partner_ids: Iterable[str]) -> dict[str, Health]:
    """The health of several partners in one round trip."""
    ids = list(partner_ids)
    pipe = client.pipeline(transaction=False)
    for partner_id in ids:
        pipe.hgetall(keys.partner_health(partner_id))
    return {pid: Health.from_redis(data) for pid, data in zip(ids, pipe.execute(), strict=True)}


def record(
    client: redis.Redis,
    keys: Keys,
    tallies: Mapping[str, Tally],
    *,
    pause_after: int,
    probe_interval_s: float,
    now_ms: int,
) -> dict[str, Health]:
    """Apply a batch's tallies; pause partners that reached ``pause_after`` failures in a row.

    Returns the partners' new health as far as this batch knows it. Two processes may
    pause the same partner at once; both write the same state, so that is harmless.
    """
    pipe = client.pipeline(transaction=False)
    order = []
    for partner_id, tally in tallies.items():
        key = keys.partner_health(partner_id)
        if tally.succeeded:
            pipe.hget(key, "paused")  # before: was it paused until this 2xx?
            pipe.hset(key, mapping={"failures": tally.failures, "paused": "0"})
            pipe.hdel(key, "paused_since", "next_probe")
            order.append((partner_id, None))
        elif tally.failures:
            pipe.hincrby(key, "failures", tally.failures)
            pipe.hset(key, "last_error", tally.last_error[:500])
            pipe.hget(key, "paused")
            order.append((partner_id, "incr"))
    replies = pipe.execute()

    health: dict[str, Health] = {}
    to_pause, resumed = [], []
    i = 0
    for partner_id, kind in order:
        if kind is None:
            failures, paused = tallies[partner_id].failures, False
            if replies[i] == "1":
                resumed.append(partner_id)
            i += 3
        else:
            failures, paused = int(replies[i]), replies[i + 2] == "1"
            i += 3
        health[partner_id] = Health(failures=failures, paused=paused)
        if not paused and failures >= pause_after:
            to_pause.append(partner_id)
    if to_pause:
        interval_ms = int(probe_interval_s * 1000)
        pipe = client.pipeline(transaction=False)
        for partner_id in to_pause:
            key = keys.partner_health(partner_id)
            pipe.hsetnx(key, "paused_since", now_ms)
            pipe.hset(key, mapping={"paused": "1", "next_probe": now_ms + interval_ms})
            # The first probe goes one interval after the pause, not at once.
            pipe.set(keys.partner_probe(partner_id), "pause", nx=True, px=interval_ms)
        pipe.execute()
        for partner_id in to_pause:
            health[partner_id] = Health(
                failures=health[partner_id].failures,
                paused=True,
                paused_since=now_ms,
                next_probe=now_ms + interval_ms,
            )
    for partner_id in resumed:
        release_waiting(client, keys, partner_id, now_ms)
    return health


def release_waiting(client: redis.Redis, keys: Keys, partner_id: str, now_ms: int) -> int:
    """Make every job of ``partner_id`` in the retry sets due now; returns how many.

    Called when a paused partner is back: its backlog (jobs that waited for the probe,
    and jobs whose retry was scheduled while it was down) goes within moments, not at
    the next probe or the next step of the retry schedule; attempts already spent are
    kept. The retry sets are scanned once per resumption. ``ZADD XX`` only re-scores a
    job still in the set, so one that another forwarder moved meanwhile is not re-added.
    """
    needle = orjson.dumps(partner_id).decode()
    released = 0
    for n in keys.all_partitions():
        retry = keys.retry_queue(n)
        due: dict[str, int] = {}
        for member, _ in client.zscan_iter(retry, count=1000):
            if needle in member and _partner_of(member) == partner_id:
                due[member] = now_ms
                if len(due) >= 1000:
                    released += client.zadd(retry, due, xx=True, ch=True)
                    due.clear()
        if due:
            released += client.zadd(retry, due, xx=True, ch=True)
    return released


def _partner_of(job_json: str) -> str | None:
    try:
        job = orjson.loads(job_json)
    except orjson.JSONDecodeError:
        return None
    return job.get("partner_id") if isinstance(job, dict) else None


def take_probe(
    client: redis.Redis, keys: Keys, partner_id: str, *, probe_interval_s: float, now_ms: int
) -> bool:
    """True when this caller sends the paused partner's next probe (one per interval, anywhere)."""
    interval_ms = int(probe_interval_s * 1000)
    if not client.set(keys.partner_probe(partner_id), "probe", nx=True, px=interval_ms):
        return False
    client.hset(keys.partner_health(partner_id), "next_probe", now_ms + interval_ms)
    return True


def resume(client: redis.Redis, keys: Keys, partner_id: str) -> None:
    """Resume a paused partner by hand (its waiting jobs go at their next due time)."""
    pipe = client.pipeline(transaction=False)
    pipe.hset(keys.partner_health(partner_id), mapping={"failures": 0, "paused": "0"})
    pipe.hdel(keys.partner_health(partner_id), "paused_since", "next_probe")
    pipe.delete(keys.partner_probe(partner_id))
    pipe.execute()
    release_waiting(client, keys, partner_id, int(time.time() * 1000))


def paused_partners(client: redis.Redis, keys: Keys) -> list[dict]:
    """Paused partners for ``postback lag`` and the diagnostic endpoint.

    >>> paused_partners(client, keys)
    [{'partner_id': 'p1', 'failures': 10, 'paused_since': 1714..., 'next_probe': 1714...,
      'last_error': 'HTTP 503'}]
    """
    ids = sorted(client.smembers(keys.partners_index()))
    return [
        {
            "partner_id": pid,
            "failures": h.failures,
            "paused_since": h.paused_since,
            "next_probe": h.next_probe,
            "last_error": h.last_error,
        }
        for pid, h in read_health(client, keys, ids).items()
        if h.paused
    ]
