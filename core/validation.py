"""The field rules sources, offers, partners and clicks share, and the error they raise.

The admin command and the admin HTTP API both validate through ``core``, so a bad field
gets the same one-line error from either.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from core.networks import parse_networks

ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,127}$")
CURRENCY_PATTERN = re.compile(r"^[A-Z]{3}$")


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
