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

One module per job; callers use the names below as ``logs.<name>``:

    window.py            the time window, ISO 8601 times in and out
    merge.py             one log across its partitions, in time order
    received.py          the received log's rows, filter and source names
    forwarded.py         the forwarded log's rows (one per delivery attempt) and filter
    conversion_index.py  the conversions, by their time index
    pages.py             the admin API's pages: exact totals, a bounded scan
    fields.py            decoding fields: numbers, JSON, masked source keys
"""

from storage.logs.conversion_index import (
    CONVERSION_COLUMNS,
    conversion_row,
    conversions,
    iter_conversion_hashes,
    merge_conversions,
    shown_conversion,
)
from storage.logs.fields import mask_key
from storage.logs.forwarded import (
    FORWARDED_COLUMNS,
    ForwardedFilter,
    forwarded_entries,
    forwarded_row,
)
from storage.logs.merge import iter_stream, log_entries, merge_streams
from storage.logs.pages import Page, Scan, paginate
from storage.logs.received import (
    RECEIVED_COLUMNS,
    ReceivedFilter,
    received_entries,
    received_row,
    source_keys_matching,
    source_names,
)
from storage.logs.window import TimeError, Window, iso_ms, parse_time
from storage.stream_reader import CHUNK, Entry, id_ms

__all__ = [
    "CHUNK",
    "CONVERSION_COLUMNS",
    "FORWARDED_COLUMNS",
    "RECEIVED_COLUMNS",
    "Entry",
    "ForwardedFilter",
    "Page",
    "ReceivedFilter",
    "Scan",
    "TimeError",
    "Window",
    "conversion_row",
    "conversions",
    "forwarded_entries",
    "forwarded_row",
    "id_ms",
    "iso_ms",
    "iter_conversion_hashes",
    "iter_stream",
    "log_entries",
    "mask_key",
    "merge_conversions",
    "merge_streams",
    "paginate",
    "parse_time",
    "received_entries",
    "received_row",
    "shown_conversion",
    "source_keys_matching",
    "source_names",
]
