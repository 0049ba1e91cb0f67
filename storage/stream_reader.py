"""Reading a stream in chunks: one XRANGE (or XREVRANGE) of ``chunk`` entries at a time.

The one chunked reader: the logs (admin pages, ``postback export``) and the dead
letters read through it, so a long stream is never fetched whole.

    >>> for entry_id, fields in read_range(client, keys.received_log(0), "1714000000000-0"):
    ...     print(entry_id, fields["log_id"])
"""

from __future__ import annotations

from collections.abc import Iterator

import redis

CHUNK = 1000

Entry = tuple[str, dict[str, str]]


def read_range(
    client: redis.Redis,
    stream: str,
    low: str = "-",
    high: str = "+",
    *,
    newest_first: bool = False,
    chunk: int = CHUNK,
) -> Iterator[Entry]:
    """Entries of ``stream`` from ``low`` to ``high`` (inclusive, as XRANGE takes them).

    Oldest first, or newest first with ``newest_first``. Each chunk after the first
    starts just past the last entry seen, so no entry is read twice, and memory holds
    one chunk however long the stream.
    """
    while True:
        if newest_first:
            batch = client.xrevrange(stream, max=high, min=low, count=chunk)
        else:
            batch = client.xrange(stream, min=low, max=high, count=chunk)
        yield from batch
        if len(batch) < chunk:
            return
        # Exclusive ranges ("(id") continue after the last entry seen (Redis >= 6.2).
        if newest_first:
            high = "(" + batch[-1][0]
        else:
            low = "(" + batch[-1][0]


def id_ms(entry_id: str) -> int:
    """The unix ms an entry was added at: ``"1714000000000-3"`` → ``1714000000000``."""
    return int(entry_id.partition("-")[0])


def id_order(entry_id: str) -> tuple[int, int]:
    """An entry ID as a sort key, ``(ms, sequence)``: IDs do not sort as strings."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)
