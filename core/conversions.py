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
