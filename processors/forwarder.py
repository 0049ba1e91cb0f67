"""The forwarder: delivers forward jobs to partners and records every attempt (SPEC §5, §6).

The main thread talks to Redis; ``concurrency`` delivery threads make the HTTP requests.
Each :meth:`Forwarder.process_batch` step

1. records the attempts that finished since the last step: one ``delivery_done`` script
   per attempt (ack + retry or dead letter + forwarded log + stats, so a crash never
   loses or doubles a job's bookkeeping), all pipelined in one round trip; then partner
   health, pausing a partner that keeps failing;
2. claims entries of dead consumers now and then (XAUTOCLAIM, looping to cursor 0-0);
3. in one round trip, moves due retries back to the stream (``retry_due``), reads the
   config version and, only while there is room, reads jobs (its own pending ones first);
4. sorts the jobs: an inactive partner's are logged as failed, a paused partner's wait
   in the retry set for its next probe (one probe goes out), the rest go to
   :class:`Slots`. Delivery threads take their next job from there themselves, partners
   taking turns, at most ``partner_max_inflight`` of a partner at once, so a slow
   partner cannot take every thread nor stand in front of another's jobs. A partner at
   its cap keeps about a second's worth waiting here (by its average response time); the
   surplus waits in the retry set for a second, without spending an attempt.

:meth:`Forwarder.run` is the loop around it: :meth:`stop` (SIGTERM/SIGINT) finishes the
deliveries in hand and returns; a lost Redis is retried with backoff.

Delivery is at least once: a process killed between a partner's 2xx and the bookkeeping
leaves the job pending, and another forwarder delivers it again after ``claim_idle_ms``.
Partners can de-duplicate on ``conversion_id`` + ``status``.
"""

from __future__ import annotations

import hashlib
import http.cookiejar
import logging
import os
import queue
import random
import socket
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass

import orjson
import redis
import requests
from redis.exceptions import NoScriptError
from requests.adapters import HTTPAdapter
from requests.models import PreparedRequest
from requests.structures import CaseInsensitiveDict

from core import delivery
from core.config import Settings
from core.delivery import DeliveryRequest, Outcome
from core.entities import Partner, is_private_host
from processors import partner_health
from storage.keys import FORWARDER_GROUP, Keys
from storage.redis_client import UNAVAILABLE, ensure_groups, worker_connection
from storage.scripts import LUA_DIR, Scripts, default_scripts

log = logging.getLogger(__name__)

#: Longest the main thread waits for results to gather before a step's bookkeeping.
BATCH_WAIT_S = 0.01
#: Weight of the newest answer in a partner's average response time.
LATENCY_EWMA = 0.3
#: Seconds a job of a partner at its cap waits in the retry set before it is tried again.
OVERFLOW_DELAY_S = 1.0
#: How long a partner's health read stays fresh in this process.
HEALTH_TTL_S = 1.0
#: How long a host's "resolves to a public address" check is believed.
ADDRESS_TTL_S = 60.0
#: Most of a partner's answer read (the log keeps its first 500 characters).
RESPONSE_READ_LIMIT = 65536
#: Most due retries moved per partition per step.
RETRY_MOVE_LIMIT = 1000
# The retry move goes in the read pipeline by SHA; ``Scripts`` loads it on NOSCRIPT.
_RETRY_DUE_SHA = hashlib.sha1((LUA_DIR / "retry_due.lua").read_text().encode()).hexdigest()


def default_consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def make_session(concurrency: int) -> requests.Session:
    """A pooled session: keep-alive connections, up to ``concurrency`` per partner host.

    ``trust_env`` is off: no proxy or ~/.netrc lookup per request (it is slow, and netrc
    credentials must never be sent to partners). Cookies are refused: one delivery's
    cookie must not ride along on the next, nor pile up in memory.
    """
    session = requests.Session()
    session.trust_env = False
    session.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
    adapter = HTTPAdapter(pool_connections=256, pool_maxsize=concurrency, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = "postback-relay/0.1"
    return session


def send(session: requests.Session, request: DeliveryRequest, timeout: tuple[float, float]):
    """Send one delivery through the session's pooled adapter; redirects are not followed.

    ``build_request`` already gave an ASCII URL quoted the way requests would, so the
    request is prepared here directly: ``Session.request`` would parse, re-quote and
    IDNA-check it again, a third of the CPU a delivery costs, and then run cookie and
    redirect machinery we do not use. Anything else (a Unicode host name) goes the
    general way.
    """
    if not request.url.isascii():
        return session.request(
            request.method,
            request.url,
            data=request.body,
            headers=request.headers,
            timeout=timeout,
            allow_redirects=False,
        )
    prepared = PreparedRequest()
    prepared.method = request.method
    prepared.url = request.url
    prepared.headers = CaseInsensitiveDict(session.headers)
    prepared.headers.update(request.headers)
    if request.body is not None:
        prepared.body = request.body
        prepared.headers["Content-Length"] = str(len(request.body))
    elif request.method != "GET":
        prepared.headers["Content-Length"] = "0"
    return session.get_adapter(request.url).send(prepared, timeout=timeout)


def read_body(response: requests.Response, limit: int = RESPONSE_READ_LIMIT) -> bytes:
    """The start of a response's body; the connection goes back to the pool unless more is left.

    Reading the raw stream skips requests' chunked generator; a partner answering with
    megabytes costs us a closed connection, not the memory.
    """
    data = response.raw.read(limit, decode_content=True)
    if not response.raw.closed:
        response.close()
    return data


class AddressGuard:
    """Refuses hosts that resolve to a private address (DNS rebinding), cached per host.

    A cheap check at send time, not a guarantee: the name is resolved again when
    connecting. Partners created with ``allow_private`` skip it.
    """

    def __init__(self, ttl_s: float = ADDRESS_TTL_S) -> None:
        self.ttl_s = ttl_s
        self._seen: dict[str, tuple[float, bool]] = {}

    def check(self, host: str) -> None:
        now = time.monotonic()
        cached = self._seen.get(host)
        if cached is None or now - cached[0] > self.ttl_s:
            cached = (now, is_private_host(host))
            self._seen[host] = cached
        if cached[1]:
            raise delivery.PrivateAddressRefused(f"{host} resolves to a private address")


@dataclass
class Held:
    """A forward-stream entry this process holds: waiting for a slot, or in flight."""

    partition: int
    entry_id: str
    raw: str  # the job JSON as read (the dead letter's data)
    job: dict | None  # None when the entry is malformed
    touched: float  # monotonic time of the last read/claim/heartbeat
    probe: bool = False

    @property
    def partner_id(self) -> str:
        return str((self.job or {}).get("partner_id", ""))

    @property
    def attempt(self) -> int:
        try:
            return max(1, int((self.job or {}).get("attempt", 1)))
        except (TypeError, ValueError):
            return 1


@dataclass
class Finished:
    """An attempt to record (or a job to defer, when ``outcome`` is None)."""

    held: Held
    partner: Partner | None
    request: DeliveryRequest | None
    outcome: Outcome | None
    time_ms: int
    due_ms: int = 0  # defer only


class Slots:
    """Jobs waiting for a delivery thread, per partner; at most ``cap`` of a partner in flight.

    Thread-safe. Delivery threads call :meth:`take` for their next job and :meth:`done`
    after it; the main thread puts jobs in and takes back the ones that must wait
    elsewhere (a paused partner's, a partner's surplus). Threads wait on a queue of
    *tokens*, each a go for one job of one partner: a partner gets tokens only while it
    is under its cap, so its queue never stands in front of another's, and partners take
    turns in the order their tokens were issued.

    A partner whose deliveries here failed ``hold_after`` times in a row is held (no
    tokens) until the main thread has recorded all its attempts and either paused it or
    let it go (:meth:`release`): the threads are faster than the bookkeeping, and a
    partner about to be paused must not have its waiting jobs spend attempts meanwhile.
    """

    def __init__(self, cap: int, hold_after: int) -> None:
        self.cap = cap
        self.hold_after = hold_after
        self._lock = threading.Lock()
        self._tokens: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._issued: dict[str, int] = defaultdict(int)  # tokens in the queue
        self._waiting: dict[str, deque[Held]] = defaultdict(deque)
        self._partner: dict[str, Partner] = {}
        self._inflight: dict[str, int] = defaultdict(int)
        self._failures: dict[str, int] = defaultdict(int)  # in a row, as seen here
        self._unrecorded: dict[str, int] = defaultdict(int)  # attempts ended, not recorded

    def _issue(self, pid: str) -> None:
        """Tokens for what may start now (caller holds the lock)."""
        if self._failures[pid] >= self.hold_after:
            return
        room = min(self.cap - self._inflight[pid], len(self._waiting[pid])) - self._issued[pid]
        for _ in range(max(room, 0)):
            self._issued[pid] += 1
            self._tokens.put(pid)

    def put(self, item: Held, partner: Partner) -> None:
        with self._lock:
            self._partner[partner.partner_id] = partner
            self._waiting[item.partner_id].append(item)
            self._issue(item.partner_id)

    def set_partner(self, partner: Partner) -> None:
        """Newer configuration for the jobs still waiting."""
        with self._lock:
            self._partner[partner.partner_id] = partner

    def take(self) -> tuple[Held, Partner] | None:
        """The next job (waits for one), or None once closed."""
        while True:
            pid = self._tokens.get()
            if pid is None:
                return None
            with self._lock:
                self._issued[pid] -= 1
                # A token may be stale: its job was taken back, or the partner is held.
                if self._waiting[pid] and self._failures[pid] < self.hold_after:
                    self._inflight[pid] += 1
                    return self._waiting[pid].popleft(), self._partner[pid]

    def done(self, partner_id: str, result: str | None = None) -> None:
        """A delivery ended; ``result`` is its outcome when an HTTP attempt was made."""
        with self._lock:
            self._inflight[partner_id] -= 1
            if result is not None:
                self._unrecorded[partner_id] += 1
            if result == delivery.DELIVERED:
                self._failures[partner_id] = 0
            elif result == delivery.RETRY:
                self._failures[partner_id] += 1
            self._issue(partner_id)

    def recorded(self, partner_id: str, attempts: int) -> None:
        with self._lock:
            self._unrecorded[partner_id] -= attempts

    def held_and_recorded(self) -> list[str]:
        """Held partners whose every attempt is recorded: ready for a decision."""
        with self._lock:
            return [
                pid
                for pid, failures in self._failures.items()
                if failures >= self.hold_after and self._unrecorded[pid] <= 0
            ]

    def release(self, partner_id: str, failures: int = 0) -> None:
        """Hand out a held partner's jobs again, counting on from ``failures`` in a row."""
        with self._lock:
            self._failures[partner_id] = failures
            self._issue(partner_id)

    def inflight(self, partner_id: str) -> int:
        return self._inflight[partner_id]

    def partners_waiting(self) -> list[str]:
        with self._lock:
            return [pid for pid, waiting in self._waiting.items() if waiting]

    def remove(self, partner_id: str, keep: int = 0) -> list[Held]:
        """Take back a partner's newest waiting jobs beyond ``keep`` (never a probe)."""
        with self._lock:
            waiting = self._waiting[partner_id]
            kept = [item for item in waiting if item.probe]
            others = [item for item in waiting if not item.probe]
            keep = max(0, keep - len(kept))
            waiting.clear()
            waiting.extend(kept + others[:keep])
            return others[keep:]

    def clear(self) -> list[Held]:
        with self._lock:
            items = [item for waiting in self._waiting.values() for item in waiting]
            self._waiting.clear()
            return items

    def close(self, threads: int) -> None:
        """Let ``threads`` waiting delivery threads go (each takes one stop token)."""
        for _ in range(threads):
            self._tokens.put(None)


class Forwarder:
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
        self.r = client or worker_connection(settings)
        self.keys = Keys(settings.namespace, settings.partitions)
        self.scripts = scripts or default_scripts()
        self.consumer = consumer or default_consumer_name()
        self.concurrency = concurrency or settings.forward_concurrency
        self.capacity = self.concurrency * 2  # in flight + waiting locally
        self.session = session or make_session(self.concurrency)
        self.guard = AddressGuard()
        self._results: queue.SimpleQueue[Finished] = queue.SimpleQueue()
        self._stop = threading.Event()

        # Every entry this process holds, from read until its bookkeeping is done.
        self._held: dict[tuple[int, str], Held] = {}
        self._slots = Slots(settings.partner_max_inflight, settings.pause_after_failures)
        self._latency_ms: dict[str, float] = {}
        self._to_record: list[Finished] = []

        self._config_version: int | None = None
        self._partners: dict[str, Partner | None] = {}
        self._health: dict[str, tuple[float, partner_health.Health]] = {}

        self._own_cursor: dict[int, str] = {n: "0" for n in self.keys.all_partitions()}
        self._claim_cursor: dict[int, str] = {n: "0-0" for n in self.keys.all_partitions()}
        self._next_claim = 0.0
        self.claim_every_s = min(max(settings.claim_idle_ms / 4000, 0.1), 15.0)
        self._threads = [
            threading.Thread(target=self._work, name=f"deliver-{i}", daemon=True)
            for i in range(self.concurrency)
        ]
        for thread in self._threads:
            thread.start()

    # -- the step ----------------------------------------------------------------------
    def process_batch(self, block: bool = True) -> int:
        """One step: record finished attempts, claim, move due retries, read, dispatch.

        Returns how many attempts (and deferrals) were recorded in this step. Blocks on
        the stream (``settings.block_ms``) only when this process holds no job at all;
        otherwise ends by waiting up to ``BATCH_WAIT_S`` for deliveries to finish.
        """
        recorded = self._record()
        entries = self._claim()
        idle = not (self._held or recorded or entries)
        entries += self._poll(block_ms=self.settings.block_ms if block and idle else None)
        self._dispatch(entries)
        if self._held:
            # Let results gather: fewer, larger bookkeeping round trips per delivery. The
            # delivery threads meanwhile take jobs already waiting in the slots.
            self._wait_for_results(max(1, self.concurrency // 2), BATCH_WAIT_S)
        return recorded

    def room(self) -> int:
        return self.capacity - len(self._held)

    @property
    def busy(self) -> bool:
        """True while jobs are held: in flight, waiting for a slot, or not yet recorded."""
        return bool(self._held)

    # -- reading -----------------------------------------------------------------------
    def _poll(self, block_ms: int | None) -> list[Held]:
        """One round trip: move due retries, read the config version, read jobs if there is room.

        At start, our own pending entries (left by a previous run under this consumer
        name) are read first, from ID 0, before any new ones.
        """
        room = self.room()
        own = {n: c for n, c in self._own_cursor.items() if c != ">"}
        now = self._now_ms()
        pipe = self.r.pipeline(transaction=False)
        for n in self.keys.all_partitions():
            keys = [self.keys.retry_queue(n), self.keys.forward_stream(n)]
            pipe.evalsha(_RETRY_DUE_SHA, len(keys), *keys, now, RETRY_MOVE_LIMIT)
        pipe.get(self.keys.config_version())
        if room > 0:
            streams = (
                {self.keys.forward_stream(n): c for n, c in own.items()}
                if own
                else {self.keys.forward_stream(n): ">" for n in self.keys.all_partitions()}
            )
            block = None if own else block_ms or None
            pipe.xreadgroup(FORWARDER_GROUP, self.consumer, streams, count=room, block=block)
        replies = pipe.execute(raise_on_error=False)
        for reply in replies:
            if isinstance(reply, NoScriptError):  # Redis restarted: load, move next step
                self.scripts.load_all(self.r)
            elif isinstance(reply, Exception):
                raise reply
        version = int(replies[self.keys.partitions] or 0)
        if version != self._config_version:
            self._config_version = version
            self._partners.clear()
        if room <= 0:
            return []
        got = {self._partition_of(stream): entries for stream, entries in replies[-1] or []}
        held = []
        for n, entries in got.items():
            held.extend(self._hold(n, entries))
        for n in own:  # an empty answer: this partition's own pending entries are done
            if got.get(n):
                self._own_cursor[n] = got[n][-1][0]
            else:
                self._own_cursor[n] = ">"
        return held

    def _partition_of(self, stream: str) -> int:
        for n in self.keys.all_partitions():
            if self.keys.forward_stream(n) == stream:
                return n
        raise ValueError(f"not a forward stream: {stream}")

    def _hold(self, n: int, entries) -> list[Held]:
        now = time.monotonic()
        held, gone = [], []
        for entry_id, fields in entries:
            if (n, entry_id) in self._held:
                continue  # already ours (XAUTOCLAIM hands back our own slow entries)
            if not fields:
                gone.append(entry_id)  # deleted while pending: nothing left to deliver
                continue
            raw = fields.get("job", "")
            item = Held(n, entry_id, raw, delivery.parse_job(raw), now)
            self._held[(n, entry_id)] = item
            held.append(item)
        if gone:
            self.r.xack(self.keys.forward_stream(n), FORWARDER_GROUP, *gone)
        return held

    def _claim(self) -> list[Held]:
        """Entries idle longer than ``claim_idle_ms`` (their consumer died), looping to 0-0.

        Our own held entries come back too, which keeps them from looking idle to others.
        """
        now = time.monotonic()
        if now < self._next_claim:
            return []
        self._heartbeat()
        held = []
        for n in self.keys.all_partitions():
            cursor = self._claim_cursor[n]
            while self.room() > 0:
                cursor, entries, *_ = self.r.xautoclaim(
                    self.keys.forward_stream(n),
                    FORWARDER_GROUP,
                    self.consumer,
                    self.settings.claim_idle_ms,
                    start_id=cursor,
                    count=min(self.room(), 1000),
                )
                held.extend(self._hold(n, entries))
                if cursor == "0-0":
                    break
            self._claim_cursor[n] = cursor
        if all(c == "0-0" for c in self._claim_cursor.values()):
            self._next_claim = now + self.claim_every_s
        if held:
            log.info("claimed %d forward jobs left by other consumers", len(held))
        return held

    def _heartbeat(self) -> None:
        """Reset the idle time of entries held a while, so live consumers do not claim them."""
        stale = time.monotonic() - self.claim_every_s
        by_partition: dict[int, list[str]] = defaultdict(list)
        for item in self._held.values():
            if item.touched < stale:
                by_partition[item.partition].append(item.entry_id)
                item.touched = time.monotonic()
        for n, ids in by_partition.items():
            self.r.xclaim(
                self.keys.forward_stream(n), FORWARDER_GROUP, self.consumer, 0, ids, justid=True
            )

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
            if items:  # beyond its cap plus ~1 s of waiting, a partner's jobs wait a second
                cap = self.settings.partner_max_inflight
                keep = cap + self._local_wait_limit(pid) - self._slots.inflight(pid)
                for item in self._slots.remove(pid, keep=keep):
                    self._defer(item, self._now_ms() + int(OVERFLOW_DELAY_S * 1000))

    def _local_wait_limit(self, partner_id: str) -> int:
        """How many of a partner's jobs may wait here for a slot: ~1 s of its deliveries."""
        cap = self.settings.partner_max_inflight
        most = max(cap, self.capacity // 2)
        latency = self._latency_ms.get(partner_id)
        if latency is None:
            return most
        return max(cap, min(most, int(cap * 1000 / max(latency, 1.0))))

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
                finished = self._deliver(item, partner)
                if finished.request is not None:  # an HTTP attempt: a health signal
                    result = finished.outcome.result
                self._results.put(finished)
            finally:
                self._slots.done(item.partner_id, result)

    def _deliver(self, item: Held, partner: Partner) -> Finished:
        started = time.time()
        request = None
        t0 = time.perf_counter()
        try:
            request = delivery.build_request(
                partner.url, partner.method, item.job["payload"], secret=partner.secret, now=started
            )
            if not partner.allow_private:
                self.guard.check(request.host)
            t0 = time.perf_counter()
            response = send(
                self.session,
                request,
                (self.settings.forward_connect_timeout, self.settings.forward_timeout),
            )
            ms = round((time.perf_counter() - t0) * 1000)
            outcome = delivery.outcome_from_response(
                response.status_code, response.headers, read_body(response), ms, now=started
            )
        except Exception as exc:  # every attempt must come back to be recorded
            ms = round((time.perf_counter() - t0) * 1000)
            outcome = delivery.outcome_from_exception(exc, ms if request else None)
            if not isinstance(exc, delivery.PrivateAddressRefused | requests.RequestException):
                log.exception("delivery to %s could not be made", partner.partner_id)
        return Finished(item, partner, request, outcome, int(started * 1000))

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
        deadline = time.monotonic() + timeout
        while len(self._to_record) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            try:
                self._take(self._results.get(timeout=left))
            except queue.Empty:
                return

    # -- recording ---------------------------------------------------------------------
    def _record(self) -> int:
        """Bookkeeping for everything finished: one pipelined round trip of scripts."""
        while True:
            try:
                self._take(self._results.get_nowait())
            except queue.Empty:
                break
        batch = self._to_record
        if not batch:
            return 0
        calls = [self._bookkeeping(f) for f in batch]
        # On a lost connection this raises and the batch stays for the next try; a call
        # that did run is then answered 0 by its XACK guard, never recorded twice.
        results = self.scripts.run_many(self.r, "delivery_done", calls)
        self._to_record = []
        tallies: dict[str, partner_health.Tally] = defaultdict(partner_health.Tally)
        attempts: dict[str, int] = defaultdict(int)
        for finished, result in zip(batch, results, strict=True):
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
        return len(batch)

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

    def _bookkeeping(self, finished: Finished) -> tuple[list[str], list]:
        item = finished.held
        n = item.partition
        keys = [
            self.keys.forward_stream(n),
            self.keys.retry_queue(n),
            self.keys.dead_letters(n),
            self.keys.forwarded_log(n),
            self.keys.stats(n),
        ]
        now = finished.time_ms
        minid = max(self._now_ms() - self.settings.retention_ms, 0)
        job = item.job or {}
        head = [FORWARDER_GROUP, item.entry_id]
        if finished.outcome is None:  # deferred: no attempt made
            return keys, [
                *head,
                "defer",
                item.raw,
                finished.due_ms,
                now,
                minid,
                item.partner_id,
                "",
                "",
                item.raw,
                "",
                "",
            ]
        outcome = finished.outcome
        result = delivery.final_result(outcome, item.attempt, self.settings.retry_schedule)
        if item.job is None:
            result = delivery.DEAD_LETTERED
        member, due = "", ""
        if result == delivery.RETRY:
            delay = delivery.retry_delay(
                item.attempt, self.settings.retry_schedule, retry_after_s=outcome.retry_after_s
            )
            member = orjson.dumps({**job, "attempt": item.attempt + 1}).decode()
            due = self._now_ms() + int((delay or 0) * 1000)
        entry = delivery.forwarded_entry(
            job,
            finished.partner,
            finished.request,
            outcome,
            attempt=item.attempt,
            result=result,
            time_ms=now,
        )
        latency = "" if outcome.response_ms is None else str(outcome.response_ms)
        buckets = (
            ",".join(map(str, delivery.latency_buckets(outcome.response_ms))) if latency else ""
        )
        error = outcome.error or result
        args = [
            *head,
            result,
            member,
            due,
            now,
            minid,
            item.partner_id,
            error,
            entry["log_id"],
            item.raw,
            latency,
            buckets,
        ]
        for name, value in entry.items():
            args += [name, value]
        return keys, args

    # -- the loop ----------------------------------------------------------------------
    def stop(self) -> None:
        """Ask :meth:`run` to finish the deliveries in hand and return (signal-safe)."""
        self._stop.set()

    def run(self) -> None:
        """Process batches until :meth:`stop`; ride out Redis outages with backoff."""
        backoff = 0.5
        groups_ready = False
        log.info("forwarder %s: %d deliveries in flight at most", self.consumer, self.concurrency)
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

    # -- helpers -----------------------------------------------------------------------
    @staticmethod
    def _now_ms() -> int:
        return int(time.time() * 1000)
