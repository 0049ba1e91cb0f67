"""Delivering one conversion to one partner: the pure parts.

Filling URL macros, building the GET URL or POST body, signing, the retry schedule and
judging a response are plain functions over plain values; ``processors.forwarder`` and
``processors.forwarder.send`` do the I/O around them.

Signature recipe (for partners)
-------------------------------
When a partner has a secret, each request carries::

    X-Postback-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<signed>")>

where ``<signed>`` is the raw JSON body for POST, and for GET the query string exactly as
sent (everything after ``?`` in the request line, still URL-encoded). To verify: split the
header on ``,``, recompute the HMAC over ``t + "." + signed`` with the shared secret,
compare in constant time, and refuse a ``t`` more than a few minutes from your clock.
:func:`verify_signature` is that check.

    >>> req = build_request("https://p.example/pb?k=1", "GET", {"click_id": "C1"})
    >>> req.url
    'https://p.example/pb?k=1&click_id=C1'
"""

from __future__ import annotations

import email.utils
import functools
import hmac
import random
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

import orjson

from core.dialects import PartnerDialect

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

SIGNATURE_HEADER = "X-Postback-Signature"
RESPONSE_BODY_CHARS = 500
#: Each retry's delay is the schedule's step times a factor in [1 - JITTER, 1 + JITTER].
JITTER = 0.15
#: A partner's Retry-After is honoured up to this many seconds (the default's longest step).
RETRY_AFTER_CAP_S = 43200.0

DELIVERED, RETRY, FAILED, DEAD_LETTERED = "delivered", "retry", "failed", "dead-lettered"


class PrivateAddressRefused(Exception):
    """The partner's host resolves to a loopback/private address and it may not use one."""


# -- building the request ---------------------------------------------------------------


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


# -- signing ------------------------------------------------------------------------------


def sign(secret: str, timestamp: int, signed: bytes) -> str:
    """Hex HMAC-SHA256 of ``"<timestamp>." + signed`` under ``secret``."""
    message = str(int(timestamp)).encode() + b"." + signed
    return hmac.digest(secret.encode(), message, "sha256").hex()


def signature_header(secret: str, timestamp: int, signed: bytes) -> str:
    return f"t={int(timestamp)},v1={sign(secret, timestamp, signed)}"


def verify_signature(
    secret: str,
    header: str,
    signed: bytes,
    *,
    tolerance_s: float = 300,
    now: float | None = None,
) -> bool:
    """A partner's check of ``X-Postback-Signature`` (see the module docstring)."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        stamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - stamp) > tolerance_s:
        return False
    return hmac.compare_digest(parts.get("v1", ""), sign(secret, stamp, signed))


# -- judging the answer -------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """One attempt's answer. ``result`` is delivered, retry or failed (before counting attempts)."""

    result: str
    status_code: int | None = None
    error: str = ""
    response_body: str = ""
    response_ms: int | None = None
    retry_after_s: float | None = None

    @property
    def success(self) -> bool:
        return self.result == DELIVERED


def classify_status(status_code: int) -> str:
    """2xx delivered; 5xx, 408, 429 retried; anything else (3xx, other 4xx) failed."""
    if 200 <= status_code < 300:
        return DELIVERED
    if status_code >= 500 or status_code in (408, 429):
        return RETRY
    return FAILED


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds from now: delta-seconds or an HTTP date; None if absent or bad.

    >>> parse_retry_after("120")
    120.0
    """
    if not value or not value.strip():
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None or when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def outcome_from_response(
    status_code: int,
    headers: Mapping[str, str],
    content: bytes,
    response_ms: int,
    *,
    now: float | None = None,
) -> Outcome:
    result = classify_status(status_code)
    body = content[: RESPONSE_BODY_CHARS * 4].decode("utf-8", errors="replace")
    error = ""
    if 300 <= status_code < 400:
        location = headers.get("Location", "")
        error = f"HTTP {status_code}: redirect to {location!r} not followed"[:RESPONSE_BODY_CHARS]
    elif result != DELIVERED:
        error = f"HTTP {status_code}"
    return Outcome(
        result=result,
        status_code=status_code,
        error=error,
        response_body=body[:RESPONSE_BODY_CHARS],
        response_ms=response_ms,
        retry_after_s=parse_retry_after(headers.get("Retry-After"), now)
        if result == RETRY
        else None,
    )


# -- jobs and the forwarded log -----------------------------------------------------------


def parse_job(raw: object) -> dict | None:
    """A forward job from its JSON (storage.formats), or None when it cannot be delivered."""
    try:
        job = orjson.loads(raw) if isinstance(raw, str | bytes) else None
    except orjson.JSONDecodeError:
        return None
    if not isinstance(job, dict) or not job.get("partner_id"):
        return None
    if not isinstance(job.get("payload"), dict):
        return None
    return job


#: A forwarded-log entry's fields (SPEC §6), in the order :func:`forwarded_entry` gives them.
FORWARDED_FIELDS = (
    "partner_id",
    "partner_name",
    "partner_email",
    "url",
    "method",
    "success",
    "status_code",
    "response_body",
    "response_ms",
    "attempt",
    "error",
    "log_id",
    "conversion_id",
    "payload",
    "time",
    "result",
)


def forwarded_entry(
    job: Mapping,
    partner: object | None,
    request: DeliveryRequest | None,
    outcome: Outcome,
    *,
    attempt: int,
    result: str,
    time_ms: int,
) -> dict[str, str]:
    """One attempt's forwarded-log entry (SPEC §6): the URL with parameters for GET, the
    base URL for POST; the partner's configured URL when no request was made."""
    return {
        "partner_id": str(job.get("partner_id", "")),
        "partner_name": getattr(partner, "name", ""),
        "partner_email": getattr(partner, "email", ""),
        "url": request.url if request else getattr(partner, "url", ""),
        "method": request.method if request else getattr(partner, "method", ""),
        "success": "1" if outcome.success else "0",
        "status_code": "" if outcome.status_code is None else str(outcome.status_code),
        "response_body": outcome.response_body,
        "response_ms": "" if outcome.response_ms is None else str(outcome.response_ms),
        "attempt": str(attempt),
        "error": outcome.error,
        "log_id": str(job.get("log_id", "")),
        "conversion_id": str(job.get("conversion_id", "")),
        "payload": orjson.dumps(job.get("payload", {})).decode(),
        "time": str(time_ms),
        "result": result,
    }


# -- retries -----------------------------------------------------------------------------


def max_attempts(schedule: Sequence[float]) -> int:
    """The first attempt plus one per schedule step."""
    return len(schedule) + 1


def retry_delay(
    attempt: int,
    schedule: Sequence[float],
    *,
    retry_after_s: float | None = None,
    rand: Callable[[], float] = random.random,
) -> float | None:
    """Seconds to wait after failed attempt ``attempt`` (from 1), or None when it was the last.

    The schedule's step gets ±JITTER so retries of a burst spread out; a partner's
    Retry-After wins when longer (up to RETRY_AFTER_CAP_S).

    >>> retry_delay(1, (30, 120), rand=lambda: 0.5)
    30.0
    >>> retry_delay(3, (30, 120)) is None
    True
    """
    if attempt > len(schedule):
        return None
    delay = float(schedule[attempt - 1]) * (1 + JITTER * (2 * rand() - 1))
    if retry_after_s is not None:
        delay = max(delay, min(float(retry_after_s), RETRY_AFTER_CAP_S))
    return delay


def final_result(outcome: Outcome, attempt: int, schedule: Sequence[float]) -> str:
    """The result once attempts are counted: a retry after the last attempt is dead-lettered."""
    if outcome.result == RETRY and attempt >= max_attempts(schedule):
        return DEAD_LETTERED
    return outcome.result
