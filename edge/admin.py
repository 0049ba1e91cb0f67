"""The admin HTTP API (SPEC §7): logs, diagnostics, test distribution, users, conversions,
and sources, offers and partners.

Every path here needs ``Authorization: Bearer <POSTBACK_ADMIN_TOKEN>`` (compared in
constant time): a missing or wrong token gets 401; with no token configured the whole
API is off and answers 403, never open. Validation goes through ``core.entities``, so a
bad field gets the same one-line message as from ``postback admin``; 400 names the
field, 404 an unknown id, 409 a duplicate.

Logs answer ``{"logs": [...], "page": P, "pages": N, "total": T}``, newest first; a
source is shown by name with only the last four characters of its key.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable, Iterable

import falcon
import orjson

from core.entities import Offer, Partner, Source, ValidationError, check_networks
from core.money import format_cents
from edge.context import EdgeContext
from processors.payload import build_payload
from scripts import lag
from storage import logs
from storage.formats import OUTCOMES
from storage.repositories import NotFound

MAX_PER_PAGE = 500
#: Most log entries one page request reads (to count the total); past it the answer
#: says ``"truncated": true`` and counts only the newest entries of the window.
MAX_SCAN = 200_000
MAX_HOURS = 24 * 3650
POSTBACK_STATUSES = ("approved", "pending", "rejected", "test")
#: The diagnostic endpoint looks at the last hour, reading at most this many entries.
RECENT_HOURS = 1
RECENT_CAP = 10_000
LATEST = 5
#: Health turns "degraded" past these.
DEGRADED_LAG = 10_000
DEGRADED_PENDING_AGE_S = 300.0
DEGRADED_FAILURE_SHARE = 0.5


def authorize(req: falcon.Request, resp: falcon.Response, resource, params) -> None:
    """Falcon hook: the bearer token, or 401; no token configured, 403."""
    token = resource.ctx.settings.admin_token
    if not token:
        raise falcon.HTTPForbidden(
            title="Forbidden", description="admin API is off: set POSTBACK_ADMIN_TOKEN to enable it"
        )
    scheme, _, given = (req.get_header("Authorization") or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        given.strip().encode(), token.encode()
    ):
        raise falcon.HTTPUnauthorized(
            title="Unauthorized",
            description="missing or wrong token: send Authorization: Bearer <token>",
            challenges=["Bearer"],
        )
    resp.cache_control = ["no-store"]  # logs, keys and balances stay out of caches


# -- query parameters and bodies (400 names the field) ------------------------------------
def int_param(req: falcon.Request, name: str, default: int, low: int, high: int) -> int:
    raw = req.get_param(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValidationError(name, f"must be a whole number, not {raw!r}") from None
    if not low <= value <= high:
        raise ValidationError(name, f"must be from {low} to {high}")
    return value


def hours_param(req: falcon.Request) -> float:
    raw = req.get_param("hours")
    if raw is None or raw.strip() == "":
        return 24.0
    try:
        value = float(raw)
    except ValueError:
        raise ValidationError("hours", f"must be a number of hours, not {raw!r}") from None
    if not 0 < value <= MAX_HOURS:
        raise ValidationError("hours", f"must be more than 0 and at most {MAX_HOURS}")
    return value


def bool_param(req: falcon.Request, name: str) -> bool | None:
    raw = (req.get_param(name) or "").strip().lower()
    if raw == "":
        return None
    if raw in ("true", "1", "yes"):
        return True
    if raw in ("false", "0", "no"):
        return False
    raise ValidationError(name, "must be true or false")


def choice_param(req: falcon.Request, name: str, choices: Iterable[str]) -> str | None:
    raw = (req.get_param(name) or "").strip().lower()
    if raw and raw not in choices:
        raise ValidationError(name, f"must be one of {', '.join(choices)}")
    return raw or None


def paging(req: falcon.Request) -> tuple[int, int]:
    return (
        int_param(req, "page", 1, 1, 1_000_000),
        int_param(req, "per_page", 50, 1, MAX_PER_PAGE),
    )


_TEXT_FIELDS = {"name", "key", "secret", "url", "method", "scope", "email", "currency"}


def json_body(req: falcon.Request, allowed: Iterable[str]) -> dict:
    """The request's JSON object; unknown fields and wrong types are refused by name."""
    body = req.get_media(default_when_empty=None)
    if not isinstance(body, dict):
        raise ValidationError("body", "must be a JSON object")
    allowed = set(allowed)
    for name in body:
        if name not in allowed:
            raise ValidationError(name, f"unknown field; expected {', '.join(sorted(allowed))}")
    for name, value in body.items():
        if name in ("active", "allow_private") and not isinstance(value, bool):
            raise ValidationError(name, "must be true or false")
        if name in _TEXT_FIELDS and not isinstance(value, str):
            raise ValidationError(name, "must be a string")
    return body


def _allow_ip_of(body: dict) -> list[str] | None:
    """``allow_ip`` (as the admin command names it) or ``allow`` (as records show it)."""
    if "allow_ip" in body and "allow" in body:
        raise ValidationError("allow_ip", "give allow_ip or allow, not both")
    value = body.get("allow_ip", body.get("allow"))
    return None if value is None else _allow_ip(value)


def _allow_ip(value) -> list[str]:
    if isinstance(value, str):
        value = [part for part in value.split(",") if part.strip()]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValidationError("allow_ip", "must be a list of IP addresses or CIDRs")
    return value


class _Admin:
    def __init__(self, ctx: EdgeContext) -> None:
        self.ctx = ctx


# -- logs and diagnostics ---------------------------------------------------------------------
@falcon.before(authorize)
class ReceivedPostbacks(_Admin):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        window = logs.Window.last_hours(hours_param(req))
        page, per_page = paging(req)
        status = choice_param(req, "status", POSTBACK_STATUSES)
        outcome = choice_param(req, "outcome", OUTCOMES)
        r, keys = self.ctx.redis, self.ctx.keys
        names = logs.source_names(r, keys)
        source = (req.get_param("source") or "").strip()
        where = logs.ReceivedFilter(
            sources=logs.source_keys_matching(names, source) if source else None,
            status=status,
            outcome=outcome,
            partner=(req.get_param("partner") or "").strip() or None,
        )
        scan = logs.Scan(logs.received_entries(r, keys, window, newest_first=True), MAX_SCAN)
        found = logs.paginate(
            filter(where, scan), page, per_page, lambda e: logs.received_row(e, names)
        )
        resp.media = _envelope(found, scan)


@falcon.before(authorize)
class DistributionLogs(_Admin):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        window = logs.Window.last_hours(hours_param(req))
        page, per_page = paging(req)
        where = logs.ForwardedFilter(
            partner=(req.get_param("partner") or "").strip() or None,
            success=bool_param(req, "success"),
        )
        r, keys = self.ctx.redis, self.ctx.keys
        scan = logs.Scan(logs.forwarded_entries(r, keys, window, newest_first=True), MAX_SCAN)
        found = logs.paginate(filter(where, scan), page, per_page, logs.forwarded_row)
        resp.media = _envelope(found, scan)


def _envelope(found: logs.Page, scan: logs.Scan) -> dict:
    out = found.envelope()
    if scan.truncated:
        out["truncated"] = True
    return out


def recent(entries: Iterable, to_row: Callable, failed: Callable | None = None) -> dict:
    """Count of ``entries`` (up to RECENT_CAP), failures among them, and the latest rows."""
    count = failures = 0
    latest = []
    for entry in entries:
        if count == RECENT_CAP:
            break
        count += 1
        if failed is not None and failed(entry):
            failures += 1
        if len(latest) < LATEST:
            latest.append(to_row(entry))
    out = {"window_hours": RECENT_HOURS, "count": count, "capped": count == RECENT_CAP}
    if failed is not None:
        out["failed"] = failures
    out["latest"] = latest
    return out


def health_reasons(report: dict, active_partners: int, deliveries: dict) -> list[str]:
    """Why the relay is degraded; empty when it is ok."""
    reasons = []
    if active_partners == 0:
        reasons.append("no active partners: conversions are not forwarded")
    for p in report.get("paused_partners") or []:
        reasons.append(f"partner {p.get('partner_id')} is paused after repeated failures")
    for g in report["groups"]:
        if g["lag"] > DEGRADED_LAG:
            reasons.append(f"{g['stream']}/{g['group']} is {g['lag']} entries behind")
        if g["pending"] and g["oldest_pending_s"] > DEGRADED_PENDING_AGE_S:
            reasons.append(
                f"{g['stream']}/{g['group']} has entries pending for {lag.duration(g['oldest_pending_s'])}"
            )
    count, failed = deliveries["count"], deliveries.get("failed", 0)
    if count >= 10 and failed / count > DEGRADED_FAILURE_SHARE:
        reasons.append(f"{failed} of the last {count} delivery attempts failed")
    return reasons


def _failed(entry) -> bool:
    return entry[1].get("success") not in ("1", "true")


@falcon.before(authorize)
class DistributionStatus(_Admin):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        r, keys = self.ctx.redis, self.ctx.keys
        report = lag.collect(r, keys)
        partners = self.ctx.store.list_partners()
        active = sum(1 for p in partners if p.active)
        window = logs.Window.last_hours(RECENT_HOURS)
        names = logs.source_names(r, keys)
        received = recent(
            logs.received_entries(r, keys, window, newest_first=True),
            lambda e: logs.received_row(e, names),
        )
        deliveries = recent(
            logs.forwarded_entries(r, keys, window, newest_first=True),
            logs.forwarded_row,
            failed=_failed,
        )
        reasons = health_reasons(report, active, deliveries)
        resp.media = {
            "health": "degraded" if reasons else "ok",
            "reasons": reasons,
            "active_partners": active,
            "partners": len(partners),
            "recent_received": received,
            "recent_deliveries": deliveries,
            "streams": report["groups"],
            "retry_queue": report["retry_queue"],
            "dead_letters": report["dead_letters"],
            "paused_partners": report["paused_partners"],
        }


# -- test distribution ------------------------------------------------------------------------
def queue_test_distribution(ctx: EdgeContext) -> dict:
    """One ``test`` forward job per active partner on partition 0's forward stream."""
    now_ms = int(time.time() * 1000)
    click_id = f"TEST-{now_ms}"
    payload = build_payload(
        status="test",
        payout="1.00",
        timestamp=now_ms // 1000,
        click_id=click_id,
        currency="USD",
        offer_id="TEST-OFFER",
        transaction_id=click_id,
    )
    partners = [p for p in ctx.store.list_partners() if p.active]
    stream = ctx.keys.forward_stream(0)
    pipe = ctx.redis.pipeline(transaction=True)  # all queued or none
    for partner in partners:
        # A forward job as storage.formats writes it; no received postback behind it.
        job = {
            "partner_id": partner.partner_id,
            "payload": payload,
            "log_id": "",
            "conversion_id": "",
            "attempt": 1,
            "created": now_ms,
        }
        pipe.xadd(stream, {"job": orjson.dumps(job)})
    job_ids = pipe.execute() if partners else []
    queued = [
        {"partner_id": p.partner_id, "name": p.name, "method": p.method, "job_id": job_id}
        for p, job_id in zip(partners, job_ids, strict=True)
    ]
    return {
        "status": "success",
        "message": f"test postback queued for {len(queued)} active partner(s)",
        "click_id": click_id,
        "payload": payload,
        "queued": queued,
        "count": len(queued),
    }


@falcon.before(authorize)
class TestDistribution(_Admin):
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = queue_test_distribution(self.ctx)


@falcon.before(authorize)
class TestDistributionNow(_Admin):
    """The older ``GET /test-distribution-now`` (seed 002), kept for existing bookmarks."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = queue_test_distribution(self.ctx)


# -- users and conversions -------------------------------------------------------------------
@falcon.before(authorize)
class User(_Admin):
    def on_get(self, req: falcon.Request, resp: falcon.Response, user_id: str) -> None:
        resp.media = self.ctx.store.user(user_id)


@falcon.before(authorize)
class Conversion(_Admin):
    def on_get(self, req: falcon.Request, resp: falcon.Response, conversion_id: str) -> None:
        conversion = self.ctx.store.get_conversion(conversion_id)
        source_key = conversion.pop("source", "")
        try:
            conversion["source"] = self.ctx.store.get_source(source_key).name
        except NotFound:
            conversion["source"] = ""
        conversion["source_key"] = logs.mask_key(source_key)
        resp.media = conversion


# -- sources, offers, partners ------------------------------------------------------------------
def _listing(req: falcon.Request, records: list, name: str) -> dict:
    active = bool_param(req, "active")
    shown = [r.public() for r in records if active is None or r.active == active]
    return {name: shown, "total": len(shown)}


def _created(resp: falcon.Response, location: str, record) -> None:
    resp.status = falcon.HTTP_201
    resp.location = location
    resp.media = record.public()


def _add(add: Callable, record):
    """Store a validated record; the only ValidationError left is a duplicate id."""
    try:
        return add(record)
    except ValidationError as exc:
        raise falcon.HTTPConflict(title="Conflict", description=str(exc)) from None


class _Activation(_Admin):
    kind = ""

    def _get(self, record_id: str):
        raise NotImplementedError

    def _set(self, resp: falcon.Response, record_id: str, active: bool) -> None:
        self.ctx.store.set_active(self.kind, record_id, active)
        resp.media = self._get(record_id).public()

    def on_post_deactivate(self, req: falcon.Request, resp: falcon.Response, **ids) -> None:
        self._set(resp, next(iter(ids.values())), False)

    def on_post_activate(self, req: falcon.Request, resp: falcon.Response, **ids) -> None:
        self._set(resp, next(iter(ids.values())), True)


@falcon.before(authorize)
class Sources(_Admin):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = _listing(req, self.ctx.store.list_sources(), "sources")

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = json_body(req, ("name", "key", "allow_ip", "allow", "secret"))
        source = Source.build(
            name=body.get("name", ""),
            key=body.get("key"),
            allow_ip=_allow_ip_of(body) or [],
            secret=body.get("secret", ""),
        )
        _add(self.ctx.store.add_source, source)
        _created(resp, f"/api/admin/sources/{source.key}", source)


@falcon.before(authorize)
class SourceItem(_Activation):
    kind = "source"

    def _get(self, record_id: str) -> Source:
        return self.ctx.store.get_source(record_id)

    def on_get(self, req: falcon.Request, resp: falcon.Response, key: str) -> None:
        resp.media = self._get(key).public()

    def on_patch(self, req: falcon.Request, resp: falcon.Response, key: str) -> None:
        body = json_body(req, ("name", "allow_ip", "allow", "secret", "active"))
        changes: dict = {}
        if "name" in body:
            if not body["name"].strip():
                raise ValidationError("name", "required")
            changes["name"] = body["name"].strip()
        allow = _allow_ip_of(body)
        if allow is not None:
            changes["allow"] = check_networks(allow)
        if "secret" in body:
            changes["secret"] = body["secret"]
        self._get(key)  # 404 before any write
        if changes:
            self.ctx.store.update_source(key, **changes)
        if "active" in body:
            self.ctx.store.set_active("source", key, body["active"])
        resp.media = self._get(key).public()


OFFER_FIELDS = ("name", "revshare", "fixed", "currency", "url", "window_days")


@falcon.before(authorize)
class Offers(_Admin):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = _listing(req, self.ctx.store.list_offers(), "offers")

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = json_body(req, ("offer_id", *OFFER_FIELDS))
        offer_id = body.pop("offer_id", None)
        offer = Offer.build(offer_id, **{k: v for k, v in body.items() if v is not None})
        _add(self.ctx.store.add_offer, offer)
        _created(resp, f"/api/admin/offers/{offer.offer_id}", offer)


@falcon.before(authorize)
class OfferItem(_Activation):
    kind = "offer"

    def _get(self, record_id: str) -> Offer:
        return self.ctx.store.get_offer(record_id)

    def on_get(self, req: falcon.Request, resp: falcon.Response, offer_id: str) -> None:
        resp.media = self._get(offer_id).public()

    def on_patch(self, req: falcon.Request, resp: falcon.Response, offer_id: str) -> None:
        body = json_body(req, (*OFFER_FIELDS, "active"))
        current = self._get(offer_id)
        fields = {
            "name": current.name,
            "revshare": current.revshare_percent,
            "fixed": None if current.fixed_cents is None else format_cents(current.fixed_cents),
            "currency": current.currency,
            "url": current.url,
            "window_days": current.window_days,
        }
        # Switching payout model: the one given replaces the other.
        if "revshare" in body and "fixed" not in body:
            fields["fixed"] = None
        if "fixed" in body and "revshare" not in body:
            fields["revshare"] = None
        fields.update({k: v for k, v in body.items() if k != "active"})
        offer = Offer.build(offer_id, **fields)
        self.ctx.store.update_offer(offer_id, offer)
        if "active" in body:
            self.ctx.store.set_active("offer", offer_id, body["active"])
        resp.media = self._get(offer_id).public()


PARTNER_FIELDS = ("url", "method", "scope", "secret", "name", "email", "allow_private")


@falcon.before(authorize)
class Partners(_Admin):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = _listing(req, self.ctx.store.list_partners(), "partners")

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = json_body(req, ("partner_id", *PARTNER_FIELDS))
        partner_id = body.pop("partner_id", None)
        if "url" not in body:
            raise ValidationError("url", "required")
        partner = Partner.build(partner_id, **body)
        _add(self.ctx.store.add_partner, partner)
        _created(resp, f"/api/admin/partners/{partner.partner_id}", partner)


@falcon.before(authorize)
class PartnerItem(_Activation):
    kind = "partner"

    def _get(self, record_id: str) -> Partner:
        return self.ctx.store.get_partner(record_id)

    def on_get(self, req: falcon.Request, resp: falcon.Response, partner_id: str) -> None:
        resp.media = self._get(partner_id).public()

    def on_patch(self, req: falcon.Request, resp: falcon.Response, partner_id: str) -> None:
        body = json_body(req, (*PARTNER_FIELDS, "active"))
        current = self._get(partner_id)
        fields = {name: getattr(current, name) for name in PARTNER_FIELDS}
        fields.update({k: v for k, v in body.items() if k != "active"})
        partner = Partner.build(partner_id, **fields)
        self.ctx.store.update_partner(partner_id, partner)
        if "active" in body:
            self.ctx.store.set_active("partner", partner_id, body["active"])
        resp.media = self._get(partner_id).public()


def register(app: falcon.App, ctx: EdgeContext) -> None:
    app.add_route("/api/admin/received-postbacks", ReceivedPostbacks(ctx))
    app.add_route("/api/admin/partner-distribution-logs", DistributionLogs(ctx))
    app.add_route("/api/diagnostic/partner-distribution-status", DistributionStatus(ctx))
    app.add_route("/api/admin/test-distribution", TestDistribution(ctx))
    app.add_route("/test-distribution-now", TestDistributionNow(ctx))
    app.add_route("/api/admin/users/{user_id}", User(ctx))
    app.add_route("/api/admin/conversions/{conversion_id}", Conversion(ctx))
    for plural, collection, item, id_field in (
        ("sources", Sources, SourceItem, "key"),
        ("offers", Offers, OfferItem, "offer_id"),
        ("partners", Partners, PartnerItem, "partner_id"),
    ):
        base = f"/api/admin/{plural}"
        app.add_route(base, collection(ctx))
        resource = item(ctx)
        app.add_route(f"{base}/{{{id_field}}}", resource)
        for action in ("deactivate", "activate"):
            app.add_route(f"{base}/{{{id_field}}}/{action}", resource, suffix=action)
