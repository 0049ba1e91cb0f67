"""Sources, offers, partners and clicks: their fields and the rules they obey.

Plain values and validation only; ``storage.repositories`` keeps them in Redis. The
admin command and the admin HTTP API both validate through here, so a bad field gets the
same one-line error from either.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from urllib.parse import urlsplit

import orjson

from core.flags import is_true
from core.money import AmountError, format_cents, parse_amount, parse_percent, to_cents
from core.networks import parse_networks

ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,127}$")
CURRENCY_PATTERN = re.compile(r"^[A-Z]{3}$")
SUB_IDS = ("sub1", "sub2", "sub3", "sub4", "sub5")


class ValidationError(ValueError):
    """A field that breaks a rule. ``str()`` is one line naming the field."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name
        self.message = message


def check_id(field_name: str, value: object) -> str:
    if not isinstance(value, str) or not ID_PATTERN.match(value):
        raise ValidationError(
            field_name, "1-128 characters of letters, digits, '_', '.', ':' or '-'"
        )
    return value


def check_currency(value: object, field_name: str = "currency") -> str:
    text = str(value or "").strip().upper()
    if not CURRENCY_PATTERN.match(text):
        raise ValidationError(field_name, "must be a 3-letter ISO 4217 code such as USD")
    return text


def check_networks(values: list[str] | tuple[str, ...]) -> list[str]:
    try:
        return [str(network) for network in parse_networks(values)]
    except ValueError as exc:
        raise ValidationError("allow_ip", str(exc)) from None


def check_http_url(field_name: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(field_name, "must be an http or https URL")
    value = value.strip()
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationError(
            field_name, f"must be an http or https URL with a host, not {value!r}"
        )
    if any(ch.isspace() for ch in value):
        raise ValidationError(field_name, "must not contain spaces")
    try:
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        raise ValidationError(field_name, "has a malformed port") from None
    return value


#: A host name's addresses, [] when it does not resolve (``storage.dns.resolve_host``).
Resolver = Callable[[str], Iterable[str]]


def is_private_host(host: str, resolve: Resolver | None = None) -> bool:
    """True for loopback, private, link-local and otherwise non-public addresses.

    IP literals and local names (``localhost``, ``*.local``…) are judged by their text.
    Other names are looked up only through ``resolve``: one that resolves to any
    non-public address counts as private; without a resolver, or when the name does
    not resolve, it is judged by its text alone (core does no I/O).
    """
    host = host.strip("[]").lower().rstrip(".")  # "localhost." is localhost too
    if host == "localhost" or host.endswith((".localhost", ".local", ".internal")):
        return True
    ip = _ip_literal(host)
    if ip is not None:
        return _is_private_ip(ip)
    if resolve is None:
        return False
    for address in resolve(host):
        try:
            if _is_private_ip(ipaddress.ip_address(address)):
                return True
        except ValueError:
            continue
    return False


_INET_PART = re.compile(r"0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*")


def _ip_literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """``host`` as an address if it is written as one, in any form a resolver takes
    without a look-up: ``2130706433``, ``127.1`` and ``0x7f.0.0.1`` are 127.0.0.1
    (inet_aton's forms), so none of them slips past as a name."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    parts = host.split(".")
    if not 1 <= len(parts) <= 4 or not all(_INET_PART.fullmatch(p) for p in parts):
        return None
    values = [_inet_number(part) for part in parts]
    *head, last = values
    if any(v > 255 for v in head) or last >= 256 ** (4 - len(head)):
        return None
    number = 0
    for value in head:
        number = number * 256 + value
    return ipaddress.IPv4Address(number * 256 ** (4 - len(head)) + last)


def _inet_number(part: str) -> int:
    if part[:2] in ("0x", "0X"):
        return int(part[2:], 16)
    return int(part, 8) if part.startswith("0") else int(part)


def _is_private_ip(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    # ``is_global`` is False for the shared address space 100.64.0.0/10 too (carrier
    # NAT; some clouds serve instance metadata there, e.g. 100.100.100.200), which
    # ``is_private`` misses, and for the other special-purpose blocks.
    return (
        not ip.is_global
        or ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
    )


def check_partner_url(
    value: object, *, allow_private: bool = False, resolve: Resolver | None = None
) -> str:
    """An http(s) URL whose host is public unless ``allow_private`` (``resolve``: see
    :func:`is_private_host`)."""
    url = check_http_url("url", value)
    host = urlsplit(url).hostname or ""
    if not allow_private and is_private_host(host, resolve):
        raise ValidationError(
            "url",
            f"{host} is a loopback, private or link-local address; "
            "pass --allow-private (allow_private) to permit it",
        )
    return url


def check_payout_model(field_name: str, revshare: object, fixed: object) -> dict[str, str]:
    """``{"revshare": "50"}`` or ``{"fixed": "1.00"}``: exactly one, validated."""
    if (revshare is None) == (fixed is None):
        raise ValidationError(
            field_name, "give exactly one of revshare (percent) or fixed (amount)"
        )
    if revshare is not None:
        try:
            return {"revshare": str(parse_percent(revshare))}
        except AmountError as exc:
            raise ValidationError(
                "revshare" if field_name == "payout" else f"{field_name}.revshare", str(exc)
            ) from None
    try:
        return {"fixed": format_cents(to_cents(parse_amount(fixed)))}
    except AmountError as exc:
        raise ValidationError(
            "fixed" if field_name == "payout" else f"{field_name}.fixed", str(exc)
        ) from None


def check_goal_name(goal: object) -> str:
    """A goal's name as offers keep it: an id, lower case."""
    return check_id("goal", goal.strip() if isinstance(goal, str) else goal).lower()


def check_goals(goals: object) -> dict[str, dict[str, str]]:
    """``{"install": {"fixed": "1.00"}, "purchase": {"revshare": "50"}}`` (SPEC §7)."""
    if goals is None or goals == {}:
        return {}
    if not isinstance(goals, dict):
        raise ValidationError("goals", 'must be an object such as {"install": {"fixed": "1.00"}}')
    out: dict[str, dict[str, str]] = {}
    for goal, model in goals.items():
        name = check_goal_name(goal)
        if name in out:
            raise ValidationError("goals", f"goal {name!r} given twice")
        if not isinstance(model, dict) or set(model) - {"revshare", "fixed"}:
            raise ValidationError(
                f"goals.{name}", 'must be {"revshare": PERCENT} or {"fixed": AMOUNT}'
            )
        out[name] = check_payout_model(f"goals.{name}", model.get("revshare"), model.get("fixed"))
    return out


_DURATION = re.compile(r"^(\d{1,9})\s*([dhms]?)$")
_UNIT_S = {"d": 86400, "h": 3600, "m": 60, "s": 1, "": 1}
MAX_HOLD_S = 366 * 86400


def parse_hold(value: object, field_name: str = "hold_s") -> int:
    """A hold period in seconds: a whole number of seconds, or ``7d``, ``12h``, ``30m``, ``45s``.

    >>> parse_hold("7d"), parse_hold(90), parse_hold("")
    (604800, 90, 0)
    """
    if value is None or value == "":
        return 0
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValidationError(field_name, "must be a whole number of seconds or like 7d, 12h")
    match = _DURATION.match(str(value).strip().lower())
    if not match:
        raise ValidationError(
            field_name, f"{value!r} is not a duration such as 7d, 12h, 30m or 45s"
        )
    seconds = int(match.group(1)) * _UNIT_S[match.group(2)]
    if seconds > MAX_HOLD_S:
        raise ValidationError(field_name, "must be at most 366 days")
    return seconds


def new_source_key() -> str:
    """24 random URL-safe characters."""
    return secrets.token_urlsafe(18)


def _without_secret(record) -> dict:
    out = asdict(record)
    out["has_secret"] = bool(out.pop("secret"))
    return out


def _dialect(kind: str, params: object, status_map: object):
    """A validated source or partner dialect (``core.dialects`` builds on this module)."""
    from core.dialects import PartnerDialect, SourceDialect

    return (SourceDialect if kind == "source" else PartnerDialect).build(params, status_map)


@dataclass
class Source:
    key: str
    name: str
    active: bool = True
    allow: list[str] = field(default_factory=list)
    secret: str = ""
    created: int = 0
    #: Parameter aliases ``{field: name the source sends}`` and status map ``{value: status}``.
    params: dict[str, str] = field(default_factory=dict)
    status_map: dict[str, str] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        *,
        name: str,
        key: str | None = None,
        allow_ip=(),
        secret: str = "",
        params: object = None,
        status_map: object = None,
    ) -> Source:
        if not name or not str(name).strip():
            raise ValidationError("name", "required")
        if key is None:
            key = new_source_key()
        elif not re.fullmatch(r"[A-Za-z0-9_\-]{16,128}", key):
            raise ValidationError(
                "key", "at least 16 URL-safe characters (letters, digits, '-', '_')"
            )
        dialect = _dialect("source", params, status_map)
        return cls(
            key=key,
            name=str(name).strip(),
            allow=check_networks(list(allow_ip)),
            secret=secret,
            params=dialect.params,
            status_map=dialect.status_map,
        )

    @property
    def dialect(self):
        """The source's :class:`core.dialects.SourceDialect`."""
        from core.dialects import SourceDialect

        return SourceDialect(self.params, self.status_map)

    def to_redis(self) -> dict[str, str]:
        return {
            "key": self.key,
            "name": self.name,
            "active": "1" if self.active else "0",
            "allow": ",".join(self.allow),
            "secret": self.secret,
            "created": str(self.created),
            # One field, canonical JSON, "" for none: the ingest script compares it with
            # the edge's cached copy (storage/lua/ingest.lua).
            "dialect": self.dialect.to_json(),
        }

    @classmethod
    def from_redis(cls, data: dict[str, str]) -> Source:
        return cls(
            key=data["key"],
            name=data.get("name", ""),
            active=is_true(data.get("active", "0")),
            allow=[a for a in data.get("allow", "").split(",") if a],
            secret=data.get("secret", ""),
            created=int(data.get("created") or 0),
            **_dialect_fields(data.get("dialect")),
        )

    def public(self) -> dict:
        """The fields shown by ``--json`` and the admin API (the secret stays hidden)."""
        return _without_secret(self)


def _dialect_fields(text: str | None) -> dict:
    data = orjson.loads(text) if text else {}
    return {
        "params": dict(data.get("params") or {}),
        "status_map": dict(data.get("status_map") or {}),
    }


@dataclass
class Offer:
    offer_id: str
    name: str = ""
    payout_model: str = "revshare"  # revshare | fixed
    revshare_percent: Decimal | None = None
    fixed_cents: int | None = None
    currency: str = "USD"
    url: str = ""
    window_days: int = 30
    active: bool = True
    created: int = 0
    #: Per-goal payout models, ``{goal: {"revshare": "50"} | {"fixed": "1.00"}}`` (goal
    #: names lower case: a postback's ``goal`` is looked up case-insensitively).
    goals: dict[str, dict[str, str]] = field(default_factory=dict)
    #: Seconds an approval's points are held before they are credited; 0 = none.
    hold_s: int = 0

    @classmethod
    def build(
        cls,
        offer_id: str,
        *,
        revshare: object = None,
        fixed: object = None,
        currency: str = "USD",
        url: str = "",
        window_days: object = 30,
        name: str = "",
        goals: object = None,
        hold_s: object = 0,
        hold: object = None,
    ) -> Offer:
        check_id("offer_id", offer_id)
        model = check_payout_model("payout", revshare, fixed)
        offer = cls(offer_id=offer_id, name=name or offer_id, currency=check_currency(currency))
        offer.payout_model = next(iter(model))
        if "revshare" in model:
            offer.revshare_percent = Decimal(model["revshare"])
        else:
            offer.fixed_cents = to_cents(Decimal(model["fixed"]))
        offer.goals = check_goals(goals)
        offer.hold_s = parse_hold(hold, "hold") if hold is not None else parse_hold(hold_s)
        if url:
            offer.url = check_http_url("url", url)
        try:
            offer.window_days = int(str(window_days))
        except ValueError:
            raise ValidationError("window_days", "must be a whole number of days") from None
        if not 1 <= offer.window_days <= 3650:
            raise ValidationError("window_days", "must be from 1 to 3650")
        return offer

    def to_redis(self) -> dict[str, str]:
        return {
            "offer_id": self.offer_id,
            "name": self.name,
            "payout_model": self.payout_model,
            "revshare_percent": "" if self.revshare_percent is None else str(self.revshare_percent),
            "fixed_cents": "" if self.fixed_cents is None else str(self.fixed_cents),
            "currency": self.currency,
            "url": self.url,
            "window_days": str(self.window_days),
            "active": "1" if self.active else "0",
            "created": str(self.created),
            "goals": orjson.dumps(self.goals, option=orjson.OPT_SORT_KEYS).decode()
            if self.goals
            else "",
            "hold_s": str(self.hold_s),
        }

    def with_goal(self, goal: str, *, revshare: object = None, fixed: object = None) -> Offer:
        """This offer with ``goal``'s own payout model set (replacing any it had)."""
        name = check_goal_name(goal)
        goals = dict(self.goals)
        goals[name] = check_payout_model(f"goals.{name}", revshare, fixed)
        self.goals = goals
        return self

    @classmethod
    def from_redis(cls, data: dict[str, str]) -> Offer:
        return cls(
            offer_id=data["offer_id"],
            name=data.get("name", ""),
            payout_model=data.get("payout_model", "revshare"),
            revshare_percent=Decimal(data["revshare_percent"])
            if data.get("revshare_percent")
            else None,
            fixed_cents=int(data["fixed_cents"]) if data.get("fixed_cents") else None,
            currency=data.get("currency", "USD"),
            url=data.get("url", ""),
            window_days=int(data.get("window_days") or 30),
            active=is_true(data.get("active", "0")),
            created=int(data.get("created") or 0),
            goals=orjson.loads(data["goals"]) if data.get("goals") else {},
            hold_s=int(data.get("hold_s") or 0),
        )

    def public(self) -> dict:
        return {
            "offer_id": self.offer_id,
            "name": self.name,
            "payout_model": self.payout_model,
            "revshare": None if self.revshare_percent is None else str(self.revshare_percent),
            "fixed": None if self.fixed_cents is None else format_cents(self.fixed_cents),
            "currency": self.currency,
            "url": self.url,
            "window_days": self.window_days,
            "goals": self.goals,
            "hold_s": self.hold_s,
            "active": self.active,
            "created": self.created,
        }


@dataclass
class Partner:
    partner_id: str
    url: str
    name: str = ""
    email: str = ""
    method: str = "GET"
    scope: str = "own"  # own | all
    secret: str = ""
    active: bool = True
    allow_private: bool = False
    created: int = 0
    #: The partner's own names ``{field: name}`` and status values ``{status: value}``.
    params: dict[str, str] = field(default_factory=dict)
    status_map: dict[str, str] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        partner_id: str,
        *,
        url: str,
        method: str = "GET",
        scope: str = "own",
        secret: str = "",
        name: str = "",
        email: str = "",
        allow_private: bool = False,
        params: object = None,
        status_map: object = None,
        resolve: Resolver | None = None,
    ) -> Partner:
        """A validated partner. ``resolve`` looks the URL's host name up (see
        :func:`is_private_host`); the admin API and ``postback admin`` pass one."""
        check_id("partner_id", partner_id)
        method = str(method or "GET").upper()
        if method not in ("GET", "POST"):
            raise ValidationError("method", "must be GET or POST")
        scope = str(scope or "own").lower()
        if scope not in ("own", "all"):
            raise ValidationError("scope", "must be own or all")
        if email and not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", email):
            raise ValidationError("email", f"{email!r} is not an email address")
        dialect = _dialect("partner", params, status_map)
        return cls(
            params=dialect.params,
            status_map=dialect.status_map,
            partner_id=partner_id,
            url=check_partner_url(url, allow_private=allow_private, resolve=resolve),
            name=name or partner_id,
            email=email,
            method=method,
            scope=scope,
            secret=secret or "",
            allow_private=allow_private,
        )

    def to_redis(self) -> dict[str, str]:
        return {
            "partner_id": self.partner_id,
            "url": self.url,
            "name": self.name,
            "email": self.email,
            "method": self.method,
            "scope": self.scope,
            "secret": self.secret,
            "active": "1" if self.active else "0",
            "allow_private": "1" if self.allow_private else "0",
            "created": str(self.created),
            "dialect": self.dialect.to_json(),
        }

    @property
    def dialect(self):
        """The partner's :class:`core.dialects.PartnerDialect`."""
        from core.dialects import PartnerDialect

        return PartnerDialect(self.params, self.status_map)

    @classmethod
    def from_redis(cls, data: dict[str, str]) -> Partner:
        return cls(
            partner_id=data["partner_id"],
            url=data.get("url", ""),
            name=data.get("name", ""),
            email=data.get("email", ""),
            method=data.get("method", "GET"),
            scope=data.get("scope", "own"),
            secret=data.get("secret", ""),
            active=is_true(data.get("active", "0")),
            allow_private=is_true(data.get("allow_private", "0")),
            created=int(data.get("created") or 0),
            **_dialect_fields(data.get("dialect")),
        )

    def public(self) -> dict:
        return _without_secret(self)


@dataclass
class Click:
    click_id: str
    offer_id: str
    partner_id: str
    user_id: str
    ip: str = ""
    created: int = 0
    subs: dict[str, str] = field(default_factory=dict)

    def to_redis(self) -> dict[str, str]:
        out = {
            "click_id": self.click_id,
            "offer_id": self.offer_id,
            "partner_id": self.partner_id,
            "user_id": self.user_id,
            "ip": self.ip,
            "created": str(self.created),
        }
        out.update({k: v for k, v in self.subs.items() if v})
        return out

    @classmethod
    def from_redis(cls, data: dict[str, str]) -> Click:
        return cls(
            click_id=data["click_id"],
            offer_id=data.get("offer_id", ""),
            partner_id=data.get("partner_id", ""),
            user_id=data.get("user_id", ""),
            ip=data.get("ip", ""),
            created=int(data.get("created") or 0),
            subs={k: data[k] for k in SUB_IDS if data.get(k)},
        )

    def public(self) -> dict:
        out = {k: v for k, v in asdict(self).items() if k != "subs"}
        out.update(self.subs)
        return out
