"""What every admin resource shares: the bearer-token hook, the base class, query parameters.

Every admin path needs ``Authorization: Bearer <POSTBACK_ADMIN_TOKEN>`` (compared in
constant time): a missing or wrong token gets 401 (429 for an address past 20 wrong
tokens a minute, ``edge.throttle``); with no token configured the whole
API is off and answers 403, never open. A bad query parameter is a ValidationError, so
the 400 names it.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable

import falcon

from core.flags import parse_flag
from core.validation import ValidationError
from edge import throttle
from edge.context import EdgeContext
from edge.postbacks import caller_ip

MAX_PER_PAGE = 500
MAX_HOURS = 24 * 3650


def authorize(req: falcon.Request, resp: falcon.Response, resource, params) -> None:
    """Falcon hook: the bearer token, or 401; no token configured, 403."""
    token = resource.ctx.settings.admin_token
    if not token:
        raise falcon.HTTPForbidden(
            title="Forbidden", description="admin API is off: set POSTBACK_ADMIN_TOKEN to enable it"
        )
    scheme, _, given = (req.get_header("Authorization") or "").partition(" ")
    given = given.strip()
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), token.encode()):
        refused = falcon.HTTPUnauthorized(
            title="Unauthorized",
            description="missing or wrong token: send Authorization: Bearer <token>",
            challenges=["Bearer"],
        )
        if not given:
            raise refused  # no token at all is not a guess (a page before sign-in)
        throttle.refuse(resource.ctx, "admin", caller_ip(req, resource.ctx), refused)
    resp.cache_control = ["no-store"]  # logs, keys and balances stay out of caches


class AdminResource:
    """An admin resource: holds the context that :func:`authorize` reads the token from."""

    def __init__(self, ctx: EdgeContext) -> None:
        self.ctx = ctx


# -- query parameters (400 names the field) -----------------------------------------------
def int_param(req: falcon.Request, name: str, default: int, low: int, high: int) -> int:
    raw = req.get_param(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValidationError(name, f"must be a whole number, not {raw!r}") from None
    if not low <= value <= high:
        raise ValidationError(name, f"must be from {low} to {high}")
    return value


def hours_param(req: falcon.Request) -> float:
    raw = req.get_param("hours")
    if raw is None or raw.strip() == "":
        return 24.0
    try:
        value = float(raw)
    except ValueError:
        raise ValidationError("hours", f"must be a number of hours, not {raw!r}") from None
    if not 0 < value <= MAX_HOURS:
        raise ValidationError("hours", f"must be more than 0 and at most {MAX_HOURS}")
    return value


def bool_param(req: falcon.Request, name: str) -> bool | None:
    raw = (req.get_param(name) or "").strip().lower()
    if raw == "":
        return None
    try:
        return parse_flag(raw)
    except ValueError as exc:
        raise ValidationError(name, str(exc)) from None


def choice_param(req: falcon.Request, name: str, choices: Iterable[str]) -> str | None:
    raw = (req.get_param(name) or "").strip().lower()
    if raw and raw not in choices:
        raise ValidationError(name, f"must be one of {', '.join(choices)}")
    return raw or None


def paging(req: falcon.Request) -> tuple[int, int]:
    return (
        int_param(req, "page", 1, 1, 1_000_000),
        int_param(req, "per_page", 50, 1, MAX_PER_PAGE),
    )


MAX_ID_PART = 2**64 - 1


def check_entry_id(value: object, name: str) -> int:
    """A stream entry id (``1714000000000-0``, or just the ms) → its ms; else 400 naming it.

    Redis refuses ids past 64 bits with an error, so they are refused here first.
    """
    text = value if isinstance(value, str) else ""
    ms, dash, seq = text.partition("-")
    parts = [ms, seq] if dash else [ms]
    if not all(p.isascii() and p.isdigit() and int(p) <= MAX_ID_PART for p in parts):
        raise ValidationError(name, f"must be an id such as 1714000000000-0, not {value!r}")
    return int(ms)
