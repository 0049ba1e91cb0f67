"""Guessing is throttled (SPEC §3): past 20 refused guesses a minute, an address gets 429.

A guess is an unknown or inactive postback key (kind ``key``) or a wrong admin token
(kind ``admin``). Each refusal adds one to a counter in Redis (``throttle.lua``), so every
edge process sees the same count; the counter expires a minute after the address's first
refused guess. While it is above :data:`LIMIT`, that address's refusals are answered 429
with ``Retry-After`` (the counter's time left) instead of 404/401.

Only a refusal pays for the count: a valid key or token never touches the counter, so
the hot path keeps its single round trip and a valid key from a throttled address still
works (a shared NAT must not lose its good senders to one guesser behind it).

    >>> refuse(ctx, "key", "203.0.113.9", falcon.HTTPNotFound(description="Invalid postback key"))
"""

from __future__ import annotations

import math
from typing import NoReturn

import falcon

from edge.context import EdgeContext

#: Refused guesses an address may make per window before it is answered 429.
LIMIT = 20
#: The window, from the address's first refused guess.
WINDOW_MS = 60_000

_WHAT = {"key": "invalid postback keys", "admin": "wrong admin tokens"}


def refuse(ctx: EdgeContext, kind: str, ip: str, error: falcon.HTTPError) -> NoReturn:
    """Count a refused guess of ``kind`` from ``ip``; raise ``error``, or 429 past the limit."""
    count, left_ms = ctx.scripts.run(
        ctx.redis, "throttle", (ctx.keys.throttle(kind, ip),), (WINDOW_MS,)
    )
    if int(count) > LIMIT:
        retry_after = max(1, math.ceil(int(left_ms) / 1000))
        raise falcon.HTTPTooManyRequests(
            title="Too many requests",
            description=(f"too many {_WHAT[kind]} from {ip}; retry after {retry_after} s"),
            retry_after=retry_after,
        )
    raise error
