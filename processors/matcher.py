"""The matcher: postbacks in, conversions, points and forward jobs out (SPEC §4).

A batch is an XREADGROUP, one pipelined round trip of reads (the clicks, the config
version) and one pipelined round trip of ``match.lua`` calls, each applying one postback
atomically and acking it. Planning (matching, payouts, transitions, payloads) happens in
Python between the two; the script only picks the effect that fits the conversion's
current status, and writes. The worker keeps a batch running in Redis while it plans
the next (``overlap``); tests call one step at a time:

    >>> matcher = Matcher(client, settings)
    >>> matcher.process_batch()        # one batch of partition 0; returns entries handled
    >>> MatcherWorker(settings).run()  # the loop: claims, blocking reads, signals, backoff

A poison entry (its plan or its script fails) stays pending; XAUTOCLAIM hands it out
again after ``claim_idle_ms``, and when it has failed on its ``max_deliveries``-th
delivery it goes to the dead letters (``dead_letter.lua``) instead of blocking the group.
"""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import socket
import time
from collections import Counter, deque
from dataclasses import dataclass

import orjson
import redis
from redis.exceptions import NoScriptError

from core.config import Settings
from core.conversions import conversion_id as make_conversion_id
from core.entities import SUB_IDS
from core.money import format_cents
from core.payouts import PayoutRule, upstream_cents
from core.transitions import CONVERSION_STATUSES, FLAG_BITS, SPECS, effects, refuse_new
from processors.payload import PartnerDirectory, build_payload, forward_jobs
from storage.keys import MATCHER_GROUP, Keys
from storage.redis_client import UNAVAILABLE, ensure_groups, worker_connection
from storage.repositories import Store
from storage.scripts import LUA_DIR, Scripts, default_scripts

try:
    from hiredis import pack_command as _pack
except ImportError:  # pragma: no cover - hiredis is a dependency (redis[hiredis])
    _pack = None

log = logging.getLogger("postback.matcher")

GROUP = MATCHER_GROUP
DAY_MS = 86_400_000
#: Effect flags of plain steps (see core.transitions.Effect.spec).
NO_ACTION = chr(64)
FORWARD_ONLY = chr(64 + FLAG_BITS["forward"])
#: What matching reads of a click (``Click.to_redis``).
CLICK_FIELDS = ("click_id", "offer_id", "partner_id", "user_id", "created", *SUB_IDS)
#: Longest error text kept in a dead letter and the received log.
MAX_ERROR = 500


class PlanError(ValueError):
    """An input entry that cannot be planned (a poison entry)."""


class RedisRefused(redis.ConnectionError):
    """Redis refused the batch as a whole (OOM, READONLY...): back off and retry later."""


#: Error replies that say Redis is in no state to write, whatever the entry.
TRANSIENT_ERRORS = ("OOM", "READONLY", "LOADING", "BUSY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN")


def _transient(error: Exception) -> bool:
    return str(error).startswith(TRANSIENT_ERRORS)


def default_consumer() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True)
class OfferTerms:
    """What matching needs of an offer, precomputed once per config version."""

    offer_id: str
    active: bool
    currency: str
    window_days: int
    rule: PayoutRule

    @property
    def window_ms(self) -> int:
        return self.window_days * DAY_MS


@dataclass(frozen=True)
class Catalog:
    """Offers and partners as of one config version; reloaded when the version moves."""

    version: int
    offers: dict[str, OfferTerms]
    partners: PartnerDirectory

    @classmethod
    def load(cls, store: Store, version: int) -> Catalog:
        offers = {
            o.offer_id: OfferTerms(
                o.offer_id, o.active, o.currency, o.window_days, PayoutRule.for_offer(o)
            )
            for o in store.list_offers()
        }
        return cls(version, offers, PartnerDirectory.build(store.list_partners()))


class RawPipe:
    """Batches of commands written in one go, their replies read later, in order.

    The hot path sends about 50 arguments per postback; redis-py's per-argument checks
    cost more than the planning itself, so commands are packed by hiredis directly.
    Writing and reading apart lets Redis run one batch while Python plans the next and
    reads the previous one's replies (Python on one core, Redis on the other). Batches
    in flight share one pooled connection, so their replies come back in order.
    """

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._conn = None
        self._counts: deque[int] = deque()

    def send(self, commands: list) -> None:
        """Write ``commands`` (argument tuples) without waiting for their replies."""
        if self._conn is None:
            self._conn = self.client.connection_pool.get_connection()
        conn = self._conn
        try:
            if _pack is None:
                conn.send_packed_command(conn.pack_commands(commands))
            else:
                conn.send_packed_command([b"".join(map(_pack, commands))])
        except BaseException:
            self.reset()
            raise
        self._counts.append(len(commands))

    def receive(self) -> list:
        """The oldest batch's replies (each a value or ResponseError); [] when none is out."""
        if not self._counts:
            return []
        conn, count = self._conn, self._counts.popleft()
        replies: list = []
        try:
            for _ in range(count):
                try:
                    replies.append(conn.read_response())
                except redis.ResponseError as exc:
                    replies.append(exc)
        except BaseException:
            self.reset()  # replies left unread: the socket cannot be reused
            raise
        if not self._counts:
            self._release()
        return replies

    def execute(self, commands: list) -> list:
        """Send and wait (nothing else may be in flight); raise the first error reply."""
        self.send(commands)
        replies = self.receive()
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies

    def reset(self) -> None:
        """Forget every batch in flight and drop the connection (its replies are lost)."""
        self._counts.clear()
        if self._conn is not None:
            self._conn.disconnect()
            self._release()

    def _release(self) -> None:
        conn, self._conn = self._conn, None
        self.client.connection_pool.release(conn)


class ScriptPipe(RawPipe):
    """EVALSHA calls of one script through a :class:`RawPipe`.

    A call that meets NOSCRIPT (Redis restarted) ran nothing and goes again through
    ``Scripts.run_many``, which loads the script first.
    """

    def __init__(self, client: redis.Redis, scripts: Scripts, name: str) -> None:
        super().__init__(client)
        self.scripts, self.name = scripts, name
        self.sha = hashlib.sha1((LUA_DIR / f"{name}.lua").read_text().encode()).hexdigest()
        self._calls: deque[list] = deque()

    def send(self, calls: list) -> None:  # type: ignore[override]
        """Write ``calls``, (keys, args) pairs."""
        sha = self.sha
        super().send([("EVALSHA", sha, len(k), *k, *a) for k, a in calls])
        self._calls.append(calls)

    def receive(self) -> list:
        if not self._calls:
            return []
        calls = self._calls.popleft()
        replies = super().receive()
        missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if missing:
            again = self.scripts.run_many(self.client, self.name, [calls[i] for i in missing])
            for i, reply in zip(missing, again, strict=True):
                replies[i] = reply
        return replies

    def reset(self) -> None:
        self._calls.clear()
        super().reset()


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
        self.catalog: Catalog | None = None
        self.outcomes: Counter[str] = Counter()
        self._pipe = ScriptPipe(client, self.scripts, "match")
        self._reads = RawPipe(client)
        self._inflight: deque[tuple] = deque()  # batches sent, replies not read yet
        self._fixed_keys = {
            n: (
                self.keys.input_stream(n),
                self.keys.points(n),
                self.keys.forward_stream(n),
                self.keys.received_log(n),
                self.keys.stats(n),
                self.keys.conversion_index(n),
            )
            for n in self.keys.all_partitions()
        }
        # KEYS of a call per partition; [1] is the conversion (plain steps touch none,
        # but the script's KEYS keep one shape).
        self._keys = {
            n: [keys[0], self.keys.conversion(n, "-"), *keys[1:]]
            for n, keys in self._fixed_keys.items()
        }
        self._conversion_prefix = {
            n: self.keys.conversion(n, "") for n in self.keys.all_partitions()
        }
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

    def claim_stale(self, partition: int = 0) -> int:
        """XAUTOCLAIM entries idle longer than ``claim_idle_ms`` (any consumer's) and apply them."""
        stream = self.keys.input_stream(partition)
        cursor, handled = "0-0", 0
        while True:
            reply = self.r.xautoclaim(
                stream,
                GROUP,
                self.consumer,
                min_idle_time=self.settings.claim_idle_ms,
                start_id=cursor,
                count=self.settings.matcher_batch,
            )
            cursor, claimed = reply[0], reply[1]
            if claimed:
                log.info("claimed %d stale entries of %s", len(claimed), stream)
                handled += self.handle(partition, claimed)
            if cursor == "0-0":
                return handled

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
        decoded, failures = self._decode(live)
        clicks = self._read_clicks(decoded)
        now = int(time.time() * 1000)
        minid = max(now - self.settings.retention_ms, 0)
        calls, planned = [], []
        for item in decoded:
            try:
                calls.append(self._plan(n, item, clicks, now, minid))
                planned.append(item)
            except Exception as exc:  # noqa: BLE001 - any planning failure is a poison entry
                failures[item[0]] = f"plan: {type(exc).__name__}: {exc}"
        if calls:
            self._pipe.send(calls)
            self._inflight.append((n, live, planned, failures))
        elif failures:
            self._fail(n, dict(live), failures)
        # Overlap: keep this batch running in Redis while the caller plans the next one.
        self.flush(keep=1 if self.overlap else 0)
        return len(entries)

    def flush(self, keep: int = 0) -> None:
        """Read replies of batches in flight until at most ``keep`` remain; count
        outcomes and handle failures."""
        while len(self._inflight) > keep:
            n, live, planned, failures = self._inflight.popleft()
            results = self._pipe.receive()
            for item, result in zip(planned, results, strict=True):
                if isinstance(result, Exception):
                    failures[item[0]] = f"match.lua: {result}"
                else:
                    self.outcomes[result] += 1
            transient = [r for r in results if isinstance(r, Exception) and _transient(r)]
            if transient:
                # Redis refused writes (OOM, READONLY, LOADING...): not the entries'
                # fault, so they stay pending without counting toward the dead letters.
                raise RedisRefused(str(transient[0]))
            if failures:
                self._fail(n, dict(live), failures)

    def _decode(self, live: list) -> tuple[list, dict[str, str]]:
        """(log_id, fields, params) for each entry whose params decode; failures by id."""
        decoded, failures = [], {}
        for log_id, fields in live:
            try:
                params = orjson.loads(fields["params"])
                if not isinstance(params, dict):
                    raise PlanError("params: not a JSON object")
                if not fields.get("source"):
                    raise PlanError("source: missing")
                decoded.append((log_id, fields, params))
            except (KeyError, orjson.JSONDecodeError, PlanError) as exc:
                failures[log_id] = f"decode: {type(exc).__name__}: {exc}"
        return decoded, failures

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
        commands += [("HMGET", keys.click(click_id), *CLICK_FIELDS) for click_id in ordered]
        commands += [
            ("ZREVRANGEBYSCORE", keys.offer_clicks(offer_id), at, at - window_ms, "LIMIT", 0, 1)
            for offer_id, at in wanted
        ]
        replies = self._reads.execute(commands)
        version = int(replies[0] or 0)
        if self.catalog is None or self.catalog.version != version:
            self.catalog = Catalog.load(self.store, version)
        clicks: dict = {
            click_id: _click(values)
            for click_id, values in zip(ordered, replies[1 : 1 + len(ordered)], strict=True)
        }
        if wanted:
            latest = [ids[0] if ids else None for ids in replies[1 + len(ordered) :]]
            found = iter(
                self._reads.execute([("HMGET", keys.click(c), *CLICK_FIELDS) for c in latest if c])
            )
            for key, click_id in zip(wanted, latest, strict=True):
                clicks[("offer", *key)] = _click(next(found)) if click_id else None
        return clicks

    def _plan(self, n: int, item: tuple, clicks: dict, now: int, minid: int) -> tuple:
        """The ``match.lua`` call (keys, args) for one decoded entry."""
        log_id, fields, params = item
        get = params.get
        source = fields["source"]
        at = int(log_id[: log_id.index("-")])
        status = get("status") or "approved"
        if status not in CONVERSION_STATUSES and status != "test":
            raise PlanError(f"status: {status!r} is not a postback status")
        payout_text = get("payout")
        payout_given = payout_text is not None and payout_text != ""
        upstream = upstream_cents(str(payout_text)) if payout_given else 0
        custom = get("custom") or {}
        if not isinstance(custom, dict):
            raise PlanError("custom: not a JSON object")

        sent_click_id = get("click_id") or ""
        if sent_click_id:
            click, matched_by = clicks.get(sent_click_id), "click_id"
        else:
            click, matched_by = clicks.get(("offer", get("offer_id"), at)), "offer_fallback"
        offer = self.catalog.offers.get(click["offer_id"]) if click else None
        keys = self._keys[n].copy()
        log_only = (
            "method", fields.get("method", ""), "ip", fields.get("ip", ""),
            "params", fields["params"],
        )  # fmt: skip

        if status == "test":
            log_fields = ["source", source, *log_only]
            return keys, self._plan_test(log_id, at, now, minid, params, click, offer, log_fields)
        if click is None or offer is None:
            log_fields = ["source", source, *log_only]
            if click is not None:
                reason = (
                    f"offer {click['offer_id']} of click {click.get('click_id')} no longer exists"
                )
                log_fields += ("click_id", click.get("click_id", ""), "offer_id", click["offer_id"])
            else:
                if sent_click_id:
                    reason = f"unknown click_id {sent_click_id}"
                else:
                    reason = (
                        f"no click on offer {get('offer_id')} in the "
                        f"{self.settings.fallback_window_s} s before the postback"
                    )
                for name in ("click_id", "offer_id"):
                    if get(name):
                        log_fields += (name, params[name])
            spec = f"{NO_ACTION}unmatched||{reason}"
            return keys, _plain_args(log_id, minid, at, status, spec, log_fields)

        click_id = click.get("click_id") or sent_click_id
        user_id, partner_id = click.get("user_id", ""), click.get("partner_id", "")
        transaction_id = get("transaction_id") or ""
        conversion_id = make_conversion_id(
            n, source, transaction_id=transaction_id, click_id=click_id, goal=get("goal") or ""
        )
        keys[1] = self._conversion_prefix[n] + conversion_id
        partner_cents = offer.rule.partner_cents(upstream)
        currency = get("currency") or offer.currency
        age_ms = at - int(click.get("created") or 0)
        if age_ms <= offer.window_ms and offer.active:
            specs = SPECS[status]
        else:
            specs = self._specs(status, click_id, offer, age_ms)

        payload = build_payload(
            click_id=click_id, status=status, payout=format_cents(partner_cents),
            currency=currency, offer_id=offer.offer_id, transaction_id=transaction_id,
            conversion_id=conversion_id, user_id=user_id, subs=click, timestamp=at // 1000,
            extras=params, custom=custom, source_key=source,
        )  # fmt: skip
        jobs = forward_jobs(
            self.catalog.partners.recipients(partner_id),
            orjson.dumps(payload),
            log_id=log_id,
            conversion_id=conversion_id,
            created=now,
        )
        # Fields of both the new conversion and the log entry are sent once.
        shared = [
            "source", source, "click_id", click_id, "offer_id", offer.offer_id,
            "partner_id", partner_id, "matched_by", matched_by,
        ]  # fmt: skip
        if matched_by == "offer_fallback":
            shared += (
                "warning",
                f"no click_id sent: matched to the most recent click on offer "
                f"{offer.offer_id} ({click_id})",
            )
        conversion_only = []
        for name in ("transaction_id", "goal", "survey_id"):
            if get(name):
                conversion_only += (name, params[name])
        if custom:
            conversion_only += ("custom", orjson.dumps(custom))
        step = {"status": status, "at": at, "log_id": log_id}
        if payout_given:
            step["payout_cents"] = upstream
            step["partner_payout_cents"] = partner_cents
        if get("reason"):
            step["reason"] = params["reason"]
        return keys, [
            GROUP, log_id, minid, at, "c", status, user_id, conversion_id, currency,
            partner_cents, upstream if payout_given else "", orjson.dumps(step)[:-1],
            len(conversion_only), len(shared), len(log_only), len(jobs), *specs,
            *conversion_only, *shared, *log_only, *jobs,
        ]  # fmt: skip

    @staticmethod
    def _specs(status: str, click_id: str, offer: OfferTerms, age_ms: int) -> tuple[str, ...]:
        """The effect per current status; window and offer state limit creation only.

        An update to a conversion created in time still applies (a late approval, a
        reversal), but no new conversion comes from an old click or a paused offer.
        """
        if age_ms > offer.window_ms:
            reason = (
                f"click {click_id} is {age_ms // DAY_MS} days old, outside offer "
                f"{offer.offer_id}'s {offer.window_days}-day attribution window"
            )
        elif not offer.active:
            reason = f"offer {offer.offer_id} is not active"
        else:
            return SPECS[status]
        return tuple(e.spec() for e in effects(status, new=refuse_new(reason)))

    def _plan_test(self, log_id, at, now, minid, params, click, offer, log_fields) -> list:
        """A ``test`` postback: forwarded, never a conversion or points.

        Its payout is the partner's payout when the click is known, else the one sent.
        """
        upstream = upstream_cents(str(params.get("payout") or "0"))
        known = click is not None and offer is not None
        payout = offer.rule.partner_cents(upstream) if known else upstream
        click = click or {}
        payload = build_payload(
            click_id=click.get("click_id") or params.get("click_id", ""), status="test",
            payout=format_cents(payout),
            currency=params.get("currency") or (offer.currency if offer else ""),
            offer_id=click.get("offer_id") or params.get("offer_id", ""),
            transaction_id=params.get("transaction_id", ""), user_id=click.get("user_id", ""),
            subs=click, timestamp=at // 1000, extras=params,
            custom=params.get("custom") or {}, source_key=params.get("source", ""),
        )  # fmt: skip
        jobs = forward_jobs(
            self.catalog.partners.recipients(click.get("partner_id", ""), test=True),
            orjson.dumps(payload),
            log_id=log_id,
            conversion_id="",
            created=now,
        )
        for name in ("click_id", "offer_id", "partner_id", "user_id"):
            value = click.get(name) or params.get(name)
            if value:
                log_fields += (name, value)
        return _plain_args(log_id, minid, at, "test", f"{FORWARD_ONLY}test||", log_fields, jobs)

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


def _click(values: list) -> dict | None:
    """A click from its HMGET ``CLICK_FIELDS`` values; None when unknown, expired, or
    still being written (no offer_id yet)."""
    if values[1] is None:
        return None
    return {name: value for name, value in zip(CLICK_FIELDS, values, strict=True) if value}


def _plain_args(log_id, minid, at, status, spec, log_fields, jobs=()) -> list:
    """``match.lua`` arguments for a step that touches no conversion (mode "p")."""
    log_fields = ["log_id", log_id, "time", at, "status", status, *log_fields]
    return [
        GROUP, log_id, minid, at, "p", status, "", "", "", 0, "", "", 0, 0, len(log_fields),
        len(jobs), spec, "", "", "", *log_fields, *jobs,
    ]  # fmt: skip


class MatcherWorker:
    """The matcher process: a thin loop around :class:`Matcher`.

    Claims stale entries every ``claim_idle_ms / 2``, reads every partition without
    blocking and blocks (``block_ms``) only when a whole round found nothing. SIGTERM
    and SIGINT let the batch in hand finish (it is acked by its scripts), then ``run``
    returns 0. A lost Redis is retried with backoff (capped at ``MAX_BACKOFF_S``); on
    reconnect the worker re-reads its own pending entries, whose replies may have been
    lost, and ``match.lua`` turns the ones already applied into no-ops.
    """

    MAX_BACKOFF_S = 5.0

    def __init__(
        self,
        settings: Settings,
        *,
        consumer: str | None = None,
        client: redis.Redis | None = None,
    ) -> None:
        self.settings = settings
        self.consumer = consumer or default_consumer()
        self.keys = Keys(settings.namespace, settings.partitions)
        self.client = client
        self.stopping = False

    def stop(self, *_: object) -> None:
        self.stopping = True

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self.stop)
        log.info("matcher %s serving %d partition(s)", self.consumer, self.keys.partitions)
        matcher: Matcher | None = None
        partitions = list(self.keys.all_partitions())
        block_ms = max(self.settings.block_ms // len(partitions), 1)
        claim_every = self.settings.claim_idle_ms / 2000
        next_claim, turn, backoff, groups_ok = 0.0, 0, 0.1, False
        while not self.stopping:
            try:
                if matcher is None:
                    matcher = Matcher(
                        self.client or worker_connection(self.settings),
                        self.settings,
                        consumer=self.consumer,
                        overlap=True,
                    )
                if not groups_ok:
                    ensure_groups(matcher.r, self.keys)
                    groups_ok = True
                if time.monotonic() >= next_claim:
                    for n in partitions:
                        matcher.claim_stale(n)
                    next_claim = time.monotonic() + claim_every
                handled = 0
                for n in partitions:
                    if self.stopping:
                        break
                    handled += matcher.process_batch(n)
                if not handled and not self.stopping:
                    matcher.flush()
                    matcher.process_batch(partitions[turn % len(partitions)], block_ms=block_ms)
                    turn += 1
                if self.stopping:
                    matcher.flush()
                if backoff > 0.1:
                    log.info("Redis is back")
                backoff = 0.1
            except UNAVAILABLE as exc:
                log.warning("Redis unavailable (%s); retrying in %.1f s", exc, backoff)
                self._sleep(backoff)
                backoff = min(backoff * 2, self.MAX_BACKOFF_S)
                if matcher is not None:
                    matcher.restart()
            except redis.ResponseError as exc:
                if "NOGROUP" in str(exc):
                    # Redis restarted empty, or the stream was deleted: make the group again.
                    log.warning("consumer group missing (%s); creating it", exc)
                    groups_ok = False
                    if matcher is not None:
                        matcher.restart()
                else:
                    log.error("Redis error: %s; retrying in %.1f s", exc, backoff)
                    self._sleep(backoff)
                    backoff = min(backoff * 2, self.MAX_BACKOFF_S)
        log.info("matcher %s stopped: %s", self.consumer, dict(matcher.outcomes) if matcher else {})
        return 0

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.stopping and time.monotonic() < deadline:
            time.sleep(min(0.05, max(deadline - time.monotonic(), 0)))
