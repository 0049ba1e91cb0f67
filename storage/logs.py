"""Reading the received and forwarded logs and the conversions, for people.

Shared by the admin API (newest-first pages with filters and totals) and ``postback
export`` (oldest-first chunked iteration in flat memory). Both walk each partition's
stream in chunks bounded by a time window expressed as stream IDs, and merge the
partitions in time order with a heap, so nothing holds more than a chunk per partition.

    >>> window = Window.last_hours(24)
    >>> where = ReceivedFilter(outcome="matched")
    >>> for entry in received_entries(client, keys, window, where, newest_first=True):
    ...     print(received_row(entry, source_names(client, keys))["payout"])

Rows are plain JSON-ready dicts: amounts as "2.80" strings, times as ISO 8601 UTC plus
``time_ms``. A source key is a secret, so rows carry the source's *name* and only the
last four characters of its key (``source_key``: "…x7Qa").
"""

from __future__ import annotations

import heapq
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache

import orjson
import redis

from core.flags import is_true
from storage.keys import Keys
from storage.repositories import NotFound, conversion_public
from storage.stream_reader import CHUNK, Entry, id_ms, id_order, read_range


# -- time windows ------------------------------------------------------------------------
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


# -- chunked reading -----------------------------------------------------------------------
def iter_stream(
    client: redis.Redis,
    stream: str,
    window: Window,
    *,
    newest_first: bool = False,
    chunk: int = CHUNK,
) -> Iterator[Entry]:
    """Entries of ``stream`` inside ``window``, one XRANGE/XREVRANGE of ``chunk`` at a time."""
    return read_range(
        client, stream, window.min_id, window.max_id, newest_first=newest_first, chunk=chunk
    )


def merge_streams(
    client: redis.Redis,
    streams: Iterable[str],
    window: Window,
    *,
    newest_first: bool = False,
    chunk: int = CHUNK,
) -> Iterator[Entry]:
    """Several partitions' streams as one, in time order (a heap merge of chunked reads).

    The order is each entry's ``time`` (the postback's time in the received log, the
    attempt's in the forwarded log), then its ID: partitions are processed in turns, so
    the IDs (when an entry was written) interleave differently from the times people
    read. Within one partition both orders agree (a redelivered entry aside).
    """
    iterators = [
        iter_stream(client, stream, window, newest_first=newest_first, chunk=chunk)
        for stream in streams
    ]
    if len(iterators) == 1:
        return iterators[0]
    return heapq.merge(*iterators, key=_time_key, reverse=newest_first)


def _time_key(entry: Entry) -> tuple[int, int, int]:
    entry_id, fields = entry
    ms, seq = id_order(entry_id)
    return _int(fields.get("time")) or ms, ms, seq


def iter_conversion_hashes(
    client: redis.Redis, keys: Keys, n: int, window: Window, *, chunk: int = CHUNK
) -> Iterator[dict[str, str]]:
    """Conversion hashes of partition ``n`` created in ``window``, oldest first.

    ZRANGEBYSCORE pages by score, not by offset, so each chunk costs the same however
    deep the export is; members sharing the last score are skipped by count.
    """
    index = keys.conversion_index(n)
    low: float = window.start_ms
    skip = 0
    while True:
        members = client.zrangebyscore(
            index, low, f"({window.end_ms}", start=skip, num=chunk, withscores=True
        )
        if not members:
            return
        pipe = client.pipeline(transaction=False)
        for conversion_id, _ in members:
            pipe.hgetall(keys.conversion(n, conversion_id))
        for (conversion_id, score), data in zip(members, pipe.execute(), strict=True):
            if data:  # an index entry may outlive its hash (expiry)
                data.setdefault("conversion_id", conversion_id)
                data.setdefault("created", str(int(score)))
                yield data
        if len(members) < chunk:
            return
        last = members[-1][1]
        same = sum(1 for _, score in members if score == last)
        skip = skip + same if last == low else same
        low = last


def merge_conversions(
    client: redis.Redis, keys: Keys, window: Window, *, chunk: int = CHUNK
) -> Iterator[dict[str, str]]:
    iterators = [
        iter_conversion_hashes(client, keys, n, window, chunk=chunk) for n in keys.all_partitions()
    ]
    return heapq.merge(
        *iterators, key=lambda data: (int(data.get("created") or 0), data["conversion_id"])
    )


# -- rows as people read them --------------------------------------------------------------
def mask_key(source_key: str) -> str:
    """Only the last four characters of a source key: the key itself is a secret."""
    return "…" + source_key[-4:] if source_key else ""


def _json(raw: str | None, default):
    if not raw:
        return default
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw  # shown as written rather than dropped


def _int(raw: str | None) -> int | None:
    try:
        return int(raw) if raw not in (None, "") else None
    except ValueError:
        return None


RECEIVED_COLUMNS = (
    "log_id",
    "time",
    "time_ms",
    "source",
    "source_key",
    "method",
    "ip",
    "status",
    "outcome",
    "reason",
    "conversion_id",
    "click_id",
    "offer_id",
    "partner_id",
    "user_id",
    "matched_by",
    "warning",
    "transaction_id",
    "goal",
    "payout",
    "currency",
    "params",
)


def received_row(entry: Entry, source_names: dict[str, str]) -> dict:
    entry_id, fields = entry
    params = _json(fields.get("params"), {})
    if not isinstance(params, dict):
        params = {"raw": params}
    ms = _int(fields.get("time")) or id_ms(entry_id)
    source_key = fields.get("source", "")
    return {
        "log_id": fields.get("log_id") or entry_id,
        "time": iso_ms(ms),
        "time_ms": ms,
        "source": source_names.get(source_key, ""),
        "source_key": mask_key(source_key),
        "method": fields.get("method", ""),
        "ip": fields.get("ip", ""),
        "status": fields.get("status") or params.get("status", ""),
        "outcome": fields.get("outcome", ""),
        "reason": fields.get("reason", ""),
        "conversion_id": fields.get("conversion_id", ""),
        "click_id": fields.get("click_id") or params.get("click_id", ""),
        "offer_id": fields.get("offer_id") or params.get("offer_id", ""),
        "partner_id": fields.get("partner_id", ""),
        "user_id": fields.get("user_id", ""),
        "matched_by": fields.get("matched_by", ""),
        "warning": fields.get("warning", ""),
        "transaction_id": params.get("transaction_id", ""),
        "goal": params.get("goal", ""),
        "payout": str(params.get("payout", "")),
        "currency": params.get("currency", ""),
        "params": params,
    }


FORWARDED_COLUMNS = (
    "id",
    "time",
    "time_ms",
    "partner_id",
    "partner_name",
    "partner_email",
    "method",
    "url",
    "success",
    "result",
    "status_code",
    "response_ms",
    "attempt",
    "error",
    "response_body",
    "log_id",
    "conversion_id",
    "payout",
    "payload",
)


def forwarded_row(entry: Entry) -> dict:
    entry_id, fields = entry
    payload = _json(fields.get("payload"), {})
    ms = _int(fields.get("time")) or id_ms(entry_id)
    return {
        "id": entry_id,
        "time": iso_ms(ms),
        "time_ms": ms,
        "partner_id": fields.get("partner_id", ""),
        "partner_name": fields.get("partner_name", ""),
        "partner_email": fields.get("partner_email", ""),
        "method": fields.get("method", ""),
        "url": fields.get("url", ""),
        "success": is_true(fields.get("success")),
        "result": fields.get("result", ""),
        "status_code": _int(fields.get("status_code")),
        "response_ms": _int(fields.get("response_ms")),
        "attempt": _int(fields.get("attempt")),
        "error": fields.get("error", ""),
        "response_body": fields.get("response_body", ""),
        "log_id": fields.get("log_id", ""),
        "conversion_id": fields.get("conversion_id", ""),
        "payout": str(payload.get("payout", "")) if isinstance(payload, dict) else "",
        "payload": payload,
    }


CONVERSION_COLUMNS = (
    "conversion_id",
    "created",
    "created_ms",
    "updated",
    "status",
    "source",
    "source_key",
    "click_id",
    "offer_id",
    "partner_id",
    "user_id",
    "transaction_id",
    "goal",
    "payout",
    "partner_payout",
    "credited",
    "held",
    "currency",
    "matched_by",
    "warning",
    "survey_id",
    "log_id",
    "custom",
    "history",
)


def shown_conversion(store, conversion_id: str) -> dict:
    """A conversion for the admin API and ``postback admin conversion show``.

    Its source appears by name, and its key only by the last four characters, as in
    the logs: the full key is the source's secret (whoever reads it can post as it).
    """
    conversion = store.get_conversion(conversion_id)
    source_key = conversion.pop("source", "")
    try:
        conversion["source"] = store.get_source(source_key).name if source_key else ""
    except NotFound:
        conversion["source"] = ""
    conversion["source_key"] = mask_key(source_key)
    return conversion


def conversion_row(data: dict[str, str], source_names: dict[str, str]) -> dict:
    public = conversion_public(data)
    source_key = public.pop("source", "")
    created = int(public.get("created") or 0)
    updated = int(public.get("updated") or 0)
    row = {column: public.get(column, "") for column in CONVERSION_COLUMNS}
    row.update(
        created=iso_ms(created) if created else "",
        created_ms=created,
        updated=iso_ms(updated) if updated else "",
        source=source_names.get(source_key, ""),
        source_key=mask_key(source_key),
    )
    return row


# -- filters ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class ReceivedFilter:
    """``source`` is a set of source keys (resolved from a key or name by the caller)."""

    sources: frozenset[str] | None = None
    status: str | None = None
    outcome: str | None = None
    partner: str | None = None

    def __call__(self, entry: Entry) -> bool:
        fields = entry[1]
        if self.sources is not None and fields.get("source") not in self.sources:
            return False
        if self.outcome and fields.get("outcome") != self.outcome:
            return False
        if self.partner and fields.get("partner_id") != self.partner:
            return False
        if self.status:
            status = fields.get("status")
            if status is None:
                status = str(_json(fields.get("params"), {}).get("status", ""))
            if status.lower() != self.status.lower():
                return False
        return True


@dataclass(frozen=True)
class ForwardedFilter:
    partner: str | None = None
    success: bool | None = None

    def __call__(self, entry: Entry) -> bool:
        fields = entry[1]
        if self.partner and fields.get("partner_id") != self.partner:
            return False
        return not (self.success is not None and is_true(fields.get("success")) != self.success)


def source_keys_matching(names: dict[str, str], wanted: str) -> frozenset[str]:
    """Source keys whose key or name is ``wanted`` (names compare case-insensitively).

    ``names`` is :func:`source_names`. ``wanted`` itself is kept as a possible key, so
    the log of a source since removed can still be searched by its key.
    """
    lowered = wanted.strip().lower()
    return frozenset({key for key, name in names.items() if name.lower() == lowered} | {wanted})


def source_names(client: redis.Redis, keys: Keys) -> dict[str, str]:
    """Every source key → its name, in one pipelined round trip."""
    source_keys = sorted(client.smembers(keys.sources_index()))
    pipe = client.pipeline(transaction=False)
    for key in source_keys:
        pipe.hget(keys.source(key), "name")
    return {key: name or "" for key, name in zip(source_keys, pipe.execute(), strict=True)}


# -- what the admin API and the export command call -----------------------------------------
def log_entries(
    client: redis.Redis,
    streams: list[str],
    window: Window,
    where: Callable[[Entry], bool] | None = None,
    *,
    newest_first: bool = False,
    chunk: int = CHUNK,
) -> Iterator[Entry]:
    """Entries of one log's partition ``streams`` in ``window``, merged in time order."""
    entries = merge_streams(client, streams, window, newest_first=newest_first, chunk=chunk)
    return entries if where is None else filter(where, entries)


def received_entries(
    client: redis.Redis, keys: Keys, window: Window, where=None, **options
) -> Iterator[Entry]:
    streams = [keys.received_log(n) for n in keys.all_partitions()]
    return log_entries(client, streams, window, where, **options)


def forwarded_entries(
    client: redis.Redis, keys: Keys, window: Window, where=None, **options
) -> Iterator[Entry]:
    streams = [keys.forwarded_log(n) for n in keys.all_partitions()]
    return log_entries(client, streams, window, where, **options)


def conversions(
    client: redis.Redis,
    keys: Keys,
    window: Window,
    *,
    partner: str | None = None,
    chunk: int = CHUNK,
) -> Iterator[dict[str, str]]:
    found = merge_conversions(client, keys, window, chunk=chunk)
    if partner:
        return (data for data in found if data.get("partner_id") == partner)
    return found


class Scan:
    """Entries passed through, stopping after ``limit`` of them; says if it stopped early.

    The admin pages count every match to give exact totals; the limit keeps one request
    on a busy relay from reading a whole day of logs.
    """

    def __init__(self, entries: Iterable[Entry], limit: int | None = None) -> None:
        self.entries, self.limit = entries, limit
        self.read = 0
        self.truncated = False

    def __iter__(self) -> Iterator[Entry]:
        for entry in self.entries:
            if self.limit is not None and self.read >= self.limit:
                self.truncated = True
                return
            self.read += 1
            yield entry


@dataclass
class Page:
    rows: list
    page: int
    per_page: int
    total: int

    @property
    def pages(self) -> int:
        return -(-self.total // self.per_page)

    def envelope(self) -> dict:
        return {"logs": self.rows, "page": self.page, "pages": self.pages, "total": self.total}


def paginate(entries: Iterable[Entry], page: int, per_page: int, to_row: Callable) -> Page:
    """One page of ``entries`` (already newest first) and the total that matched.

    Every matching entry is counted, but only the page's own entries are turned into
    rows, so memory stays at one page and one chunk per partition.
    """
    first = (page - 1) * per_page
    rows: list = []
    total = 0
    for entry in entries:
        if first <= total < first + per_page:
            rows.append(to_row(entry))
        total += 1
    return Page(rows, page, per_page, total)
