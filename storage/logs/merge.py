"""One log read across its partitions: each partition's stream in chunks, inside a time
window, merged in time order with a heap, so nothing holds more than a chunk per partition.

    >>> streams = [keys.received_log(n) for n in keys.all_partitions()]
    >>> for entry_id, fields in log_entries(client, streams, Window.last_hours(1)):
    ...     print(entry_id, fields["outcome"])
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Iterator

import redis

from storage.logs.fields import int_field
from storage.logs.window import Window
from storage.stream_reader import CHUNK, Entry, id_order, read_range


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
    return int_field(fields.get("time")) or ms, ms, seq


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
