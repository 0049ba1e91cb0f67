"""Sources, offers, partners, clicks, users and conversions in Redis.

Thin wrappers, a command or a pipeline each. Validation happens in ``core`` (sources, offers…)
before anything is written; every change to sources, offers or partners bumps the
config version so running workers reload at their next batch.

    >>> store = Store(client, Keys("pb"))
    >>> store.add_offer(Offer.build("VBFS6", revshare=80))
    >>> store.get_offer("VBFS6").revshare_percent
    Decimal('80')
"""

from __future__ import annotations

import secrets
import time

import orjson
import redis

from core import conversions as conv
from core.clicks import SUB_IDS, Click
from core.money import format_cents
from core.offers import Offer
from core.partners import Partner
from core.sources import Source
from core.validation import ValidationError, check_id
from storage.keys import Keys
from storage.scripts import default_scripts


class NotFound(LookupError):
    """No such record. ``str()`` is one line naming what was looked for."""


def now_ms() -> int:
    return int(time.time() * 1000)


class Store:
    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.r = client
        self.keys = keys

    # -- config version --------------------------------------------------------------
    def config_version(self) -> int:
        return int(self.r.get(self.keys.config_version()) or 0)

    def _bump(self, pipe) -> None:
        pipe.incr(self.keys.config_version())

    # -- sources ---------------------------------------------------------------------
    def add_source(self, source: Source) -> Source:
        self._add("source", source, taken="a source with this key already exists")
        self._copy_source(source.key)
        return source

    def _copy_source(self, source_key: str) -> None:
        """Rewrite every partition's copy of a source from the canonical record.

        The edge's ingest script checks the copy in the postback's own partition, so a
        change is seen by every partition once this returns (one pipeline, per node).
        """
        data = self.r.hgetall(self.keys.source(source_key))
        fields = [part for item in data.items() for part in item]
        calls = [
            ([self.keys.source_copy(n, source_key)], fields) for n in self.keys.all_partitions()
        ]
        for result in default_scripts().run_many(self.r, "replace_hash", calls):
            if isinstance(result, Exception):
                raise result

    def get_source(self, source_key: str) -> Source:
        return self._get("source", source_key)

    def list_sources(self) -> list[Source]:
        return self._list("source")

    def update_source(self, source_key: str, **changes) -> Source:
        source = self.get_source(source_key)
        for name, value in changes.items():
            setattr(source, name, value)
        self._save(self.keys.source(source_key), source.to_redis())
        self._copy_source(source_key)
        return source

    # -- offers ----------------------------------------------------------------------
    def add_offer(self, offer: Offer) -> Offer:
        return self._add("offer", offer)

    def get_offer(self, offer_id: str) -> Offer:
        return self._get("offer", offer_id)

    def list_offers(self) -> list[Offer]:
        return self._list("offer")

    def update_offer(self, offer_id: str, offer: Offer) -> Offer:
        """Replace an offer's fields with a freshly validated ``offer`` (same id)."""
        return self._replace("offer", offer_id, offer)

    # -- partners --------------------------------------------------------------------
    def add_partner(self, partner: Partner) -> Partner:
        return self._add("partner", partner)

    def get_partner(self, partner_id: str) -> Partner:
        return self._get("partner", partner_id)

    def list_partners(self) -> list[Partner]:
        return self._list("partner")

    def update_partner(self, partner_id: str, partner: Partner) -> Partner:
        """Replace a partner's fields with a freshly validated ``partner`` (same id)."""
        return self._replace("partner", partner_id, partner)

    # -- activation (sources by key, offers and partners by id) ----------------------
    def set_active(self, kind: str, record_id: str, active: bool) -> None:
        key = self._kind(kind)[0](record_id)
        if not self.r.exists(key):
            raise NotFound(f"{kind} {record_id!r} not found")
        pipe = self.r.pipeline()
        pipe.hset(key, "active", "1" if active else "0")
        self._bump(pipe)
        pipe.execute()
        if kind == "source":
            self._copy_source(record_id)

    # -- clicks ----------------------------------------------------------------------
    def add_click(
        self,
        *,
        offer_id: str,
        partner_id: str,
        user_id: str,
        ip: str = "",
        click_id: str | None = None,
        subs: dict[str, str] | None = None,
        offer: Offer | None = None,
        fallback_window_s: int = 3600,
    ) -> Click:
        """Record a click; its offer must exist and be active, its partner must exist.

        The click expires a day after the offer's attribution window. The offer's
        recent-click index keeps only what fallback matching can still use.
        """
        offer = offer or self.get_offer(offer_id)
        if not offer.active:
            raise ValidationError("offer", f"offer {offer_id!r} is not active")
        check_id("partner", partner_id)
        check_id("user", user_id)
        if click_id is None:
            click_id = "CLK-" + secrets.token_hex(8).upper()
        else:
            check_id("click_id", click_id)
        click = Click(
            click_id=click_id,
            offer_id=offer.offer_id,
            partner_id=partner_id,
            user_id=user_id,
            ip=ip,
            created=now_ms(),
            subs={k: str(v)[:256] for k, v in (subs or {}).items() if k in SUB_IDS and v},
        )
        key = self.keys.click(click_id)
        index = self.keys.offer_clicks(offer.offer_id)
        # Click keys have no hash tag: no transaction, one command per key.
        pipe = self.r.pipeline(transaction=False)
        pipe.exists(self.keys.partner(partner_id))
        pipe.hsetnx(key, "click_id", click_id)
        exists_partner, fresh = pipe.execute()
        if not exists_partner:
            if fresh:
                self.r.delete(key)
            raise ValidationError("partner", f"partner {partner_id!r} not found")
        if not fresh:
            raise ValidationError("click_id", f"click {click_id!r} already exists")
        pipe = self.r.pipeline(transaction=False)
        pipe.hset(key, mapping=click.to_redis())
        pipe.expire(key, (offer.window_days + 1) * 86400)
        pipe.zadd(index, {click_id: click.created})
        pipe.zremrangebyscore(index, "-inf", click.created - 2 * fallback_window_s * 1000)
        pipe.expire(index, 2 * fallback_window_s)
        pipe.execute()
        return click

    def get_click(self, click_id: str) -> Click:
        data = self.r.hgetall(self.keys.click(click_id))
        if not data or "offer_id" not in data:
            raise NotFound(f"click {click_id!r} not found")
        return Click.from_redis(data)

    # -- users and conversions -------------------------------------------------------
    def points_cents(self, user_id: str) -> int:
        """A user's balance: the sum of their share in every partition's ledger."""
        return self.balances_cents(user_id)[0]

    def balances_cents(self, user_id: str) -> tuple[int, int]:
        """(points, held) of a user in cents: sums over every partition's two ledgers."""
        pipe = self.r.pipeline(transaction=False)
        partitions = list(self.keys.all_partitions())
        for n in partitions:
            pipe.hget(self.keys.points(n), user_id)
        for n in partitions:
            pipe.hget(self.keys.held(n), user_id)
        values = [int(v or 0) for v in pipe.execute()]
        return sum(values[: len(partitions)]), sum(values[len(partitions) :])

    def user(self, user_id: str) -> dict:
        """What ``user show`` and the users API give: points spendable now, points held."""
        points, held = self.balances_cents(user_id)
        return {"user_id": user_id, "points": format_cents(points), "held": format_cents(held)}

    def get_conversion(self, conversion_id: str) -> dict:
        """A conversion as people read it: amounts as "2.80", history and custom decoded."""
        try:
            n = conv.partition_of(conversion_id)
        except conv.UnknownConversion:
            raise NotFound(f"conversion {conversion_id!r} not found") from None
        data = (
            self.r.hgetall(self.keys.conversion(n, conversion_id))
            if n < self.keys.partitions
            else {}
        )
        if not data:
            raise NotFound(f"conversion {conversion_id!r} not found")
        return conversion_public(data)

    # -- helpers ---------------------------------------------------------------------
    def _kind(self, kind: str) -> tuple:
        """How a kind of record is kept: its key from its id, its index, its id field, its class."""
        return {
            "source": (self.keys.source, self.keys.sources_index(), "key", Source),
            "offer": (self.keys.offer, self.keys.offers_index(), "offer_id", Offer),
            "partner": (self.keys.partner, self.keys.partners_index(), "partner_id", Partner),
        }[kind]

    def _add(self, kind: str, record, *, taken: str = ""):
        """Store a new record and index it; ``taken`` is the message when its id is in use."""
        key_of, index, id_field, _ = self._kind(kind)
        record_id = getattr(record, id_field)
        record.created = record.created or now_ms()
        key = key_of(record_id)
        if not self.r.hsetnx(key, id_field, record_id):
            raise ValidationError(id_field, taken or f"{record_id!r} already exists")
        pipe = self.r.pipeline()
        pipe.hset(key, mapping=record.to_redis())
        pipe.sadd(index, record_id)
        self._bump(pipe)
        pipe.execute()
        return record

    def _get(self, kind: str, record_id: str):
        key_of, _, _, cls = self._kind(kind)
        data = self.r.hgetall(key_of(record_id))
        if not data:
            raise NotFound(f"{kind} {record_id!r} not found")
        return cls.from_redis(data)

    def _replace(self, kind: str, record_id: str, record):
        """Store a freshly validated ``record`` over the one with ``record_id``, keeping when
        that was created and whether it is active."""
        current = self._get(kind, record_id)
        record.created, record.active = current.created, current.active
        self._save(self._kind(kind)[0](record_id), record.to_redis())
        return record

    def _save(self, key: str, mapping: dict[str, str]) -> None:
        pipe = self.r.pipeline()
        pipe.hset(key, mapping=mapping)
        self._bump(pipe)
        pipe.execute()

    def _list(self, kind: str) -> list:
        key_of, index, _, cls = self._kind(kind)
        ids = sorted(self.r.smembers(index))
        pipe = self.r.pipeline(transaction=False)
        for record_id in ids:
            pipe.hgetall(key_of(record_id))
        return [cls.from_redis(data) for data in pipe.execute() if data]


def conversion_public(data: dict[str, str]) -> dict:
    out = {
        k: v for k, v in data.items() if not k.endswith("_cents") and k not in ("history", "custom")
    }
    for name in ("payout", "partner_payout", "credited", "held"):
        if f"{name}_cents" in data:
            out[name] = format_cents(int(data[f"{name}_cents"]))
    out["custom"] = orjson.loads(data.get("custom") or "{}")
    history = orjson.loads(data.get("history") or "[]")
    for step in history:
        for name in ("payout", "partner_payout"):
            if f"{name}_cents" in step:
                step[name] = format_cents(int(step.pop(f"{name}_cents")))
    out["history"] = history
    for name in ("created", "updated", "hold_until", "hold_released"):
        if name in out:
            out[name] = int(out[name])
    return out
