"""Every Redis key the system uses. Nobody else spells a key.

Partitioning plan (Redis Cluster, SPEC §9)
-----------------------------------------
The hot path is split into ``P`` partitions (``POSTBACK_PARTITIONS``, default 1). Every
key of partition ``n`` carries the hash tag ``{pn}``, so each Lua script touches one slot:

* a **source** belongs to partition ``crc32(key) % P``; its record lives in that
  partition, so the edge's ingest script (source check + XADD) is single-slot;
* all postbacks of a source land on that partition's input stream, so a conversion's
  identity (source key, transaction_id | click_id+goal) always resolves in one partition:
  the conversion hash, the partition's points ledger, its forward-jobs stream, received
  log and dead letters share the slot, and the matcher's atomic step is single-slot;
* a user's balance is the sum of their field in every partition's points ledger
  (a sharded counter: one HGET per partition, pipelined);
* the forwarder's retry set, forwarded log and dead letters of partition ``n`` are in
  ``{pn}`` too, so "ack + schedule retry" and "move due retries back" are single-slot.

Configuration (sources index, offers, partners, clicks, partner health) is read and
written one key at a time, outside scripts, so it needs no tag. Changing ``P`` moves
sources to other partitions: drain the streams first (``postback lag``), then re-add.

Every key starts with the namespace (``POSTBACK_NAMESPACE``, default ``pb``); tests use
a fresh namespace each, so they never see each other's keys.
"""

from __future__ import annotations

import zlib

MATCHER_GROUP = "matcher"
FORWARDER_GROUP = "forwarder"


class Keys:
    """Key names for one namespace and partition count.

    >>> k = Keys("pb", partitions=4)
    >>> k.partition_of("abc123xyz"), k.input_stream(2)
    (3, 'pb:{p2}:in')
    """

    def __init__(self, namespace: str = "pb", partitions: int = 1) -> None:
        self.ns = namespace
        self.partitions = partitions

    # -- partitioning -------------------------------------------------------------
    def partition_of(self, source_key: str) -> int:
        return zlib.crc32(source_key.encode()) % self.partitions

    def all_partitions(self) -> range:
        return range(self.partitions)

    def _p(self, n: int) -> str:
        return f"{self.ns}:{{p{n}}}"

    # -- partitioned (hash tag {pn}) ------------------------------------------------
    def source(self, source_key: str) -> str:
        """Hash: name, active, allow (comma-separated CIDRs), secret, created."""
        return f"{self._p(self.partition_of(source_key))}:source:{source_key}"

    def input_stream(self, n: int) -> str:
        """Stream of accepted postbacks; group ``matcher``. Fields: see storage.formats."""
        return f"{self._p(n)}:in"

    def forward_stream(self, n: int) -> str:
        """Stream of delivery jobs; group ``forwarder``."""
        return f"{self._p(n)}:fwd"

    def retry_queue(self, n: int) -> str:
        """Sorted set: delivery job JSON scored by the unix ms it is due."""
        return f"{self._p(n)}:retry"

    def dead_letters(self, n: int) -> str:
        """Stream of postbacks (kind=postback) and deliveries (kind=delivery) given up on."""
        return f"{self._p(n)}:dead"

    def received_log(self, n: int) -> str:
        """Stream: one entry per postback taken in, with the matcher's outcome."""
        return f"{self._p(n)}:log:received"

    def forwarded_log(self, n: int) -> str:
        """Stream: one entry per delivery attempt."""
        return f"{self._p(n)}:log:forwarded"

    def conversion(self, n: int, conversion_id: str) -> str:
        """Hash: a conversion's fields (amounts in cents) and its JSON status history."""
        return f"{self._p(n)}:conv:{conversion_id}"

    def points(self, n: int) -> str:
        """Hash: user_id → points in cents, this partition's share of each balance."""
        return f"{self._p(n)}:points"

    def held(self, n: int) -> str:
        """Hash: user_id → points in cents held (offers with a hold period), this
        partition's share; beside ``points`` so one script moves cents between them."""
        return f"{self._p(n)}:held"

    def holds_due(self, n: int) -> str:
        """Sorted set: conversion_id scored by the unix ms its held points come due."""
        return f"{self._p(n)}:holds-due"

    def stats(self, n: int) -> str:
        """Hash of counters for /metrics (matcher outcomes, deliveries)."""
        return f"{self._p(n)}:stats"

    def conversion_index(self, n: int) -> str:
        """Sorted set: conversion_id scored by creation ms (export, admin listing)."""
        return f"{self._p(n)}:conversions"

    # -- configuration (no tag: read and written one key at a time) -----------------
    def sources_index(self) -> str:
        return f"{self.ns}:sources"

    def offer(self, offer_id: str) -> str:
        return f"{self.ns}:offer:{offer_id}"

    def offers_index(self) -> str:
        return f"{self.ns}:offers"

    def partner(self, partner_id: str) -> str:
        return f"{self.ns}:partner:{partner_id}"

    def partners_index(self) -> str:
        return f"{self.ns}:partners"

    def config_version(self) -> str:
        """Counter bumped on every source/offer/partner change, so workers reload."""
        return f"{self.ns}:config-version"

    def click(self, click_id: str) -> str:
        """Hash: offer_id, partner_id, user_id, ip, created (ms), sub1..sub5."""
        return f"{self.ns}:click:{click_id}"

    def offer_clicks(self, offer_id: str) -> str:
        """Sorted set: click_id scored by created ms, the recent clicks of an offer."""
        return f"{self.ns}:offer-clicks:{offer_id}"

    def partner_health(self, partner_id: str) -> str:
        """Hash: failures in a row, paused flag, next probe time."""
        return f"{self.ns}:partner-health:{partner_id}"

    def partner_probe(self, partner_id: str) -> str:
        """String with a TTL: whoever sets it (NX) sends the next probe."""
        return f"{self.ns}:partner-probe:{partner_id}"

    def throttle(self, kind: str, ip: str) -> str:
        """Counter with a TTL: refused guesses (``kind`` key or admin) from ``ip`` this minute."""
        return f"{self.ns}:throttle:{kind}:{ip}"

    def lag_history(self) -> str:
        """Stream: a sample of each consumer group's lag and pending, for the admin page."""
        return f"{self.ns}:lag-history"

    def lag_sample_lock(self) -> str:
        """String with a TTL: whoever sets it (NX) records the next lag sample."""
        return f"{self.ns}:lag-sample-lock"

    def pattern(self) -> str:
        """Glob matching every key of this namespace (tests clean up with it)."""
        return f"{self.ns}:*"
