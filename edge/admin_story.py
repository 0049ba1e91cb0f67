"""A postback's whole story and the lag panel, for the admin page (SPEC §7).

    GET /api/admin/postbacks/{log_id}
        → {"postback": <received row> | null, "conversion": {...} | null,
           "deliveries": [<forwarded row>, ...]}   every attempt, oldest first
    GET /api/admin/conversions/{conversion_id}/deliveries
        → {"conversion": {...}, "deliveries": [...]}  every attempt of every event
    GET /api/admin/lag
        → the ``postback lag --json`` report plus ``paused_partners``, ``time_ms``,
          ``totals`` (per group name) and ``history``: samples of the last 10 minutes

Attempts are found by reading the forwarded log from the postback's (or conversion's)
time to now, at most MAX_SCAN entries, so a story is one bounded scan, never a full read.
"""

from __future__ import annotations

import time

import falcon

from edge.admin import conversion_view
from edge.admin_auth import AdminResource, authorize, check_entry_id
from edge.context import EdgeContext
from storage import lag_history, logs, monitoring
from storage.repositories import NotFound

MAX_SCAN = 200_000
#: The lag chart's span.
HISTORY_MS = 10 * 60 * 1000


def attempts(ctx: EdgeContext, since_ms: int, field: str, value: str) -> list[dict]:
    """Forwarded-log rows whose ``field`` is ``value``, from ``since_ms`` on, oldest first."""
    window = logs.Window(since_ms, int(time.time() * 1000) + 1)
    scan = logs.Scan(logs.forwarded_entries(ctx.redis, ctx.keys, window), MAX_SCAN)
    return [logs.forwarded_row(e) for e in scan if e[1].get(field) == value]


def find_received(ctx: EdgeContext, log_id: str, since_ms: int) -> dict | None:
    window = logs.Window(since_ms, int(time.time() * 1000) + 1)
    scan = logs.Scan(logs.received_entries(ctx.redis, ctx.keys, window), MAX_SCAN)
    for entry in scan:
        if entry[1].get("log_id") == log_id:
            return logs.received_row(entry, logs.source_names(ctx.redis, ctx.keys))
    return None


def _conversion_or_none(ctx: EdgeContext, conversion_id: str) -> dict | None:
    if not conversion_id:
        return None
    try:
        return conversion_view(ctx, conversion_id)
    except NotFound:
        return None


@falcon.before(authorize)
class PostbackStory(AdminResource):
    def on_get(self, req: falcon.Request, resp: falcon.Response, log_id: str) -> None:
        since = check_entry_id(log_id, "log_id")
        postback = find_received(self.ctx, log_id, since)
        deliveries = attempts(self.ctx, since, "log_id", log_id)
        if postback is None and not deliveries:
            raise NotFound(f"no postback with log_id {log_id!r} in the logs (not matched yet?)")
        conversion_id = (postback or {}).get("conversion_id") or deliveries[0]["conversion_id"]
        resp.media = {
            "postback": postback,
            "conversion": _conversion_or_none(self.ctx, conversion_id),
            "deliveries": deliveries,
        }


@falcon.before(authorize)
class ConversionDeliveries(AdminResource):
    def on_get(self, req: falcon.Request, resp: falcon.Response, conversion_id: str) -> None:
        conversion = conversion_view(self.ctx, conversion_id)
        since = int(conversion.get("created") or 0)
        resp.media = {
            "conversion": conversion,
            "deliveries": attempts(self.ctx, since, "conversion_id", conversion_id),
        }


@falcon.before(authorize)
class Lag(AdminResource):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        now_ms = int(time.time() * 1000)
        r, keys = self.ctx.redis, self.ctx.keys
        report = monitoring.collect(r, keys, now_ms)
        lag_history.record(r, keys, report, now_ms)
        resp.media = {
            **report,
            "time_ms": now_ms,
            "totals": lag_history.group_totals(report),
            "history": lag_history.read(r, keys, now_ms - HISTORY_MS),
        }


def register(app: falcon.App, ctx: EdgeContext) -> None:
    app.add_route("/api/admin/postbacks/{log_id}", PostbackStory(ctx))
    app.add_route("/api/admin/conversions/{conversion_id}/deliveries", ConversionDeliveries(ctx))
    app.add_route("/api/admin/lag", Lag(ctx))
