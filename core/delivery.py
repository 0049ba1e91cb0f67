"""A delivery's answer: judging it, when to retry, and what the forwarded log records.

Plain functions over plain values (the request itself is built by
``core.delivery_request``); ``processors.forwarder`` does the I/O around them.

    >>> classify_status(503), classify_status(404)
    ('retry', 'failed')
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import orjson

from core.delivery_request import DeliveryRequest

RESPONSE_BODY_CHARS = 500
#: Each retry's delay is the schedule's step times a factor in [1 - JITTER, 1 + JITTER].
JITTER = 0.15
#: A partner's Retry-After is honoured up to this many seconds (the default's longest step).
RETRY_AFTER_CAP_S = 43200.0

DELIVERED, RETRY, FAILED, DEAD_LETTERED = "delivered", "retry", "failed", "dead-lettered"


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
