"""Every Redis key the system uses. Nobody else spells a key.

Partition plan (Redis Cluster, SPEC §9)
---------------------------------------
The hot path is split into ``P`` partitions (``POSTBACK_PARTITIONS``, default 16). Every
key of partition ``n`` carries the hash tag ``{pn}``, so each Lua script touches one
slot, and the 16 tags spread over every node of a cluster.

* A postback's partition comes from its **conversion identity** (SPEC §4), hashed:
  ``crc32(identity) % P`` (:func:`core.conversions.routing_identity`):

  - ``t|source|transaction_id`` when a transaction_id is given;
  - ``c|source|click_id|goal`` when a click_id is given;
  - fallback postbacks (no click_id, no transaction_id): ``o|source|offer_id|goal``.
    Every fallback event of one offer and goal from one source meets in one partition;
    the conversion they make is keyed by the click they matched. (A conversion reported
    once by click_id and once by offer fallback, without a transaction_id, may land in
    two partitions: senders that mix the two should send a transaction_id.)

  So one busy source spreads over every partition and node, and every event of one
  conversion meets in one partition: its conversion hash, the forward jobs, received
  log and dead letters share that partition's slot, and the matcher's step is one script.
* Each partition keeps **its own copy of every source record** (``source_copy``),
  rewritten on every change of the source, so the edge's ingest script (source check +
  allow-list + XADD) stays one single-slot round trip. The canonical record is in the
  configuration slot.
* A user's balance is the sum of their field in every partition's points ledger (a
  sharded counter: one HGET per partition, pipelined per node); points held (offers
  with a hold period) likewise, in each partition's ``held`` ledger, and the holds
  coming due are a sorted set per partition (``holds_due``), so crediting one is a
  single-slot script too.
* The forwarder's retry set, forwarded log and dead letters of partition ``n`` are in
  ``{pn}`` too, so "ack + schedule retry" and "move due retries back" are single-slot.
* Leases: ``lease(n, group)`` (``SET NX PX``) says which process works partition ``n``
  for a group; ``members(group)`` (sorted set, member → expiry ms) lists the live
  processes, so each takes its fair share (``processors.leases``).

Configuration (sources, offers, partners, their indexes and the config version) shares
one hash tag, ``{<ns>.cfg}``, so a change is one MULTI with its index and version bump.
Clicks, partner health and probes have no tag: each is read and written one key at a
time, never inside a script or a transaction with other keys.

Changing ``P`` moves identities to other partitions: drain the streams first (``postback
lag`` shows zero lag and pending), stop the workers, then restart with the new value
(README, "Moving to partitions").

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
    >>> k.partition_of("t\x1fsrcKEY\x1fTXN-1"), k.input_stream(2)
    (1, 'pb:{p2}:in')
    """

    def __init__(self, namespace: str = "pb", partitions: int = 16) -> None:
        self.ns = namespace
        self.partitions = partitions
        self._cfg = f"{namespace}:{{{namespace}.cfg}}"

    # -- partitioning -------------------------------------------------------------
    def partition_of(self, identity: str) -> int:
        """The partition of a routing identity (``core.conversions.routing_identity``)."""
        return zlib.crc32(identity.encode()) % self.partitions

    def all_partitions(self) -> range:
        return range(self.partitions)

    def _p(self, n: int) -> str:
        return f"{self.ns}:{{p{n}}}"

    # -- partitioned (hash tag {pn}) ------------------------------------------------
    def source_copy(self, n: int, source_key: str) -> str:
        """Partition ``n``'s copy of a source hash (what ``ingest.lua`` checks)."""
        return f"{self._p(n)}:source:{source_key}"

    def lease(self, n: int, group: str) -> str:
        """String with a TTL: the consumer that works partition ``n`` for ``group``."""
        return f"{self._p(n)}:lease:{group}"

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

    # -- configuration (one hash tag, {<ns>.cfg}: MULTI with index and version) --------
    def source(self, source_key: str) -> str:
        """Hash: a source's fields (``core.sources.Source``, stored by ``core.records``)."""
        return f"{self._cfg}:source:{source_key}"

    def sources_index(self) -> str:
        return f"{self._cfg}:sources"

    def offer(self, offer_id: str) -> str:
        return f"{self._cfg}:offer:{offer_id}"

    def offers_index(self) -> str:
        return f"{self._cfg}:offers"

    def partner(self, partner_id: str) -> str:
        return f"{self._cfg}:partner:{partner_id}"

    def partners_index(self) -> str:
        return f"{self._cfg}:partners"

    def config_version(self) -> str:
        """Counter bumped on every source/offer/partner change, so workers reload."""
        return f"{self._cfg}:config-version"

    def members(self, group: str) -> str:
        """Sorted set: live consumers of ``group`` → the ms their registration expires."""
        return f"{self.ns}:members:{group}"

    # -- no tag: one key at a time --------------------------------------------------------

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
