"""Partition leases: which matcher or forwarder works which partition (SPEC §9).

Each worker process registers itself in its group's member set (a sorted set: consumer
name → the ms its registration lapses) and holds a lease per partition it works:
``SET lease <consumer> NX PX lease_ms``, renewed every third of ``lease_ms``. Every
refresh, a process counts the live members and takes its fair share of the partitions,
``P // m`` plus one for the first ``P % m`` of them in name order: it gives back leases
beyond its share and takes free ones up to it. So a process started anywhere with only
``REDIS_URL`` gets partitions within a refresh, and a dead one's partitions (its
registration and leases lapse after ``lease_ms``) are taken over by the others within
``lease_ms`` plus a refresh. Whoever takes a partition over claims at once every entry
pending there for a consumer that is no longer registered (:func:`orphans`), so a dead
holder's entries do not wait for ``claim_idle_ms``; a live one that gave the partition
up keeps its in-flight entries and records them itself.

A holder that stalls past its lease (a long GC pause, a partition of the network) may
still finish the batch in its hands after another took over: the matcher's script turns
such a second application into a no-op (its XACK guard), and a delivery is at least
once anyway.

    >>> leases = Leases(client, keys, "matcher", "host-123", lease_ms=10_000)
    >>> gained, lost = leases.refresh()   # time-gated: cheap to call every loop
    >>> leases.held                       # {0, 3, 7, ...}
    >>> leases.release_all()              # on a clean stop: others take over at once
"""

from __future__ import annotations

import logging
import time

from storage.keys import Keys
from storage.scripts import Scripts, default_scripts

log = logging.getLogger(__name__)


def fair_share(partitions: int, members: list[str], me: str) -> int:
    """How many of ``partitions`` the member ``me`` should hold among ``members``.

    >>> [fair_share(16, ["a", "b", "c"], m) for m in "abc"]
    [6, 5, 5]
    """
    live = sorted(set(members) | {me})
    count, extra = divmod(partitions, len(live))
    return count + (1 if live.index(me) < extra else 0)


class Leases:
    def __init__(
        self,
        client,
        keys: Keys,
        group: str,
        consumer: str,
        *,
        lease_ms: int,
        scripts: Scripts | None = None,
    ) -> None:
        self.r = client
        self.keys = keys
        self.group = group
        self.consumer = consumer
        self.lease_ms = lease_ms
        self.scripts = scripts or default_scripts()
        self.held: set[int] = set()
        self._next_refresh = 0.0

    @property
    def refresh_every_s(self) -> float:
        return self.lease_ms / 3000

    def due(self) -> bool:
        return time.monotonic() >= self._next_refresh

    def refresh(self, *, force: bool = False) -> tuple[set[int], set[int]]:
        """Renew, register, rebalance; returns (partitions gained, partitions lost).

        Does nothing (returns two empty sets) before the next refresh is due, unless
        ``force``. Raises what the client raises when Redis is unreachable; the caller
        backs off, and leases it can no longer renew lapse by themselves.
        """
        if not force and not self.due():
            return set(), set()
        now_ms = int(time.time() * 1000)
        members_key = self.keys.members(self.group)
        pipe = self.r.pipeline(transaction=False)
        pipe.zadd(members_key, {self.consumer: now_ms + self.lease_ms})
        pipe.zremrangebyscore(members_key, "-inf", now_ms)
        pipe.zrange(members_key, 0, -1)
        pipe.pexpire(members_key, self.lease_ms * 10)
        members = pipe.execute()[2]

        lost: set[int] = set()
        if self.held:
            held = sorted(self.held)
            calls = [
                ([self.keys.lease(n, self.group)], [self.consumer, self.lease_ms]) for n in held
            ]
            for n, renewed in zip(
                held, self.scripts.run_many(self.r, "lease_renew", calls), strict=True
            ):
                if isinstance(renewed, Exception):
                    raise renewed
                if not renewed:
                    lost.add(n)
            self.held -= lost

        share = fair_share(self.keys.partitions, members, self.consumer)
        if len(self.held) > share:
            extra = sorted(self.held)[share:]
            self._release(extra)
            lost |= set(extra)
        gained = self._acquire(share - len(self.held), members) if len(self.held) < share else set()
        for n in sorted(gained):
            log.info("%s %s: took partition %d", self.group, self.consumer, n)
        for n in sorted(lost):
            log.info("%s %s: gave up partition %d", self.group, self.consumer, n)
        self._next_refresh = time.monotonic() + self.refresh_every_s
        return gained, lost

    def _acquire(self, wanted: int, members: list[str]) -> set[int]:
        """Take up to ``wanted`` free partitions, starting where this member's share
        would lie, so processes starting together do not all contend for partition 0."""
        live = sorted(set(members) | {self.consumer})
        total = self.keys.partitions
        start = live.index(self.consumer) * total // len(live)
        order = [(start + i) % total for i in range(total)]
        candidates = [n for n in order if n not in self.held]
        gained: set[int] = set()
        while wanted > 0 and candidates:
            batch, candidates = candidates[: wanted * 2], candidates[wanted * 2 :]
            pipe = self.r.pipeline(transaction=False)
            for n in batch:
                pipe.set(self.keys.lease(n, self.group), self.consumer, nx=True, px=self.lease_ms)
            for n, took in zip(batch, pipe.execute(), strict=True):
                if took and wanted > 0:
                    gained.add(n)
                    wanted -= 1
                elif took:  # took one more than wanted in this round: give it back
                    self._release([n])
        self.held |= gained
        return gained

    def _release(self, partitions) -> None:
        partitions = list(partitions)
        if not partitions:
            return
        calls = [([self.keys.lease(n, self.group)], [self.consumer]) for n in partitions]
        self.scripts.run_many(self.r, "lease_release", calls)
        self.held -= set(partitions)

    def release_all(self) -> None:
        """Give every lease back and leave the member set (a clean stop)."""
        self._release(sorted(self.held))
        self.r.zrem(self.keys.members(self.group), self.consumer)


def live_members(client, keys: Keys, group: str) -> set[str]:
    """The consumers of ``group`` whose registration has not lapsed."""
    now_ms = int(time.time() * 1000)
    return set(client.zrangebyscore(keys.members(group), now_ms, "+inf"))


def orphans(client, stream: str, group: str, live: set[str], *, count: int = 1000) -> list[str]:
    """Up to ``count`` IDs pending in ``stream`` for consumers that are not ``live``.

    What a process taking a partition over claims at once: the entries of a holder that
    died. A live previous holder (the partition moved to even out the shares) keeps its
    in-flight entries and records them itself, so a delivery is not sent twice.
    """
    summary = client.xpending(stream, group)
    ids: list[str] = []
    for consumer in summary.get("consumers") or []:
        name = consumer["name"]
        if name in live or len(ids) >= count:
            continue
        for entry in client.xpending_range(
            stream, group, min="-", max="+", count=count - len(ids), consumername=name
        ):
            ids.append(entry["message_id"])
    return ids


def holders(client, keys: Keys, group: str) -> dict[int, str | None]:
    """Partition → the consumer holding its lease for ``group`` (None: nobody)."""
    pipe = client.pipeline(transaction=False)
    for n in keys.all_partitions():
        pipe.get(keys.lease(n, group))
    return dict(zip(keys.all_partitions(), pipe.execute(), strict=True))
