"""Signing a delivery, and the check a partner makes (SPEC §5).

Signature recipe (for partners)
-------------------------------
When a partner has a secret, each request carries::

    X-Postback-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<signed>")>

where ``<signed>`` is the raw JSON body for POST, and for GET the query string exactly as
sent (everything after ``?`` in the request line, still URL-encoded). To verify: split the
header on ``,``, recompute the HMAC over ``t + "." + signed`` with the shared secret,
compare in constant time, and refuse a ``t`` more than a few minutes from your clock.
:func:`verify_signature` is that check.

    >>> header = signature_header("shh", 1714000000, b'{"click_id":"C1"}')
    >>> verify_signature("shh", header, b'{"click_id":"C1"}', now=1714000060)
    True
"""

from __future__ import annotations

import hmac
import time

SIGNATURE_HEADER = "X-Postback-Signature"


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
