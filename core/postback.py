"""Postback parameters: what the edge accepts and the normalised shape it stores (SPEC §3).

Plain functions over plain values; the edge resources are thin shells around them.

    >>> validate({"click_id": "CLK-1", "status": "Approved", "payout": "5.005", "sub": "x"})
    {'click_id': 'CLK-1', 'status': 'approved', 'payout': '5.01', 'custom': {'sub': 'x'}}

Choices where the SPEC is silent (listed in the README):

* an empty value counts as not given (``status=`` → approved, ``click_id=`` → missing);
  ``payout`` is stored only when given, so a status-only update can keep the first payout;
* known fields are trimmed of surrounding spaces; custom fields are kept verbatim;
* a repeated query/form parameter: the last value wins;
* JSON numbers are read by orjson: integers beyond 64 bits and numbers with more than
  ~17 significant digits arrive as doubles (send such values as strings).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import parse_qsl, unquote

import orjson

from core.money import AmountError, parse_amount

STATUSES = ("approved", "pending", "rejected", "test")
DEFAULT_STATUS = "approved"
#: Optional string fields, in the order they are stored.
STRING_FIELDS = ("transaction_id", "offer_id", "survey_id", "goal", "reason")
KNOWN_FIELDS = frozenset(("click_id", "status", "payout", "currency", *STRING_FIELDS))
MAX_STRING = {"reason": 1024}
MAX_ID = 256
#: Deepest nesting of a custom JSON value (an object or array counts as one level).
MAX_DEPTH = 32

MAX_SINGLE_BODY = 64 * 1024
MAX_BATCH_BODY = 8 * 1024 * 1024
MAX_BATCH_ITEMS = 10_000

# ``{word}`` as a sender's template left it, or its percent-encoded form ``%7Bword%7D``.
_MACRO = re.compile(r"(?:\{|%7[Bb])\s*[A-Za-z_][\w.\-]*\s*(?:\}|%7[Dd])")
_CURRENCY = re.compile(r"^[A-Za-z]{3}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class PostbackError(ValueError):
    """A postback the edge refuses. ``str()`` is the message for the sender, naming the field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def find_macro(value: str) -> str | None:
    """The unfilled macro in ``value``, checked as given and percent-decoded once more.

    >>> find_macro("%7Bclick_id%7D"), find_macro("CLK-1")
    ('%7Bclick_id%7D', None)
    """
    match = _MACRO.search(value)
    if match is None and "%" in value:
        match = _MACRO.search(unquote(value))
    return match.group(0) if match else None


def _check_macros(name: str, value: object) -> None:
    # Custom JSON values may nest; walk them without recursion. The depth is capped:
    # orjson reads 1,024 levels but writes only ~254, and the stored entry and the
    # log rows wrap a value in a few more, so a deeper one could be taken in and then
    # never shown or exported.
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH and isinstance(item, dict | list):
            raise PostbackError(name, f"{name}: nested deeper than {MAX_DEPTH} levels")
        if isinstance(item, str):
            macro = find_macro(item)
            if macro:
                raise PostbackError(
                    name, f"{name}: holds the unfilled macro {macro!r}; the sender must replace it"
                )
        elif isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)


def _text(name: str, value: object) -> str:
    """A known string field: str or whole number, trimmed; '' when empty."""
    if isinstance(value, str):
        text = value.strip()
    elif isinstance(value, int) and not isinstance(value, bool):
        text = str(value)
    elif value is None:
        return ""
    else:
        raise PostbackError(name, f"{name}: must be a string, not {_json_type(value)}")
    limit = MAX_STRING.get(name, MAX_ID)
    if len(text) > limit:
        raise PostbackError(name, f"{name}: at most {limit} characters")
    if _CONTROL.search(text):
        raise PostbackError(name, f"{name}: must not contain control characters")
    return text


def _json_type(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    return "null" if value is None else type(value).__name__


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def validate(params: Mapping[str, object]) -> dict:
    """Check and normalise one postback; raise :class:`PostbackError` naming the field.

    Returns the ``params`` object of the input stream entry (``storage.formats``):
    click_id, status, payout, currency and the optional strings only when given, and
    ``custom`` (always, maybe empty) holding every other parameter verbatim.
    """
    for name, value in params.items():
        if not name:
            continue  # a nameless parameter ("=x") is dropped below, not refused
        if type(value) is str:
            # Most values hold neither brace nor percent sign: skip the regex for them.
            if ("{" in value or "%" in value) and find_macro(value):
                _check_macros(name, value)
        elif value is not None:
            _check_macros(name, value)

    out: dict = {}
    click_id = _text("click_id", params.get("click_id"))
    if click_id:
        out["click_id"] = click_id

    status = params.get("status")
    if status is None or status == "":
        out["status"] = DEFAULT_STATUS
    elif not isinstance(status, str) or status.strip().lower() not in STATUSES:
        raise PostbackError(
            "status", f"status: must be one of {', '.join(STATUSES)}, not {_short(status)}"
        )
    else:
        out["status"] = status.strip().lower()

    payout = params.get("payout")
    if payout is not None and payout != "":
        try:
            out["payout"] = str(parse_amount(payout))
        except AmountError as exc:
            raise PostbackError(
                "payout", f"payout: {exc} (a decimal from 0 to 1000000), not {_short(payout)}"
            ) from None

    currency = params.get("currency")
    if currency is not None and currency != "":
        if not isinstance(currency, str) or not _CURRENCY.match(currency.strip()):
            raise PostbackError(
                "currency", f"currency: must be a 3-letter code such as USD, not {_short(currency)}"
            )
        out["currency"] = currency.strip().upper()

    for name in STRING_FIELDS:
        text = _text(name, params.get(name))
        if text:
            out[name] = text

    if "click_id" not in out and "offer_id" not in out:
        raise PostbackError("click_id", "click_id required")

    out["custom"] = {k: v for k, v in params.items() if k not in KNOWN_FIELDS and k}
    return out


# -- request bodies --------------------------------------------------------------------


def check_query_utf8(query_string: str) -> None:
    """Refuse a query whose percent-encoded bytes are not UTF-8, naming the parameter.

    Falcon decodes them with replacement characters, which would store a changed value
    without a word. Called only when a decoded value holds U+FFFD (which a sender may
    also have meant).
    """
    from urllib.parse import unquote_to_bytes

    for part in query_string.split("&"):
        name, _, value = part.partition("=")
        for raw in (name, value):
            try:
                unquote_to_bytes(raw.replace("+", " ")).decode("utf-8")
            except UnicodeDecodeError:
                shown = unquote_to_bytes(name).decode("utf-8", "replace") or "query"
                raise PostbackError(
                    shown, f"{shown}: not valid UTF-8 (percent-encoded bytes must spell UTF-8)"
                ) from None


def last_values(params: Mapping[str, object]) -> dict:
    """Query/form parameters with a repeated name reduced to the last value."""
    return {k: (v[-1] if isinstance(v, list) else v) for k, v in params.items()}


def parse_form(body: bytes) -> dict:
    """A form-encoded body as a dict of strings (last value wins, first position kept)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise PostbackError("body", "body: form data must be UTF-8") from None
    return dict(parse_qsl(text, keep_blank_values=True))


def parse_json_object(body: bytes, name: str = "body") -> dict:
    """A JSON object; invalid JSON or another JSON type is refused naming ``name``."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise PostbackError(name, f"{name}: invalid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise PostbackError(name, f"{name}: must be a JSON object, not {_json_type(value)}")
    return value


def body_kind(content_type: str | None, body: bytes) -> str:
    """'json' or 'form' for a single postback's body, from its Content-Type or its first byte.

    Raises PostbackError for a media type the edge does not read (multipart, XML...).
    """
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media == "application/json" or media.endswith("+json"):
        return "json"
    if media == "application/x-www-form-urlencoded":
        return "form"
    if media in ("", "text/plain", "application/octet-stream"):
        return "json" if body.lstrip()[:1] in (b"{", b"[") else "form"
    raise PostbackError(
        "body",
        f"body: Content-Type {media!r} not supported; send application/json or "
        "application/x-www-form-urlencoded",
    )


def split_batch(body: bytes, content_type: str | None) -> list:
    """The items of a batch body: a JSON array, or NDJSON (one object per line).

    NDJSON is read when the Content-Type says so (application/x-ndjson, application/jsonl)
    or when the body does not start with ``[``. Blank NDJSON lines are skipped. Each item
    is returned as is; a line that is not JSON becomes a :class:`PostbackError` in its
    place, so the other items still go through. Raises PostbackError for a body that is
    not a batch at all, and :class:`BatchTooLarge` for more than MAX_BATCH_ITEMS items.
    """
    media = (content_type or "").split(";", 1)[0].strip().lower()
    stripped = body.lstrip()
    ndjson = media in ("application/x-ndjson", "application/jsonl", "application/ndjson") or (
        stripped[:1] != b"["
    )
    if not stripped:
        raise PostbackError("body", "body: empty; send a JSON array of postbacks or NDJSON")
    if not ndjson:
        try:
            items = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise PostbackError("body", f"body: invalid JSON ({exc})") from None
        if not isinstance(items, list):
            raise PostbackError("body", f"body: must be a JSON array, not {_json_type(items)}")
        _check_count(len(items))
        return items
    if stripped[:1] not in (b"{", b"["):
        raise PostbackError(
            "body", "body: must be a JSON array of postback objects or NDJSON (one object per line)"
        )
    lines = [line for line in body.split(b"\n") if line.strip()]
    _check_count(len(lines))
    items = []
    for line in lines:
        try:
            items.append(orjson.loads(line))
        except orjson.JSONDecodeError as exc:
            items.append(PostbackError("item", f"invalid JSON ({exc})"))
    return items


class BatchTooLarge(PostbackError):
    """More items than one batch may hold (answered 413)."""


def _check_count(count: int) -> None:
    if count > MAX_BATCH_ITEMS:
        raise BatchTooLarge(
            "body", f"body: {count} items, a batch holds at most {MAX_BATCH_ITEMS}; split it"
        )


def validate_item(item: object) -> dict:
    """One batch item: must be a JSON object, then as :func:`validate`."""
    if isinstance(item, PostbackError):
        raise item
    if not isinstance(item, dict):
        raise PostbackError("item", f"item: must be a JSON object, not {_json_type(item)}")
    return validate(item)
