"""Reading forward jobs for one consumer of the ``forwarder`` group.

The partitions read are those the caller passes: the ones the process holds leases on
(``processors.loop``), or all of them (tests calling the step). At start, and on taking a
partition over, the consumer's own pending entries (left by a previous run under the same
name) are read first, from ID 0, then new ones (``>``). Entries idle longer than
``claim_idle_ms`` (their consumer died) are claimed with XAUTOCLAIM, looping to cursor
0-0; entries held a while are touched (XCLAIM with JUSTID) so that live consumers do
not claim them.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict

import redis

from core import delivery
from core.config import Settings
from processors.forwarder.bookkeeping import Held
from processors.leases import live_members, orphans
from processors.wakeup import Wakeup
from storage.keys import FORWARDER_GROUP, Keys
from storage.redis_client import is_cluster
from storage.scripts import Scripts

log = logging.getLogger(__name__)

#: Most due retries moved per partition per step.
RETRY_MOVE_LIMIT = 1000


class ForwardReader:
    """Reads, claims and touches forward jobs; ``held`` is the forwarder's map of held jobs.

    Every entry read or claimed goes into ``held`` (keyed by partition and entry id); an
    entry already there is not handed out twice.
    """

    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        settings: Settings,
        consumer: str,
        scripts: Scripts,
        held: dict[tuple[int, str], Held],
    ) -> None:
        self.r = client
        self.keys = keys
        self.settings = settings
        self.consumer = consumer
        self.scripts = scripts
        self.held = held
        self._own_cursor: dict[int, str] = {n: "0" for n in keys.all_partitions()}
        self._claim_cursor: dict[int, str] = {n: "0-0" for n in keys.all_partitions()}
        self._next_claim = 0.0
        # On a cluster a read blocks on one slot: watchers end the idle wait instead.
        self._wakeup = (
            Wakeup(client, FORWARDER_GROUP, keys.forward_stream, block_ms=settings.block_ms)
            if is_cluster(client)
            else None
        )
        self._taking_over: set[int] = set()
        self._turn = 0  # where the next split of the room starts (shares)
        self.claim_every_s = min(max(settings.claim_idle_ms / 4000, 0.1), 15.0)

    def poll(
        self, partitions: list[int], room: int, block_ms: int | None
    ) -> tuple[int, list[Held]]:
        """One round trip: move due retries, read the config version, read jobs if there is room.

        Each partition is read with its own XREADGROUP (one stream, one slot), for its
        share of ``room`` (:meth:`shares`): the reads together never ask for more than
        ``room``. Returns the config version and the jobs read. When nothing came and
        ``block_ms`` is given, waits up to that long for a job on any partition; never
        while own pending entries remain. On a single Redis that wait is one blocking
        XREADGROUP over every stream, whose COUNT is per stream: it may bring a few more
        than ``room`` when ``room`` is under the number of partitions (the forwarder
        hands those back unsent). On a cluster, watchers end it (``processors.wakeup``)
        and the partitions are read again, each for its share, without blocking.
        """
        if not partitions and block_ms:  # none held (jobs still are): pause as a read would
            time.sleep(block_ms / 1000)
        now = int(time.time() * 1000)
        calls = [
            ([self.keys.retry_queue(n), self.keys.forward_stream(n)], [now, RETRY_MOVE_LIMIT])
            for n in partitions
        ]
        extra: list[tuple] = [("GET", self.keys.config_version())]
        shares = self.shares(partitions, room)
        reading = list(shares)
        for n in reading:
            extra.append(self._read_command(n, self._own_cursor.get(n, "0"), shares[n]))
        replies = self.scripts.run_many(self.r, "retry_due", calls, extra=extra)
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        version = int(replies[len(calls)] or 0)
        got = {
            n: _entries(reply) for n, reply in zip(reading, replies[len(calls) + 1 :], strict=True)
        }
        if (
            reading
            and block_ms
            and not any(got.values())
            and all(self._own_cursor.get(n) == ">" for n in partitions)
        ):
            # A job written to any partition ends the wait at once (one waiting already
            # on a partition not read above answers at once too).
            if self._wakeup is None:
                got.update(self._read_all(partitions, max(1, room // len(partitions)), block_ms))
            elif self._wakeup.wait(partitions, block_ms):
                got.update(self._read_each(self.shares(partitions, room)))
        held = []
        for n, entries in got.items():
            held.extend(self._hold(n, entries))
            if self._own_cursor.get(n, "0") != ">":
                # An empty answer: this partition's own pending entries are done.
                self._own_cursor[n] = entries[-1][0] if entries else ">"
        return version, held

    def shares(self, partitions: list[int], room: int) -> dict[int, int]:
        """How many jobs to read from each partition: ``room`` split among them, summing
        to ``room`` at most, so a forwarder never holds more than its capacity.

        Partitions with no share this time are left out; the split starts one partition
        further on each call, so with less room than partitions each gets its turn.

            >>> reader.shares([0, 1, 2], 4)   # then {1: 2, 2: 1, 0: 1}, ...
            {0: 2, 1: 1, 2: 1}
        """
        if room <= 0 or not partitions:
            return {}
        start = self._turn % len(partitions)
        self._turn += 1
        order = partitions[start:] + partitions[:start]
        each, extra = divmod(room, len(order))
        counts = {n: each + (1 if i < extra else 0) for i, n in enumerate(order)}
        return {n: count for n, count in counts.items() if count > 0}

    def _read_all(self, partitions: list[int], count: int, block_ms: int) -> dict[int, list]:
        """One blocking XREADGROUP of new jobs over every partition's stream (single Redis)."""
        by_stream = {self.keys.forward_stream(n): n for n in partitions}
        reply = self.r.xreadgroup(
            FORWARDER_GROUP,
            self.consumer,
            dict.fromkeys(by_stream, ">"),
            count=count,
            block=block_ms,
        )
        if isinstance(reply, dict):  # RESP3
            return {by_stream[stream]: entries[0] for stream, entries in reply.items()}
        return {by_stream[stream]: entries for stream, entries in reply or []}

    def _read_each(self, shares: dict[int, int]) -> dict[int, list]:
        """New jobs of each partition, up to its share, one XREADGROUP each, one round
        trip per node."""
        pipe = self.r.pipeline(transaction=False)
        for n, count in shares.items():
            pipe.execute_command(*self._read_command(n, ">", count))
        return {n: _entries(reply) for n, reply in zip(shares, pipe.execute(), strict=True)}

    def _read_command(self, n: int, cursor: str, count: int) -> tuple:
        head = ("XREADGROUP", "GROUP", FORWARDER_GROUP, self.consumer, "COUNT", count)
        return (*head, "STREAMS", self.keys.forward_stream(n), cursor)

    def _hold(self, n: int, entries) -> list[Held]:
        now = time.monotonic()
        held, gone = [], []
        for entry_id, fields in entries:
            if (n, entry_id) in self.held:
                continue  # already ours (XAUTOCLAIM hands back our own slow entries)
            if not fields:
                gone.append(entry_id)  # deleted while pending: nothing left to deliver
                continue
            raw = fields.get("job", "")
            item = Held(n, entry_id, raw, delivery.parse_job(raw), now)
            self.held[(n, entry_id)] = item
            held.append(item)
        if gone:
            self.r.xack(self.keys.forward_stream(n), FORWARDER_GROUP, *gone)
        return held

    def close(self) -> None:
        if self._wakeup is not None:
            self._wakeup.close()

    def take_over(self, n: int) -> None:
        """A partition whose lease was just taken: it is read from its own pending entries
        (ID 0), and a dead holder's pending entries are claimed from the next step on."""
        self._own_cursor[n] = "0"
        self._taking_over.add(n)

    def claim(self, partitions: list[int], capacity: int) -> list[Held]:
        """Entries idle longer than ``claim_idle_ms`` (their consumer died), looping to 0-0,
        and, on a partition just taken over, every entry of a consumer no longer live.

        Claims while fewer than ``capacity`` jobs are held. Our own held entries come
        back too, which keeps them from looking idle to others.
        """
        held = self._take_over(capacity) if self._taking_over else []
        now = time.monotonic()
        if now < self._next_claim:
            return held
        self._heartbeat()
        for n in partitions:
            cursor = self._claim_cursor.get(n, "0-0")
            while (room := capacity - len(self.held)) > 0:
                cursor, entries, *_ = self.r.xautoclaim(
                    self.keys.forward_stream(n),
                    FORWARDER_GROUP,
                    self.consumer,
                    self.settings.claim_idle_ms,
                    start_id=cursor,
                    count=min(room, 1000),
                )
                held.extend(self._hold(n, entries))
                if cursor == "0-0":
                    break
            self._claim_cursor[n] = cursor
        if all(self._claim_cursor.get(n, "0-0") == "0-0" for n in partitions):
            self._next_claim = now + self.claim_every_s
        if held:
            log.info("claimed %d forward jobs left by other consumers", len(held))
        return held

    def _take_over(self, capacity: int) -> list[Held]:
        """Claim, while there is room, what consumers no longer live left pending on the
        partitions just taken over; the rest at the next step."""
        live = live_members(self.r, self.keys, FORWARDER_GROUP) | {self.consumer}
        held = []
        for n in sorted(self._taking_over):
            stream = self.keys.forward_stream(n)
            while (room := capacity - len(self.held)) > 0:
                ids = orphans(self.r, stream, FORWARDER_GROUP, live, count=min(room, 1000))
                if not ids:
                    self._taking_over.discard(n)
                    break
                claimed = self.r.xclaim(stream, FORWARDER_GROUP, self.consumer, 0, ids)
                held.extend(self._hold(n, claimed))
                if not claimed:  # deleted meanwhile: XCLAIM dropped them from the PEL
                    continue
            if n in self._taking_over:
                break  # no room left: the rest at the next step
        return held

    def _heartbeat(self) -> None:
        """Reset the idle time of entries held a while, so live consumers do not claim them."""
        stale = time.monotonic() - self.claim_every_s
        by_partition: dict[int, list[str]] = defaultdict(list)
        for item in self.held.values():
            if item.touched < stale:
                by_partition[item.partition].append(item.entry_id)
                item.touched = time.monotonic()
        for n, ids in by_partition.items():
            self.r.xclaim(
                self.keys.forward_stream(n), FORWARDER_GROUP, self.consumer, 0, ids, justid=True
            )


def _entries(reply) -> list:
    """The entries of a one-stream XREADGROUP reply (None or [[stream, entries]])."""
    if not reply:
        return []
    if isinstance(reply, dict):  # RESP3
        return next(iter(reply.values()))[0] if reply else []
    return reply[0][1]
