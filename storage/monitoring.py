"""The monitoring read model: lag, pending entries, lease holders, retries, dead letters
and paused partners, per stream and group of every partition.

One read (:func:`collect`) that ``postback lag``, ``/metrics``, the diagnostic endpoint and
the admin page's lag panel all show. Lag is ``XINFO GROUPS``'s ``lag`` where Redis knows
it, else counted by :func:`count_lag`.
"""

from __future__ import annotations

import time

import redis

from storage.keys import FORWARDER_GROUP, MATCHER_GROUP, Keys
from storage.partner_health import paused_partners as read_paused
from storage.redis_client import UNAVAILABLE
from storage.stream_reader import id_ms

#: Most entries read to count a lag Redis cannot report (null after XDEL or trimming).
COUNT_LIMIT = 10_000


def expected_groups(keys: Keys) -> list[tuple[str, str]]:
    pairs = []
    for n in keys.all_partitions():
        pairs.append((keys.input_stream(n), MATCHER_GROUP))
        pairs.append((keys.forward_stream(n), FORWARDER_GROUP))
    return pairs


def collect(client: redis.Redis, keys: Keys, now_ms: int | None = None) -> dict:
    """The lag report: ``{"groups": [...], "retry_queue": N, "dead_letters": N,
    "paused_partners": [...]}``. Reads only; a missing stream or group shows as empty."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    pairs = expected_groups(keys)
    streams = list(dict.fromkeys(stream for stream, _ in pairs))

    pipe = client.pipeline(transaction=False)
    for stream in streams:
        pipe.xlen(stream)
        pipe.xinfo_groups(stream)
    for n in keys.all_partitions():
        pipe.zcard(keys.retry_queue(n))
        pipe.xlen(keys.dead_letters(n))
    leases = [(keys.input_stream(n), MATCHER_GROUP) for n in keys.all_partitions()]
    leases += [(keys.forward_stream(n), FORWARDER_GROUP) for n in keys.all_partitions()]
    for n in keys.all_partitions():
        pipe.get(keys.lease(n, MATCHER_GROUP))
    for n in keys.all_partitions():
        pipe.get(keys.lease(n, FORWARDER_GROUP))
    replies = pipe.execute(raise_on_error=False)
    _raise_unavailable(replies)
    holder_replies = replies[len(replies) - len(leases) :]
    replies = replies[: len(replies) - len(leases)]
    holders = {
        pair: (held if isinstance(held, str) else "")
        for pair, held in zip(leases, holder_replies, strict=True)
    }

    infos: dict[str, tuple[int, list[dict]]] = {}
    for i, stream in enumerate(streams):
        length, groups = replies[2 * i], replies[2 * i + 1]
        infos[stream] = (
            length if isinstance(length, int) else 0,
            groups if isinstance(groups, list) else [],  # no such key: not created yet
        )
    tail = replies[2 * len(streams) :]
    retry_queue = sum(int(v) for v in tail[0::2] if isinstance(v, int))
    dead_letters = sum(int(v) for v in tail[1::2] if isinstance(v, int))

    rows = []
    for stream, group in pairs:
        length, groups = infos[stream]
        found = {g["name"]: g for g in groups}
        rows.append((stream, length, found.pop(group, None), group))
        # Groups someone else created on our streams are shown too.
        rows.extend((stream, length, info, info["name"]) for info in found.values())
    groups = _group_details(client, rows, now_ms)
    for row in groups:  # which process works this partition for this group (SPEC §9)
        row["holder"] = holders.get((row["stream"], row["group"]), "")
    return {
        "groups": groups,
        "retry_queue": retry_queue,
        "dead_letters": dead_letters,
        "paused_partners": paused_partners(client, keys),
    }


def _group_details(client: redis.Redis, rows: list, now_ms: int) -> list[dict]:
    pipe = client.pipeline(transaction=False)
    for stream, _, info, group in rows:
        if info is not None:
            pipe.xpending(stream, group)
            pipe.xinfo_consumers(stream, group)
    replies = iter(pipe.execute(raise_on_error=False))
    details = []
    for stream, length, info, group in rows:
        if info is None:  # created at ID 0 when first touched, so everything is unread
            details.append(_row(stream, group, length, length, 0, 0.0, []))
            continue
        pending_summary, consumers = next(replies), next(replies)
        _raise_unavailable([pending_summary, consumers])
        pending = int(info.get("pending") or 0)
        oldest = 0.0
        if isinstance(pending_summary, dict) and pending_summary.get("min"):
            oldest = max(0.0, (now_ms - id_ms(pending_summary["min"])) / 1000)
        lag = info.get("lag")
        if not isinstance(lag, int) or lag > length:
            # Null after XDEL/trimming, absent before Redis 7, too high after trimming.
            lag = count_lag(client, stream, info.get("last-delivered-id") or "0-0", length, pending)
        consumer_rows = [
            {
                "name": c["name"],
                "pending": int(c.get("pending") or 0),
                "idle_s": round(int(c.get("idle") or 0) / 1000, 3),
            }
            for c in (consumers if isinstance(consumers, list) else [])
        ]
        details.append(_row(stream, group, length, lag, pending, oldest, consumer_rows))
    return details


def _row(stream, group, length, lag, pending, oldest, consumers) -> dict:
    return {
        "stream": stream,
        "group": group,
        "length": int(length),
        "lag": int(lag),
        "pending": int(pending),
        "oldest_pending_s": round(float(oldest), 3),
        "consumers": consumers,
    }


def count_lag(
    client: redis.Redis,
    stream: str,
    last_delivered_id: str,
    length: int,
    pending: int,
    limit: int = COUNT_LIMIT,
) -> int:
    """Entries after the group's last-delivered ID, counted when Redis cannot say.

    Reads at most ``limit`` entries; past that, the stream length minus the pending
    entries (exact when processed entries are deleted, as the matcher does).
    """
    after = client.xrange(stream, min="(" + last_delivered_id, max="+", count=limit)
    if len(after) < limit:
        return len(after)
    return max(limit, length - pending)


def paused_partners(client: redis.Redis, keys: Keys) -> list[dict]:
    """Paused partners as the forwarder's partner health reports them (none if absent)."""
    return list(read_paused(client, keys))


def _raise_unavailable(replies: list) -> None:
    for reply in replies:
        if isinstance(reply, UNAVAILABLE):
            raise reply


def over_limit(report: dict, max_lag: int) -> list[str]:
    """The groups whose lag or pending count exceeds ``max_lag``."""
    return [
        f"{g['stream']}/{g['group']}"
        for g in report["groups"]
        if g["lag"] > max_lag or g["pending"] > max_lag
    ]


def duration(seconds: float) -> str:
    """12.3 → '12.3s', 725 → '12m05s', 11520 → '3h12m', 183600 → '2d03h'."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    seconds = int(seconds)
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"
