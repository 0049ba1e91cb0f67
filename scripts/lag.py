"""``postback lag``: how far behind the matcher and forwarder groups are.

Per stream and group (every partition): length, lag, pending, age of the oldest pending
entry, consumers with their pending counts and idle times; then the retry queue, dead
letters and paused partners. ``--json`` prints the shape SPEC §8 names; ``--watch``
redraws in place with a trend; ``--max-lag N`` exits 2 when any group is over N.

:func:`storage.monitoring.collect` is the read; this module renders it.
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
from core.numbers import as_argument, positive_number, whole_number
from storage.keys import Keys
from storage.monitoring import (  # noqa: F401 - the read model, re-exported for the command's users
    COUNT_LIMIT,
    collect,
    count_lag,
    duration,
    expected_groups,
    over_limit,
)
from storage.redis_client import UNAVAILABLE, connect

TREND_WINDOW_S = 600
SPARK = "▁▂▃▄▅▆▇█"
CLEAR = "\x1b[H\x1b[2J"

# Tests replace this to stop a watch without real waiting.
_sleep: Callable[[float], None] = time.sleep


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
def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--watch",
        type=as_argument(positive_number, what="a positive number of seconds"),
        metavar="SECS",
        help="redraw every SECS until Ctrl-C",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--max-lag",
        type=as_argument(whole_number, minimum=0),
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
