"""Conversion identity: which postbacks are the same conversion.

SPEC §4: (source key, transaction_id) when a transaction_id is given, else
(source key, click_id, goal). The id is derived from the identity, so the matcher knows
the conversion's key before it runs its atomic step, and a redelivered postback finds
the same conversion. The partition is part of the id, so a lookup needs no index.

    >>> conversion_id(0, "srcKEY", transaction_id="TXN-1")
    'cv0-...'
"""

from __future__ import annotations

import hashlib


class UnknownConversion(ValueError):
    pass


def identity(source: str, *, transaction_id: str = "", click_id: str = "", goal: str = "") -> str:
    if transaction_id:
        return f"t\x1f{source}\x1f{transaction_id}"
    return f"c\x1f{source}\x1f{click_id}\x1f{goal}"


def routing_identity(source: str, params: dict) -> str:
    """What a postback's partition is derived from (``storage.keys`` partition plan).

    The conversion identity where the postback names it; for a fallback postback (no
    click_id, no transaction_id) the offer and goal stand in for the click it will match.

    >>> routing_identity("srcKEY", {"click_id": "CLK-1", "goal": "install"})
    'c\x1fsrcKEY\x1fCLK-1\x1finstall'
    """
    get = params.get
    if get("transaction_id"):
        return identity(source, transaction_id=str(get("transaction_id")))
    if get("click_id"):
        return identity(source, click_id=str(get("click_id")), goal=str(get("goal") or ""))
    return f"o\x1f{source}\x1f{get('offer_id') or ''}\x1f{get('goal') or ''}"


def conversion_id(
    partition: int, source: str, *, transaction_id: str = "", click_id: str = "", goal: str = ""
) -> str:
    digest = hashlib.sha256(
        identity(source, transaction_id=transaction_id, click_id=click_id, goal=goal).encode()
    ).hexdigest()[:24]
    return f"cv{partition}-{digest}"


def partition_of(conversion_id_: str) -> int:
    """The partition a conversion id was made in: 'cv3-ab12…' → 3."""
    head, sep, _ = conversion_id_.partition("-")
    if not sep or not head.startswith("cv") or not head[2:].isdigit():
        raise UnknownConversion(f"conversion_id: {conversion_id_!r} is not a conversion id")
    return int(head[2:])
