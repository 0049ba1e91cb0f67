"""The conversions for people, read through each partition's time index.

``postback export --log conversions`` walks them oldest first in chunks, merged across
partitions; the admin API and CLI show one conversion with its source by name.

    >>> for data in conversions(client, keys, Window.last_hours(24), partner="p1"):
    ...     print(conversion_row(data, source_names(client, keys))["payout"])
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator

import redis

from storage.keys import Keys
from storage.logs.fields import mask_key
from storage.logs.window import Window, iso_ms
from storage.repositories import NotFound, conversion_public
from storage.stream_reader import CHUNK

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
