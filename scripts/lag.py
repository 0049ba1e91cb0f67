"""``postback lag``: how far behind the matcher and forwarder groups are.

Per stream and group (every partition): length, lag, pending, age of the oldest pending
entry, consumers with their pending counts and idle times; then the retry queue, dead
letters and paused partners. ``--json`` prints the shape SPEC §8 names; ``--watch``
redraws in place with a trend; ``--max-lag N`` exits 2 when any group is over N.

:func:`collect` is also what ``/metrics`` and the diagnostic endpoint read.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import TextIO

import orjson
import redis

from core.config import Settings
from storage.keys import FORWARDER_GROUP, MATCHER_GROUP, Keys
from storage.redis_client import UNAVAILABLE, connect

#: Most entries read to count a lag Redis cannot report (null after XDEL or trimming).
COUNT_LIMIT = 10_000
TREND_WINDOW_S = 600
SPARK = "▁▂▃▄▅▆▇█"
CLEAR = "\x1b[H\x1b[2J"

# Tests replace this to stop a watch without real waiting.
_sleep: Callable[[float], None] = time.sleep


# -- collecting ------------------------------------------------------------------------------
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
            oldest = max(0.0, (now_ms - int(pending_summary["min"].split("-")[0])) / 1000)
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
    try:
        from storage.partner_health import paused_partners as read_paused
    except ImportError:
        return []
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


# -- trend and rendering (pure) -------------------------------------------------------------
def sparkline(values: list[float], width: int = 20) -> str:
    """Values scaled to ▁..█ between their own min and max; the last ``width`` shown."""
    values = values[-width:]
    if not values:
        return ""
    low, high = min(values), max(values)
    if high == low:
        return SPARK[0] * len(values)
    scale = (len(SPARK) - 1) / (high - low)
    return "".join(SPARK[round((v - low) * scale)] for v in values)


def trend_word(values: list[float]) -> str:
    if len(values) < 2 or values[-1] == values[0]:
        return "steady"
    return "draining" if values[-1] < values[0] else "growing"


class Trend:
    """Lag samples per group over the last ``window_s`` seconds."""

    def __init__(self, window_s: float = TREND_WINDOW_S) -> None:
        self.window_s = window_s
        self.samples: dict[tuple[str, str], deque] = {}

    def add(self, report: dict, at: float) -> None:
        for g in report["groups"]:
            series = self.samples.setdefault((g["stream"], g["group"]), deque())
            series.append((at, g["lag"]))
            while series and series[0][0] < at - self.window_s:
                series.popleft()

    def of(self, stream: str, group: str) -> list[float]:
        return [lag for _, lag in self.samples.get((stream, group), ())]


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


def render_table(report: dict, trend: Trend | None = None) -> str:
    headers = ["STREAM", "GROUP", "LENGTH", "LAG", "PENDING", "OLDEST PENDING", "HOLDER"]
    if trend is not None:
        headers.append("TREND")
    lines: list[list[str]] = []
    consumers: list[list[str]] = []
    for g in report["groups"]:
        row = [
            g["stream"],
            g["group"],
            str(g["length"]),
            str(g["lag"]),
            str(g["pending"]),
            duration(g["oldest_pending_s"]) if g["pending"] else "-",
            g.get("holder") or "-",
        ]
        if trend is not None:
            values = trend.of(g["stream"], g["group"])
            row.append(f"{sparkline(values)} {trend_word(values)}")
        lines.append(row)
        consumers.append(
            [
                f"    consumer {c['name']}: {c['pending']} pending, idle {duration(c['idle_s'])}"
                for c in g["consumers"]
            ]
        )
    widths = [max(len(r[i]) for r in [headers, *lines]) for i in range(len(headers))]
    numeric = {2, 3, 4, 5}

    def fmt(row: list[str]) -> str:
        cells = [
            cell.rjust(widths[i]) if i in numeric else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ]
        return "  ".join(cells).rstrip()

    out = [fmt(headers)]
    for row, consumer_lines in zip(lines, consumers, strict=True):
        out.append(fmt(row))
        out.extend(consumer_lines)
    paused = report.get("paused_partners") or []
    paused_text = ", ".join(_paused_label(p) for p in paused) if paused else "none"
    out.append("")
    out.append(
        f"retry queue: {report['retry_queue']}   dead letters: {report['dead_letters']}"
        f"   paused partners: {paused_text}"
    )
    return "\n".join(out) + "\n"


def _paused_label(partner: dict) -> str:
    label = str(partner.get("partner_id", "?"))
    if partner.get("failures") not in (None, ""):
        label += f" ({partner['failures']} failures)"
    return label


def to_json(report: dict) -> str:
    return orjson.dumps(report, default=str).decode()


# -- the command ------------------------------------------------------------------------------
def _positive_float(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError("must be more than 0 seconds")
    return value


def _non_negative_int(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--watch", type=_positive_float, metavar="SECS", help="redraw every SECS until Ctrl-C"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--max-lag",
        type=_non_negative_int,
        metavar="N",
        help="exit 2 when any group's lag or pending count is over N",
    )


def run(settings: Settings, args: argparse.Namespace) -> int:
    client = connect(settings, socket_timeout=5.0)
    keys = Keys(settings.namespace, settings.partitions)
    if args.watch:
        return watch(client, keys, args.watch, sys.stdout, as_json=args.json)
    report = collect(client, keys)
    sys.stdout.write(to_json(report) + "\n" if args.json else render_table(report))
    if args.max_lag is not None:
        over = over_limit(report, args.max_lag)
        if over:
            print(f"postback lag: over {args.max_lag}: {', '.join(over)}", file=sys.stderr)
            return 2
    return 0


def watch(
    client: redis.Redis,
    keys: Keys,
    interval: float,
    out: TextIO,
    *,
    as_json: bool = False,
    frames: int | None = None,
    clock: Callable[[], float] = time.time,
) -> int:
    """Redraw every ``interval`` seconds until Ctrl-C (or ``frames`` frames); exit 0.

    A lost Redis shows on screen and the watch carries on, so it still works as a
    dashboard through a restart.
    """
    trend = Trend()
    drawn = 0
    try:
        while frames is None or drawn < frames:
            now = clock()
            try:
                report = collect(client, keys, now_ms=int(now * 1000))
            except UNAVAILABLE as exc:
                frame = f"Redis unreachable ({exc}); retrying every {interval:g}s\n"
            else:
                trend.add(report, now)
                frame = to_json(report) + "\n" if as_json else render_table(report, trend)
            if as_json:
                out.write(frame)
            else:
                stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now))
                out.write(f"{CLEAR}postback lag, every {interval:g}s  {stamp}\n\n{frame}")
            out.flush()
            drawn += 1
            if frames is None or drawn < frames:
                _sleep(interval)
    except KeyboardInterrupt:
        out.write("\n")
    return 0
