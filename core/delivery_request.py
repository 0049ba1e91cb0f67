"""What goes on the wire for one delivery: URL macros, the GET query or POST body, quoting,
and the signature header (``core.signature``).

Plain functions over plain values; ``processors.forwarder.send`` does the I/O.

    >>> req = build_request("https://p.example/pb?k=1", "GET", {"click_id": "C1"})
    >>> req.url
    'https://p.example/pb?k=1&click_id=C1'
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

import orjson

from core.dialects import PartnerDialect
from core.signature import SIGNATURE_HEADER, signature_header

MACROS = (
    "click_id",
    "payout",
    "status",
    "transaction_id",
    "offer_id",
    "currency",
    "user_id",
    "conversion_id",
    "sub1",
    "sub2",
    "sub3",
    "sub4",
    "sub5",
)
_MACRO = re.compile(r"\{(" + "|".join(MACROS) + r")\}")
#: Text made only of these characters is left as it is by ``quote(text, safe="")``.
_UNRESERVED = re.compile(r"[A-Za-z0-9_.~-]*")


class PrivateAddressRefused(Exception):
    """The partner's host resolves to a loopback/private address and it may not use one."""


def param_value(value: object) -> str:
    """A payload value as text: booleans as true/false, objects and lists as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return orjson.dumps(value).decode()
    return str(value)


def quote_param(text: str) -> str:
    """``quote(text, safe="")``, skipping its work for text that needs no escaping (most)."""
    return text if _UNRESERVED.fullmatch(text) else quote(text, safe="")


#: Payload field names repeat from one delivery to the next: quoted once.
_quote_name = functools.lru_cache(maxsize=1024)(quote_param)


def fill_macros(url: str, payload: Mapping[str, object]) -> str:
    """Replace ``{click_id}``, ``{payout}`` … with URL-encoded payload values (missing → empty).

    >>> fill_macros("https://p.example/c/{click_id}?amt={payout}", {"click_id": "a b"})
    'https://p.example/c/a%20b?amt='
    """
    return _MACRO.sub(lambda m: quote_param(param_value(payload.get(m.group(1), ""))), url)


@dataclass(frozen=True)
class DeliveryRequest:
    """What goes on the wire. ``url`` is also what the forwarded log shows."""

    method: str
    url: str
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""


_UNRESERVED_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
#: What re-quoting leaves as it is: the URL's reserved characters, and '%' (an escape).
_SAFE_WITH_PERCENT = "!#$%&'()*+,/:;=?@[]~"
_SAFE_WITHOUT_PERCENT = "!#$&'()*+,/:;=?@[]~"


def requote_uri(uri: str) -> str:
    """A URL fully and consistently quoted, as ``requests`` sends it (its ``requote_uri``).

    Escapes of unreserved characters are undone (``%41`` → ``A``), other escapes kept,
    and what may not appear in a URL (spaces, non-ASCII…) is escaped. When the URL holds
    a bad escape (``%zz``), every ``%`` is escaped instead.

    >>> requote_uri("https://p.example/a b?q=%41%2F&x=é")
    'https://p.example/a%20b?q=A%2F&x=%C3%A9'
    """
    parts = uri.split("%")
    for i in range(1, len(parts)):
        escape = parts[i][:2]
        if len(escape) == 2 and escape.isalnum():
            try:
                char = chr(int(escape, 16))
            except ValueError:
                return quote(uri, safe=_SAFE_WITHOUT_PERCENT)
            if char in _UNRESERVED_CHARS:
                parts[i] = char + parts[i][2:]
                continue
        parts[i] = "%" + parts[i]
    return quote("".join(parts), safe=_SAFE_WITH_PERCENT)


def _split_url(url: str) -> tuple[str, str, frozenset[str]]:
    """A partner URL as sent (quoted as requests would, no fragment), its query, and the
    names of the parameters it already has."""
    scheme, netloc, path, query, _fragment = urlsplit(url)
    base = requote_uri(urlunsplit((scheme, netloc, path, query, "")))
    present = frozenset(name for name, _ in parse_qsl(query, keep_blank_values=True))
    return base, base.partition("?")[2], present


#: Partner URLs without macros are the same for every delivery: split once.
_split_partner_url = functools.lru_cache(maxsize=4096)(_split_url)


def build_request(
    partner_url: str,
    method: str,
    payload: Mapping[str, object],
    *,
    secret: str = "",
    now: float | None = None,
    dialect: PartnerDialect | None = None,
) -> DeliveryRequest:
    """The request for one delivery (SPEC §5).

    GET appends the payload as query parameters after any the partner URL already has; a
    parameter the partner URL already names (usually through a macro) is not sent twice.
    POST sends the payload as a JSON body. Empty values are left out either way.

    A partner's ``dialect`` maps the status value first (so the ``{status}`` macro, the
    query and the body all carry the partner's value), then renames the parameters of
    the query and the body; macros keep their names (``{click_id}``). The signature is
    computed over the result: what is actually sent.
    """
    method = method.upper()
    fields = {k: v for k, v in payload.items() if v is not None and v != ""}
    if dialect:
        fields = dialect.map_status(fields)
    if "{" in partner_url:
        url, query, present = _split_url(fill_macros(partner_url, fields))
    else:
        url, query, present = _split_partner_url(partner_url)
    if dialect:
        fields = dialect.rename(fields)
    headers: dict[str, str] = {}
    body: bytes | None = None
    if method == "GET":
        # What urlencode(..., quote_via=quote) gives, at a third of the cost. Quoted
        # already, so requests' re-quoting (applied to the partner's part) leaves it be.
        extra = "&".join(
            f"{_quote_name(k)}={quote_param(param_value(v))}"
            for k, v in fields.items()
            if k not in present
        )
        if extra:
            url = f"{url}&{extra}" if query else f"{url}?{extra}"
            query = f"{query}&{extra}" if query else extra
        signed = query.encode()
    elif method == "POST":
        signed = body = orjson.dumps(dict(fields))
        headers["Content-Type"] = "application/json"
    else:
        raise ValueError(f"method: must be GET or POST, not {method!r}")
    # The URL is sent as built, so the signed query is exactly the one sent.
    if secret:
        stamp = int(time.time() if now is None else now)
        headers[SIGNATURE_HEADER] = signature_header(secret, stamp, signed)
    return DeliveryRequest(method, url, body, headers)
