"""The admin HTTP API for configuration (SPEC §7): create, list, change, deactivate and
activate sources, offers and partners under ``/api/admin/{sources,offers,partners}``.

Validation goes through ``core`` (``core.sources``, ``offers``, ``partners``), so a bad
field gets the same one-line message as from ``postback admin``; 400 names the field, 404 an unknown id, 409 a duplicate.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import falcon

from core.dialects import SourceDialect
from core.money import format_cents
from core.offers import Offer
from core.partners import Partner
from core.sources import Source
from core.validation import ValidationError, check_networks
from edge.admin_auth import AdminResource, authorize, bool_param
from edge.context import EdgeContext
from storage.dns import resolve_host

# -- request bodies (400 names the field) ------------------------------------------------
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


class _Activation(AdminResource):
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
class Sources(AdminResource):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = _listing(req, self.ctx.store.list_sources(), "sources")

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = json_body(req, ("name", "key", "allow_ip", "allow", *DIALECT_FIELDS))
        source = Source.build(
            name=body.get("name", ""),
            key=body.get("key"),
            allow_ip=_allow_ip_of(body) or [],
            params=body.get("params"),
            status_map=body.get("status_map"),
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
        body = json_body(req, ("name", "allow_ip", "allow", "active", *DIALECT_FIELDS))
        changes: dict = {}
        if "name" in body:
            if not body["name"].strip():
                raise ValidationError("name", "required")
            changes["name"] = body["name"].strip()
        allow = _allow_ip_of(body)
        if allow is not None:
            changes["allow"] = check_networks(allow)
        current = self._get(key)  # 404 before any write
        if any(name in body for name in DIALECT_FIELDS):
            # Each given object replaces the source's; the other is kept.
            dialect = SourceDialect.build(
                body.get("params", current.params), body.get("status_map", current.status_map)
            )
            changes["params"], changes["status_map"] = dialect.params, dialect.status_map
        if changes:
            self.ctx.store.update_source(key, **changes)
        if "active" in body:
            self.ctx.store.set_active("source", key, body["active"])
        resp.media = self._get(key).public()


OFFER_FIELDS = ("name", "revshare", "fixed", "currency", "url", "window_days", "goals", "hold_s")
#: Aliases and status maps of sources and partners (core.dialects), replaced as a whole.
DIALECT_FIELDS = ("params", "status_map")


@falcon.before(authorize)
class Offers(AdminResource):
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
            "goals": current.goals,
            "hold_s": current.hold_s,
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


PARTNER_FIELDS = (
    "url",
    "method",
    "scope",
    "secret",
    "name",
    "email",
    "allow_private",
    *DIALECT_FIELDS,
)


@falcon.before(authorize)
class Partners(AdminResource):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = _listing(req, self.ctx.store.list_partners(), "partners")

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = json_body(req, ("partner_id", *PARTNER_FIELDS))
        partner_id = body.pop("partner_id", None)
        if "url" not in body:
            raise ValidationError("url", "required")
        partner = Partner.build(partner_id, **body, resolve=resolve_host)
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
        partner = Partner.build(partner_id, **fields, resolve=resolve_host)
        self.ctx.store.update_partner(partner_id, partner)
        if "active" in body:
            self.ctx.store.set_active("partner", partner_id, body["active"])
        resp.media = self._get(partner_id).public()


def register(app: falcon.App, ctx: EdgeContext) -> None:
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
