"""``postback export``: the received or forwarded log, or the conversions, as CSV or JSONL.

Rows are read in chunks (XRANGE with COUNT per partition, or ZRANGEBYSCORE chunks of the
conversion index with pipelined HGETALLs), merged across partitions in time order and
written as they come, so memory stays flat whatever the size of the export.

    postback export --log forwarded --since 2024-05-01 --until 2024-05-07 --success false -o failed.csv
    postback export --log received --hours 1 --format jsonl | jq .outcome
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TextIO

import orjson

from core.config import Settings
from core.flags import parse_flag
from core.numbers import as_argument, positive_number
from core.validation import ValidationError
from storage import logs
from storage.keys import Keys
from storage.redis_client import connect

LOGS = ("received", "forwarded", "conversions")
FORMATS = ("csv", "jsonl")
COLUMNS = {
    "received": logs.RECEIVED_COLUMNS,
    "forwarded": logs.FORWARDED_COLUMNS,
    "conversions": logs.CONVERSION_COLUMNS,
}


def _flag(raw: str) -> bool:
    try:
        return parse_flag(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r}: use true or false") from None


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--log", required=True, choices=LOGS, help="what to export")
    parser.add_argument(
        "--hours",
        type=as_argument(positive_number, maximum=24 * 3650),
        help="the last H hours (default 24)",
    )
    parser.add_argument("--since", metavar="T", help="ISO 8601 start, e.g. 2024-05-01T00:00:00Z")
    parser.add_argument("--until", metavar="T", help="ISO 8601 end (a bare date: that whole day)")
    parser.add_argument("--partner", metavar="P", help="only this partner_id")
    parser.add_argument(
        "--success", type=_flag, metavar="true|false", help="forwarded log: delivered or not"
    )
    parser.add_argument(
        "--format", choices=FORMATS, help="csv (default, or from the -o extension) or jsonl"
    )
    parser.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")


def window_from_args(args: argparse.Namespace, now_ms: int | None = None) -> logs.Window:
    """``--hours`` or ``--since``/``--until``; neither means the last 24 hours."""
    if args.hours is not None and (args.since or args.until):
        raise ValidationError("hours", "give either --hours or --since/--until, not both")
    if args.until and not args.since:
        raise ValidationError("until", "needs --since as well")
    if not args.since:
        return logs.Window.last_hours(args.hours or 24, now_ms)
    try:
        start = logs.parse_time(args.since)
    except logs.TimeError as exc:
        raise ValidationError("since", str(exc)) from None
    if args.until:
        try:
            end = logs.parse_time(args.until, end_of_day=True)
        except logs.TimeError as exc:
            raise ValidationError("until", str(exc)) from None
    else:
        end = (int(time.time() * 1000) if now_ms is None else now_ms) + 1
    if end <= start:
        raise ValidationError("until", "must be after --since")
    return logs.Window(start, end)


def rows_for(client, keys: Keys, args: argparse.Namespace, window: logs.Window) -> Iterator[dict]:
    """The rows to export, oldest first, filters applied."""
    if args.success is not None and args.log != "forwarded":
        raise ValidationError("success", "filters --log forwarded only")
    if args.log == "forwarded":
        where = logs.ForwardedFilter(partner=args.partner, success=args.success)
        return map(logs.forwarded_row, logs.forwarded_entries(client, keys, window, where))
    names = logs.source_names(client, keys)
    if args.log == "received":
        where = logs.ReceivedFilter(partner=args.partner) if args.partner else None
        entries = logs.received_entries(client, keys, window, where)
        return (logs.received_row(entry, names) for entry in entries)
    found = logs.conversions(client, keys, window, partner=args.partner)
    return (logs.conversion_row(data, names) for data in found)


def _cell(value) -> str:
    if isinstance(value, dict | list):
        return orjson.dumps(value).decode()
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def write_csv(rows: Iterable[dict], columns: tuple[str, ...], out: TextIO) -> int:
    writer = csv.writer(out)
    writer.writerow(columns)
    count = 0
    for row in rows:
        # Most cells are already strings; only the rest go through _cell.
        writer.writerow([v if type(v) is str else _cell(v) for v in map(row.get, columns)])
        count += 1
    return count


def write_jsonl(rows: Iterable[dict], out: TextIO) -> int:
    count = 0
    for row in rows:
        out.write(orjson.dumps(row).decode())
        out.write("\n")
        count += 1
    return count


class Progress:
    """Rows so far and the rate, redrawn on one stderr line at most 4 times a second."""

    def __init__(self, stream: TextIO, label: str) -> None:
        self.stream, self.label = stream, label
        self.started = self.drawn = time.monotonic()
        self.count = 0

    def track(self, rows: Iterable[dict]) -> Iterator[dict]:
        for row in rows:
            self.count += 1
            if self.count % 1000 == 0 and time.monotonic() - self.drawn >= 0.25:
                self.draw()
            yield row
        self.draw(final=True)

    def draw(self, final: bool = False) -> None:
        self.drawn = time.monotonic()
        rate = self.count / max(self.drawn - self.started, 1e-6)
        end = "\n" if final else ""
        self.stream.write(f"\r{self.label}: {self.count:,} rows  {rate:,.0f} rows/s\x1b[K{end}")
        self.stream.flush()


def run(settings: Settings, args: argparse.Namespace) -> int:
    fmt = args.format or ("jsonl" if (args.output or "").endswith((".jsonl", ".ndjson")) else "csv")
    window = window_from_args(args)
    # Long reads of big chunks: a generous timeout, still no silent retries.
    client = connect(settings, socket_timeout=60.0)
    keys = Keys(settings.namespace, settings.partitions)
    rows = rows_for(client, keys, args, window)
    if sys.stderr.isatty():
        rows = Progress(sys.stderr, f"export {args.log}").track(rows)

    if not args.output:
        try:
            _write(rows, fmt, args.log, sys.stdout)
            sys.stdout.flush()
        except BrokenPipeError:  # `| head`: the reader has all it wants
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    # A half-written file never takes the real name: write beside it, then rename.
    partial = f"{args.output}.part"
    try:
        out = open(partial, "w", newline="", encoding="utf-8", buffering=1 << 20)  # noqa: SIM115
    except OSError as exc:
        raise ValidationError("output", f"cannot write {args.output}: {exc.strerror}") from None
    try:
        with out:
            _write(rows, fmt, args.log, out)
        os.replace(partial, args.output)
    except BaseException:
        if os.path.exists(partial):
            os.unlink(partial)
        raise
    return 0


def _write(rows: Iterable[dict], fmt: str, log: str, out: TextIO) -> int:
    if fmt == "csv":
        return write_csv(rows, COLUMNS[log], out)
    return write_jsonl(rows, out)
