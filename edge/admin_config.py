"""The admin HTTP API for configuration (SPEC §7): create, list, change, deactivate and
activate sources, offers and partners under ``/api/admin/{sources,offers,partners}``.

Validation goes through ``core`` (``core.sources``, ``offers``, ``partners``), so a bad
field gets the same one-line message as from ``postback admin``; 400 names the field, 404 an unknown id, 409 a duplicate.
"""

from __future__ import annotations

from collections.abc import Iterable

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


class _Collection(AdminResource):
    """``/api/admin/{kind}s``: the listing (GET) and creating a record (POST)."""

    kind = ""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        records = getattr(self.ctx.store, f"list_{self.kind}s")()
        resp.media = _listing(req, records, f"{self.kind}s")

    def _create(self, resp: falcon.Response, record, record_id: str) -> None:
        """Store a validated record (201); the only ValidationError left is a duplicate id."""
        try:
            getattr(self.ctx.store, f"add_{self.kind}")(record)
        except ValidationError as exc:
            raise falcon.HTTPConflict(title="Conflict", description=str(exc)) from None
        resp.status = falcon.HTTP_201
        resp.location = f"/api/admin/{self.kind}s/{record_id}"
        resp.media = record.public()


class _Item(AdminResource):
    """``/api/admin/{kind}s/{id}``: read it, change it, deactivate and activate it."""

    kind = ""

    def _get(self, record_id: str):
        return getattr(self.ctx.store, f"get_{self.kind}")(record_id)

    def on_get(self, req: falcon.Request, resp: falcon.Response, **ids) -> None:
        resp.media = self._get(_the_id(ids)).public()

    def _set(self, resp: falcon.Response, record_id: str, active: bool) -> None:
        self.ctx.store.set_active(self.kind, record_id, active)
        resp.media = self._get(record_id).public()

    def _patched(self, resp: falcon.Response, record_id: str, body: dict) -> None:
        """The end of a PATCH: ``active`` if given, then the record as it is now."""
        if "active" in body:
            self._set(resp, record_id, body["active"])
        else:
            resp.media = self._get(record_id).public()

    def on_post_deactivate(self, req: falcon.Request, resp: falcon.Response, **ids) -> None:
        self._set(resp, _the_id(ids), False)

    def on_post_activate(self, req: falcon.Request, resp: falcon.Response, **ids) -> None:
        self._set(resp, _the_id(ids), True)


def _the_id(ids: dict[str, str]) -> str:
    """The one URI field of an item route (``key``, ``offer_id`` or ``partner_id``)."""
    return next(iter(ids.values()))


@falcon.before(authorize)
class Sources(_Collection):
    kind = "source"

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = json_body(req, ("name", "key", "allow_ip", "allow", *DIALECT_FIELDS))
        source = Source.build(
            name=body.get("name", ""),
            key=body.get("key"),
            allow_ip=_allow_ip_of(body) or [],
            params=body.get("params"),
            status_map=body.get("status_map"),
        )
        self._create(resp, source, source.key)


@falcon.before(authorize)
class SourceItem(_Item):
    kind = "source"

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
        self._patched(resp, key, body)


OFFER_FIELDS = ("name", "revshare", "fixed", "currency", "url", "window_days", "goals", "hold_s")
#: Aliases and status maps of sources and partners (core.dialects), replaced as a whole.
DIALECT_FIELDS = ("params", "status_map")


@falcon.before(authorize)
class Offers(_Collection):
    kind = "offer"

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = json_body(req, ("offer_id", *OFFER_FIELDS))
        offer_id = body.pop("offer_id", None)
        offer = Offer.build(offer_id, **{k: v for k, v in body.items() if v is not None})
        self._create(resp, offer, offer.offer_id)


@falcon.before(authorize)
class OfferItem(_Item):
    kind = "offer"

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
        self._patched(resp, offer_id, body)


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
class Partners(_Collection):
    kind = "partner"

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = json_body(req, ("partner_id", *PARTNER_FIELDS))
        partner_id = body.pop("partner_id", None)
        if "url" not in body:
            raise ValidationError("url", "required")
        partner = Partner.build(partner_id, **body, resolve=resolve_host)
        self._create(resp, partner, partner.partner_id)


@falcon.before(authorize)
class PartnerItem(_Item):
    kind = "partner"

    def on_patch(self, req: falcon.Request, resp: falcon.Response, partner_id: str) -> None:
        body = json_body(req, (*PARTNER_FIELDS, "active"))
        current = self._get(partner_id)
        fields = {name: getattr(current, name) for name in PARTNER_FIELDS}
        fields.update({k: v for k, v in body.items() if k != "active"})
        partner = Partner.build(partner_id, **fields, resolve=resolve_host)
        self.ctx.store.update_partner(partner_id, partner)
        self._patched(resp, partner_id, body)


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
