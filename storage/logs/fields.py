"""Decoding a log entry's fields for people: numbers, JSON, a source key shown masked."""

from __future__ import annotations

import orjson


def mask_key(source_key: str) -> str:
    """Only the last four characters of a source key: the key itself is a secret."""
    return "…" + source_key[-4:] if source_key else ""


def json_field(raw: str | None, default):
    if not raw:
        return default
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw  # shown as written rather than dropped


def int_field(raw: str | None) -> int | None:
    try:
        return int(raw) if raw not in (None, "") else None
    except ValueError:
        return None
