"""The received log for people: its rows, its filters, and the source names rows show.

A source key is a secret, so rows carry the source's *name* and only the last four
characters of its key (``source_key``: "…x7Qa").

    >>> where = ReceivedFilter(outcome="matched")
    >>> names = source_names(client, keys)
    >>> for entry in received_entries(client, keys, Window.last_hours(24), where):
    ...     print(received_row(entry, names)["payout"])
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import redis

from storage.keys import Keys
from storage.logs.fields import int_field, json_field, mask_key
from storage.logs.merge import log_entries
from storage.logs.window import Window, iso_ms
from storage.stream_reader import Entry, id_ms

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
    params = json_field(fields.get("params"), {})
    if not isinstance(params, dict):
        params = {"raw": params}
    ms = int_field(fields.get("time")) or id_ms(entry_id)
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
                status = str(json_field(fields.get("params"), {}).get("status", ""))
            if status.lower() != self.status.lower():
                return False
        return True


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


def received_entries(
    client: redis.Redis, keys: Keys, window: Window, where=None, **options
) -> Iterator[Entry]:
    streams = [keys.received_log(n) for n in keys.all_partitions()]
    return log_entries(client, streams, window, where, **options)
