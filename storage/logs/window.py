"""Time windows of the logs: ``[start, end)`` in unix ms, as stream IDs; ISO 8601 in and out.

>>> Window(1714521600000, 1714608000000).max_id  # 2024-05-01, the whole day
'1714607999999'
>>> parse_time("2024-05-01", end_of_day=True), iso_ms(1714557600123)
(1714608000000, '2024-05-01T10:00:00.123Z')
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache


@dataclass(frozen=True)
class Window:
    """A half-open time range ``[start_ms, end_ms)`` in unix milliseconds."""

    start_ms: int
    end_ms: int

    @classmethod
    def last_hours(cls, hours: float, now_ms: int | None = None) -> Window:
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        return cls(max(0, now_ms - int(hours * 3600 * 1000)), now_ms + 1)

    @property
    def min_id(self) -> str:
        return f"{self.start_ms}-0"

    @property
    def max_id(self) -> str:
        # An incomplete ID as an XRANGE end means "every sequence number of that ms".
        return str(max(0, self.end_ms - 1))

    def contains(self, ms: int) -> bool:
        return self.start_ms <= ms < self.end_ms


class TimeError(ValueError):
    """A time that is not ISO 8601."""


_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def parse_time(text: str, *, end_of_day: bool = False) -> int:
    """ISO 8601 date or datetime → unix ms. ``Z`` or an offset; a naive time is UTC.

    A bare date is midnight UTC, or the next midnight with ``end_of_day`` (so
    ``--until 2024-05-01`` includes the whole of that day).

    >>> parse_time("2024-05-01T12:00:00+02:00")
    1714557600000
    """
    raw = text.strip()
    try:
        if _DATE_ONLY.match(raw):
            day = date.fromisoformat(raw)
            if end_of_day:
                day += timedelta(days=1)
            moment = datetime(day.year, day.month, day.day, tzinfo=UTC)
        else:
            moment = datetime.fromisoformat(raw.replace("z", "Z"))
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
    except ValueError:
        raise TimeError(
            f"{text!r} is not an ISO 8601 date or time (e.g. 2024-05-01 or 2024-05-01T12:00:00Z)"
        ) from None
    return int(moment.timestamp() * 1000)


def iso_ms(ms: int) -> str:
    """Unix ms → ``2024-05-01T12:00:00.123Z``."""
    seconds, millis = divmod(int(ms), 1000)
    return f"{_iso_second(seconds)}.{millis:03d}Z"


@lru_cache(maxsize=4096)
def _iso_second(seconds: int) -> str:
    # Exports format the same second thousands of times; strftime is the slow part.
    return datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
