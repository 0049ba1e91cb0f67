"""Planning: one decoded postback in, its part of a ``match.lua`` call out (SPEC §4).

Matching (by click_id, else the offer's most recent click), payouts, the effect per
current status (core.transitions), the payload and its recipients are worked out here
in plain Python over what the matcher read beforehand (clicks, offers, partners); no I/O.
One ``match.lua`` call applies a chunk of planned entries:

    >>> planner = Planner(keys, settings.fallback_window_s)
    >>> planner.catalog = Catalog.load(store, version)
    >>> planned = [planner.plan(n, (log_id, fields, params), clicks), ...]
    >>> keys, args = planner.call(n, planned, minid, now)
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from core.conversions import conversion_id as make_conversion_id
from core.money import format_cents
from core.payload import PartnerDirectory, build_payload
from core.payouts import OfferPayouts, upstream_cents
from core.transitions import CONVERSION_STATUSES, SPECS, effects, refuse_new
from processors.matcher.segment import EFFECT_FLAGS, Segment
from storage.keys import MATCHER_GROUP as GROUP
from storage.keys import Keys
from storage.repositories import Store

DAY_MS = 86_400_000
#: Effect flags of plain steps (see core.transitions.Effect.spec).
NO_ACTION = chr(64)
FORWARD_ONLY = chr(64 + EFFECT_FLAGS["forward"])
#: The ids a test postback's log entry carries (from its click, else its params).
LOGGED_IDS = ("click_id", "offer_id", "partner_id", "user_id")


class PlanError(ValueError):
    """An input entry that cannot be planned (a poison entry)."""


@dataclass(frozen=True)
class OfferTerms:
    """What matching needs of an offer, precomputed once per config version."""

    offer_id: str
    active: bool
    currency: str
    window_days: int
    payouts: OfferPayouts
    hold_ms: int = 0

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
                o.offer_id,
                o.active,
                o.currency,
                o.window_days,
                OfferPayouts.for_offer(o),
                o.hold_s * 1000,
            )
            for o in store.list_offers()
        }
        return cls(version, offers, PartnerDirectory.build(store.list_partners()))


def decode_entries(live: list) -> tuple[list, dict[str, str]]:
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


class Planner:
    """Turns decoded entries into ``match.lua`` calls, given clicks read for the batch.

    ``catalog`` is set by the matcher before planning (and replaced when the config
    version moves).
    """

    def __init__(self, keys: Keys, fallback_window_s: int) -> None:
        self.fallback_window_s = fallback_window_s
        self.catalog: Catalog | None = None
        fixed = {
            n: (
                keys.input_stream(n),
                keys.points(n),
                keys.forward_stream(n),
                keys.received_log(n),
                keys.stats(n),
                keys.conversion_index(n),
                keys.held(n),
                keys.holds_due(n),
            )
            for n in keys.all_partitions()
        }
        # KEYS of a call: the stream, one conversion per entry, the other fixed keys.
        self._stream = {n: k[0] for n, k in fixed.items()}
        self._tail = {n: k[1:] for n, k in fixed.items()}
        # The conversion KEY of a plain entry (unmatched, test): never touched.
        self._no_conversion = {n: keys.conversion(n, "-") for n in keys.all_partitions()}
        self._conversion_prefix = {n: keys.conversion(n, "") for n in keys.all_partitions()}
        self._quoted: dict[tuple, tuple] = {}

    def call(self, n: int, planned: list, minid: int, now: int) -> tuple[list, list]:
        """The ``match.lua`` call (keys, args) applying ``planned`` entries, in order."""
        keys, args = [self._stream[n]], [GROUP]
        for _, conversion_key, segment, recipients in planned:
            keys.append(conversion_key)
            args += segment
            args += recipients
        keys += self._tail[n]
        args += (minid, now)
        return keys, args

    def recipients(self, partner_id: str, *, test: bool = False) -> tuple:
        """The event's recipients as JSON strings (match.lua wraps the jobs)."""
        found = self.catalog.partners.recipients(partner_id, test=test)
        quoted = self._quoted.get(found)
        if quoted is None:
            quoted = self._quoted[found] = tuple(orjson.dumps(pid) for pid in found)
        return quoted

    def plan(self, n: int, item: tuple, clicks: dict) -> tuple:
        """(log_id, conversion KEY, :class:`Segment`, recipients) for one entry: its part
        of a ``match.lua`` call."""
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
        log_only = method, ip, raw_params = (
            fields.get("method", ""),
            fields.get("ip", ""),
            fields["params"],
        )

        if status == "test":
            segment, recipients = self._plan_test(
                log_id, at, params, click, offer, source, log_only
            )
            return log_id, self._no_conversion[n], segment, recipients
        if click is None or offer is None:
            if click is not None:
                reason = (
                    f"offer {click['offer_id']} of click {click.get('click_id')} no longer exists"
                )
                ids = (click.get("click_id", ""), click["offer_id"], "", "")
            else:
                if sent_click_id:
                    reason = f"unknown click_id {sent_click_id}"
                else:
                    reason = (
                        f"no click on offer {get('offer_id')} in the "
                        f"{self.fallback_window_s} s before the postback"
                    )
                ids = (get("click_id") or "", get("offer_id") or "", "", "")
            spec = f"{NO_ACTION}unmatched||{reason}"
            segment = _plain_segment(log_id, at, status, spec, source, ids, log_only)
            return log_id, self._no_conversion[n], segment, ()

        click_id = click.get("click_id") or sent_click_id
        user_id, partner_id = click.get("user_id", ""), click.get("partner_id", "")
        transaction_id = get("transaction_id") or ""
        conversion_id = make_conversion_id(
            n, source, transaction_id=transaction_id, click_id=click_id, goal=get("goal") or ""
        )
        partner_cents = offer.payouts.rule(get("goal")).partner_cents(upstream)
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
        recipients = self.recipients(partner_id)
        warning = ""
        if matched_by == "offer_fallback":
            warning = (
                f"no click_id sent: matched to the most recent click on offer "
                f"{offer.offer_id} ({click_id})"
            )
        step = {"status": status, "at": at, "log_id": log_id}
        if payout_given:
            step["payout_cents"] = upstream
            step["partner_payout_cents"] = partner_cents
        if get("reason"):
            step["reason"] = params["reason"]
        new, pending, approved, rejected = specs
        segment = Segment(
            log_id=log_id, time=at, status=status, user_id=user_id,
            conversion_id=conversion_id, currency=currency, partner_cents=partner_cents,
            upstream_cents=upstream if payout_given else "",
            history_step=orjson.dumps(step)[:-1], effect_new=new, effect_pending=pending,
            effect_approved=approved, effect_rejected=rejected,
            payload=orjson.dumps(payload), recipients=len(recipients), source=source,
            click_id=click_id, offer_id=offer.offer_id, partner_id=partner_id,
            matched_by=matched_by, warning=warning, method=method, ip=ip, params=raw_params,
            transaction_id=transaction_id, goal=get("goal") or "",
            survey_id=get("survey_id") or "", custom=orjson.dumps(custom) if custom else "",
            hold_ms=offer.hold_ms,
        )  # fmt: skip
        return log_id, self._conversion_prefix[n] + conversion_id, segment, recipients

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

    def _plan_test(self, log_id, at, params, click, offer, source, log_only) -> tuple:
        """A ``test`` postback: forwarded, never a conversion or points.

        Its payout is the partner's payout when the click is known, else the one sent.
        """
        upstream = upstream_cents(str(params.get("payout") or "0"))
        known = click is not None and offer is not None
        payout = (
            offer.payouts.rule(params.get("goal")).partner_cents(upstream) if known else upstream
        )
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
        recipients = self.recipients(click.get("partner_id", ""), test=True)
        ids = [click.get(name) or params.get(name) or "" for name in LOGGED_IDS]
        spec = f"{FORWARD_ONLY}test||"
        segment = _plain_segment(
            log_id, at, "test", spec, source, ids, log_only, orjson.dumps(payload), len(recipients)
        )
        return segment, recipients


def click_from(reply: list | dict) -> dict | None:
    """A click from its HGETALL reply (``Click.to_redis`` fields: a flat name, value
    list, or a dict when the read went through a redis-py pipeline after a redirect);
    None when unknown, expired, or still being written (no offer_id yet)."""
    click = reply if isinstance(reply, dict) else dict(zip(reply[::2], reply[1::2], strict=True))
    return click if "offer_id" in click else None


def _plain_segment(log_id, at, status, spec, source, ids, log_only, payload=b"", recipients=0):
    """The ``match.lua`` segment of an entry that touches no conversion (unmatched, test);
    ``ids`` are the click_id, offer_id, partner_id and user_id its log entry names."""
    click_id, offer_id, partner_id, user_id = ids
    method, ip, params = log_only
    return Segment(
        log_id=log_id, time=at, status=status, user_id=user_id, conversion_id="",
        currency="", partner_cents=0, upstream_cents="", history_step="", effect_new=spec,
        effect_pending="", effect_approved="", effect_rejected="", payload=payload,
        recipients=recipients, source=source, click_id=click_id, offer_id=offer_id,
        partner_id=partner_id, matched_by="", warning="", method=method, ip=ip,
        params=params, transaction_id="", goal="", survey_id="", custom="", hold_ms=0,
    )  # fmt: skip
