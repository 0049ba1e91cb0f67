"""The matcher: postbacks in, conversions, points and forward jobs out (SPEC §4).

A batch is an XREADGROUP, one pipelined round trip of reads (the clicks, the config
version) and one pipelined round trip of ``match.lua`` calls, each applying a chunk of
``CHUNK`` postbacks, every one atomically, and acking them. Planning (matching,
payouts, transitions, payloads: ``processors.matcher.plan``) happens in Python between
the two; the script only picks the effect that fits the conversion's current status,
and writes. The worker loop (``processors.matcher.worker``) keeps a batch running in
Redis while it plans the next (``overlap``); tests call one step at a time:

    >>> matcher = Matcher(client, settings)
    >>> matcher.process_batch()        # one batch of partition 0; returns entries handled

A chunk refused by the script (an entry failed validation: nothing was written) is sent
again one entry per call, so only the bad entry fails. A poison entry (its plan or its
script fails) stays pending; XAUTOCLAIM hands it out again after ``claim_idle_ms``,
and when it has failed on its ``max_deliveries``-th delivery it goes to the dead
letters (``dead_letter.lua``) instead of blocking the group.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque

import orjson
import redis

from core.config import Settings
from processors.consumer import default_consumer
from processors.leases import orphans
from processors.matcher.holds import release_due
from processors.matcher.plan import Catalog, Planner, click_from, decode_entries
from storage.keys import MATCHER_GROUP, Keys
from storage.repositories import Store
from storage.scripts import Scripts, default_scripts

log = logging.getLogger("postback.matcher")

GROUP = MATCHER_GROUP
#: Longest error text kept in a dead letter and the received log.
MAX_ERROR = 500
#: Entries per ``match.lua`` call: the script's setup, fixed keys, counters, XDEL and
#: reply are paid once per chunk; a chunk of 50 keeps each call well under a millisecond.
CHUNK = 50


class RedisRefused(redis.ConnectionError):
    """Redis refused the batch as a whole (OOM, READONLY...): back off and retry later."""


#: Error replies that say Redis is in no state to write, whatever the entry.
TRANSIENT_ERRORS = ("OOM", "READONLY", "LOADING", "BUSY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN")


def _transient(error: Exception) -> bool:
    return str(error).startswith(TRANSIENT_ERRORS)


def _raise_transient(results: list) -> None:
    """Redis refused writes (OOM, READONLY, LOADING...): not the entries' fault, so
    they stay pending without counting toward the dead letters."""
    for result in results:
        if isinstance(result, Exception) and _transient(result):
            raise RedisRefused(str(result))


class Matcher:
    """Plans and applies batches of postbacks; every method is one step tests can call."""

    def __init__(
        self,
        client: redis.Redis,
        settings: Settings,
        *,
        consumer: str | None = None,
        scripts: Scripts | None = None,
        overlap: bool = False,
    ) -> None:
        self.r = client
        self.overlap = overlap
        self.settings = settings
        self.keys = Keys(settings.namespace, settings.partitions)
        self.store = Store(client, self.keys)
        self.consumer = consumer or default_consumer()
        self.scripts = scripts or default_scripts()
        self.planner = Planner(self.keys, settings.fallback_window_s)
        self.outcomes: Counter[str] = Counter()
        self._pipe = self.scripts.pipe(client, "match")
        self._inflight: deque[tuple] = deque()  # batches sent, replies not read yet
        self.restart()

    def restart(self) -> None:
        """Read own pending entries first (ID 0) on every partition, then new ones.

        Called on start and after a lost connection: replies of the batch in flight may
        be lost, and its entries are simply read (and applied as no-ops) again.
        """
        self._cursor = {n: "0" for n in self.keys.all_partitions()}
        self._inflight.clear()
        self._pipe.reset()

    # -- reading -----------------------------------------------------------------------
    def process_batch(self, partition: int = 0, *, block_ms: int | None = None) -> int:
        """Read one batch of ``partition`` (own pending first, then new) and apply it.

        Returns the number of entries handled. ``block_ms`` blocks for new entries.
        """
        stream = self.keys.input_stream(partition)
        while True:
            cursor = self._cursor[partition]
            reply = self.r.xreadgroup(
                GROUP,
                self.consumer,
                {stream: cursor},
                count=self.settings.matcher_batch,
                block=block_ms if cursor == ">" else None,
            )
            entries = reply[0][1] if reply else []
            if cursor == ">" or entries:
                break
            self._cursor[partition] = ">"  # own history drained: now new entries
        if cursor != ">":
            self._cursor[partition] = entries[-1][0]
        return self.handle(partition, entries)

    def process_any(self, partitions: list[int], *, block_ms: int) -> int:
        """Wait up to ``block_ms`` for new entries on any of ``partitions`` and apply them.

        One XREADGROUP over all their streams, so an entry written to any of them is read
        at once. A single Redis only: the streams lie in different hash slots. Call it
        once their own pending entries are done (``process_batch`` found nothing).
        """
        by_stream = {self.keys.input_stream(n): n for n in partitions}
        reply = self.r.xreadgroup(
            GROUP,
            self.consumer,
            dict.fromkeys(by_stream, ">"),
            count=self.settings.matcher_batch,
            block=block_ms,
        )
        return sum(self.handle(by_stream[stream], entries) for stream, entries in reply or [])

    def take_over(self, partition: int, live: set[str]) -> int:
        """A partition whose lease this matcher just took: the entries pending there for
        consumers no longer ``live`` (a dead holder's) are claimed and applied now; own
        pending entries are read again (ID 0), then new ones."""
        self._cursor[partition] = "0"
        stream, handled = self.keys.input_stream(partition), 0
        while ids := orphans(self.r, stream, GROUP, live | {self.consumer}):
            claimed = self.r.xclaim(stream, GROUP, self.consumer, 0, ids)
            log.info("took over %d entries of %s", len(claimed), stream)
            handled += self.handle(partition, claimed)
            self.flush()
        return handled

    def claim_stale(self, partition: int = 0, *, min_idle_ms: int | None = None) -> int:
        """XAUTOCLAIM entries idle longer than ``claim_idle_ms`` (any consumer's) and apply them."""
        stream = self.keys.input_stream(partition)
        cursor, handled = "0-0", 0
        idle = self.settings.claim_idle_ms if min_idle_ms is None else min_idle_ms
        while True:
            reply = self.r.xautoclaim(
                stream,
                GROUP,
                self.consumer,
                min_idle_time=idle,
                start_id=cursor,
                count=self.settings.matcher_batch,
            )
            cursor, claimed = reply[0], reply[1]
            if claimed:
                log.info("claimed %d stale entries of %s", len(claimed), stream)
                handled += self.handle(partition, claimed)
            if cursor == "0-0":
                return handled

    def release_holds(self, partitions) -> int:
        """Credit the held points of ``partitions`` whose hold has ended (processors.matcher.holds)."""
        return release_due(
            self.r, self.scripts, self.keys, partitions, now_ms=int(time.time() * 1000)
        )

    # -- one batch ---------------------------------------------------------------------
    def handle(self, n: int, entries: list) -> int:
        """Plan and apply ``entries`` (``(id, fields)`` pairs) of partition ``n``."""
        if not entries:
            return 0
        live = [(log_id, fields) for log_id, fields in entries if fields]
        gone = [log_id for log_id, fields in entries if not fields]
        if gone:
            # Deleted while pending: nothing left to apply, only the ack is missing.
            self.r.xack(self.keys.input_stream(n), GROUP, *gone)
        if not live:
            return len(entries)
        decoded, failures = decode_entries(live)
        clicks = self._read_clicks(decoded)
        now = int(time.time() * 1000)
        minid = max(now - self.settings.retention_ms, 0)
        planned, plan = [], self.planner.plan
        for item in decoded:
            try:
                planned.append(plan(n, item, clicks))
            except Exception as exc:  # noqa: BLE001 - any planning failure is a poison entry
                failures[item[0]] = f"plan: {type(exc).__name__}: {exc}"
        if planned:
            chunks = [planned[i : i + CHUNK] for i in range(0, len(planned), CHUNK)]
            call = self.planner.call
            self._pipe.send([call(n, chunk, minid, now) for chunk in chunks])
            self._inflight.append((n, live, chunks, failures, minid, now))
        elif failures:
            self._fail(n, dict(live), failures)
        # Overlap: keep this batch running in Redis while the caller plans the next one.
        self.flush(keep=1 if self.overlap else 0)
        return len(entries)

    def flush(self, keep: int = 0) -> None:
        """Read replies of batches in flight until at most ``keep`` remain; count
        outcomes and handle failures."""
        while len(self._inflight) > keep:
            n, live, chunks, failures, minid, now = self._inflight.popleft()
            results = self._pipe.receive()
            _raise_transient(results)
            for chunk, reply in zip(chunks, results, strict=True):
                outcomes = self._outcomes(n, chunk, reply, minid, now)
                for (log_id, *_), outcome in zip(chunk, outcomes, strict=True):
                    if isinstance(outcome, Exception):
                        failures[log_id] = f"match.lua: {outcome}"
                    else:
                        self.outcomes[outcome] += 1
            if failures:
                self._fail(n, dict(live), failures)

    def _outcomes(self, n: int, chunk: list, reply, minid: int, now: int) -> list:
        """Each entry's outcome, or its error, from the reply to a chunk's call."""
        if isinstance(reply, Exception):
            if len(chunk) == 1:
                return [reply]
            # Nothing of the chunk was written: one entry per call, so only a bad one fails.
            log.warning("chunk refused (%s); sending one entry per call", reply)
            calls = [self.planner.call(n, [entry], minid, now) for entry in chunk]
            replies = self.scripts.run_many(self.r, "match", calls)
            _raise_transient(replies)
            return replies
        outcomes = str(reply).split(" ")
        if len(outcomes) != len(chunk):  # not match.lua's: left pending, read again later
            return [redis.ResponseError(f"reply {reply!r} does not fit the chunk")] * len(chunk)
        return outcomes

    def _read_clicks(self, decoded: list) -> dict:
        """One pipeline: each click by click_id, fallback candidates, the config version.

        Returns {click_id: fields} plus {("offer", offer_id, at): click fields or None}
        for postbacks matched by offer. A second round trip happens only when a batch
        holds fallback postbacks (their click ids are known only after the first).
        """
        keys, window_ms = self.keys, self.settings.fallback_window_s * 1000
        click_ids = {p["click_id"] for _, _, p in decoded if p.get("click_id")}
        fallbacks = {
            (p["offer_id"], int(log_id.partition("-")[0]))
            for log_id, _, p in decoded
            if not p.get("click_id") and p.get("offer_id")
        }
        ordered, wanted = list(click_ids), list(fallbacks)
        commands: list = [("GET", keys.config_version())]
        commands += [("HGETALL", keys.click(click_id)) for click_id in ordered]
        commands += [
            ("ZREVRANGEBYSCORE", keys.offer_clicks(offer_id), at, at - window_ms, "LIMIT", 0, 1)
            for offer_id, at in wanted
        ]
        replies = self._execute(commands)
        version = int(replies[0] or 0)
        planner = self.planner
        if planner.catalog is None or planner.catalog.version != version:
            planner.catalog = Catalog.load(self.store, version)
        clicks: dict = {
            click_id: click_from(values)
            for click_id, values in zip(ordered, replies[1 : 1 + len(ordered)], strict=True)
        }
        if wanted:
            latest = [ids[0] if ids else None for ids in replies[1 + len(ordered) :]]
            found = iter(self._execute([("HGETALL", keys.click(c)) for c in latest if c]))
            for key, click_id in zip(wanted, latest, strict=True):
                clicks[("offer", *key)] = click_from(next(found)) if click_id else None
        return clicks

    def _execute(self, commands: list) -> list:
        """One pipelined round trip (per node) of plain commands; raises the first error."""
        replies = self.scripts.commands(self.r, commands)
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies

    # -- failures ----------------------------------------------------------------------
    def _fail(self, n: int, live: dict, failures: dict[str, str]) -> None:
        """Leave failed entries pending, or dead-letter those out of deliveries."""
        stream = self.keys.input_stream(n)
        pipe = self.r.pipeline(transaction=False)
        for log_id in failures:
            pipe.xpending_range(stream, GROUP, min=log_id, max=log_id, count=1)
        now = int(time.time() * 1000)
        minid = max(now - self.settings.retention_ms, 0)
        calls = []
        for (log_id, error), pending in zip(failures.items(), pipe.execute(), strict=True):
            if not pending:
                continue  # someone else finished it meanwhile
            delivered = pending[0]["times_delivered"]
            error = " ".join(error.split())[:MAX_ERROR]
            if delivered < self.settings.max_deliveries:
                log.warning("%s failed (delivery %d): %s", log_id, delivered, error)
                continue
            log.error("%s dead-lettered after %d deliveries: %s", log_id, delivered, error)
            fields = live.get(log_id, {})
            log_fields = ["log_id", log_id, "time", log_id.partition("-")[0]]
            for name in ("source", "method", "ip", "params"):
                if name in fields:
                    log_fields += (name, str(fields[name]))
            keys = [
                stream,
                self.keys.dead_letters(n),
                self.keys.received_log(n),
                self.keys.stats(n),
            ]
            args = [GROUP, log_id, minid, now, error, orjson.dumps(fields).decode(), *log_fields]
            calls.append((keys, args))
        for result in self.scripts.run_many(self.r, "dead_letter", calls) if calls else []:
            if isinstance(result, Exception):
                log.error("dead_letter.lua failed: %s", result)
            else:
                self.outcomes[result] += 1
