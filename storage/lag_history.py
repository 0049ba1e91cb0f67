"""Lag over the last minutes, for the admin page's chart.

Whoever reads the lag report for the admin page offers it here as a sample; at most one
sample per ``every_ms`` is kept (``SET NX PX`` on ``keys.lag_sample_lock()`` picks who
writes, across every edge process and viewer), in a capped stream. Each sample holds, per
consumer group name, the lag and pending summed over the partitions.

    >>> record(client, keys, report, now_ms=1714000000000)
    True
    >>> read(client, keys, since_ms=1713999400000)
    [{'time_ms': 1714000000000, 'groups': {'matcher': {'lag': 3, 'pending': 0}, ...}}]
"""

from __future__ import annotations

import orjson
import redis

from storage.keys import Keys
from storage.stream_reader import id_ms

EVERY_MS = 5000
#: About 20 minutes of samples at one per 5 s.
KEEP = 240


def group_totals(report: dict) -> dict[str, dict[str, int]]:
    """A lag report's groups summed per group name over the partitions."""
    totals: dict[str, dict[str, int]] = {}
    for row in report.get("groups") or []:
        total = totals.setdefault(row["group"], {"lag": 0, "pending": 0})
        total["lag"] += int(row.get("lag") or 0)
        total["pending"] += int(row.get("pending") or 0)
    return totals


def record(
    client: redis.Redis, keys: Keys, report: dict, now_ms: int, every_ms: int = EVERY_MS
) -> bool:
    """Keep ``report`` as a sample unless one was kept in the last ``every_ms``."""
    if not client.set(keys.lag_sample_lock(), now_ms, nx=True, px=every_ms):
        return False
    groups = orjson.dumps(group_totals(report)).decode()
    client.xadd(
        keys.lag_history(), {"time": now_ms, "groups": groups}, maxlen=KEEP, approximate=True
    )
    return True


def read(client: redis.Redis, keys: Keys, since_ms: int) -> list[dict]:
    """Samples since ``since_ms``, oldest first."""
    samples = []
    # Entry ids are Redis's clock, ``time`` the recorder's: read a minute early, then filter.
    for entry_id, fields in client.xrange(
        keys.lag_history(), min=f"{max(0, since_ms - 60_000)}-0", max="+"
    ):
        try:
            time_ms = int(fields["time"]) if fields.get("time") else id_ms(entry_id)
            groups = orjson.loads(fields.get("groups") or "{}")
        except (ValueError, orjson.JSONDecodeError):
            continue
        if time_ms >= since_ms:
            samples.append({"time_ms": time_ms, "groups": groups})
    return samples
