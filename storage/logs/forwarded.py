"""The forwarded log for people: one row per delivery attempt, and its filter.

>>> where = ForwardedFilter(partner="p1", success=False)
>>> for entry in forwarded_entries(client, keys, Window.last_hours(24), where):
...     print(forwarded_row(entry)["error"])
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import redis

from core.flags import is_true
from storage.keys import Keys
from storage.logs.fields import int_field, json_field
from storage.logs.merge import log_entries
from storage.logs.window import Window, iso_ms
from storage.stream_reader import Entry, id_ms

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
    payload = json_field(fields.get("payload"), {})
    ms = int_field(fields.get("time")) or id_ms(entry_id)
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
        "status_code": int_field(fields.get("status_code")),
        "response_ms": int_field(fields.get("response_ms")),
        "attempt": int_field(fields.get("attempt")),
        "error": fields.get("error", ""),
        "response_body": fields.get("response_body", ""),
        "log_id": fields.get("log_id", ""),
        "conversion_id": fields.get("conversion_id", ""),
        "payout": str(payload.get("payout", "")) if isinstance(payload, dict) else "",
        "payload": payload,
    }


@dataclass(frozen=True)
class ForwardedFilter:
    partner: str | None = None
    success: bool | None = None

    def __call__(self, entry: Entry) -> bool:
        fields = entry[1]
        if self.partner and fields.get("partner_id") != self.partner:
            return False
        return not (self.success is not None and is_true(fields.get("success")) != self.success)


def forwarded_entries(
    client: redis.Redis, keys: Keys, window: Window, where=None, **options
) -> Iterator[Entry]:
    streams = [keys.forwarded_log(n) for n in keys.all_partitions()]
    return log_entries(client, streams, window, where, **options)
