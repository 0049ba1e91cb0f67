"""The admin HTTP API (SPEC §7): logs, diagnostics, test distribution, users and
conversions. Sources, offers and partners are in ``edge.admin_config``; the token check
and query parameters both use are in ``edge.admin_auth``.

Logs answer ``{"logs": [...], "page": P, "pages": N, "total": T}``, newest first; a
source is shown by name with only the last four characters of its key.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import falcon
import orjson

from core.flags import is_true
from core.postback import STATUSES
from edge.admin_auth import (
    AdminResource,
    authorize,
    bool_param,
    choice_param,
    hours_param,
    paging,
)
from edge.context import EdgeContext
from processors.payload import build_payload
from scripts import lag
from storage import logs
from storage.formats import OUTCOMES

#: Most log entries one page request reads (to count the total); past it the answer
#: says ``"truncated": true`` and counts only the newest entries of the window.
MAX_SCAN = 200_000
#: The diagnostic endpoint looks at the last hour, reading at most this many entries.
RECENT_HOURS = 1
RECENT_CAP = 10_000
LATEST = 5
#: Health turns "degraded" past these.
DEGRADED_LAG = 10_000
DEGRADED_PENDING_AGE_S = 300.0
DEGRADED_FAILURE_SHARE = 0.5


# -- logs and diagnostics ---------------------------------------------------------------------
@falcon.before(authorize)
class ReceivedPostbacks(AdminResource):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        window = logs.Window.last_hours(hours_param(req))
        page, per_page = paging(req)
        status = choice_param(req, "status", STATUSES)
        outcome = choice_param(req, "outcome", OUTCOMES)
        r, keys = self.ctx.redis, self.ctx.keys
        names = logs.source_names(r, keys)
        source = (req.get_param("source") or "").strip()
        where = logs.ReceivedFilter(
            sources=logs.source_keys_matching(names, source) if source else None,
            status=status,
            outcome=outcome,
            partner=(req.get_param("partner") or "").strip() or None,
        )
        scan = logs.Scan(logs.received_entries(r, keys, window, newest_first=True), MAX_SCAN)
        found = logs.paginate(
            filter(where, scan), page, per_page, lambda e: logs.received_row(e, names)
        )
        resp.media = _envelope(found, scan)


@falcon.before(authorize)
class DistributionLogs(AdminResource):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        window = logs.Window.last_hours(hours_param(req))
        page, per_page = paging(req)
        where = logs.ForwardedFilter(
            partner=(req.get_param("partner") or "").strip() or None,
            success=bool_param(req, "success"),
        )
        r, keys = self.ctx.redis, self.ctx.keys
        scan = logs.Scan(logs.forwarded_entries(r, keys, window, newest_first=True), MAX_SCAN)
        found = logs.paginate(filter(where, scan), page, per_page, logs.forwarded_row)
        resp.media = _envelope(found, scan)


def _envelope(found: logs.Page, scan: logs.Scan) -> dict:
    out = found.envelope()
    if scan.truncated:
        out["truncated"] = True
    return out


def recent(entries: Iterable, to_row: Callable, failed: Callable | None = None) -> dict:
    """Count of ``entries`` (up to RECENT_CAP), failures among them, and the latest rows."""
    count = failures = 0
    latest = []
    for entry in entries:
        if count == RECENT_CAP:
            break
        count += 1
        if failed is not None and failed(entry):
            failures += 1
        if len(latest) < LATEST:
            latest.append(to_row(entry))
    out = {"window_hours": RECENT_HOURS, "count": count, "capped": count == RECENT_CAP}
    if failed is not None:
        out["failed"] = failures
    out["latest"] = latest
    return out


def health_reasons(report: dict, active_partners: int, deliveries: dict) -> list[str]:
    """Why the relay is degraded; empty when it is ok."""
    reasons = []
    if active_partners == 0:
        reasons.append("no active partners: conversions are not forwarded")
    for p in report.get("paused_partners") or []:
        reasons.append(f"partner {p.get('partner_id')} is paused after repeated failures")
    for g in report["groups"]:
        if g["lag"] > DEGRADED_LAG:
            reasons.append(f"{g['stream']}/{g['group']} is {g['lag']} entries behind")
        if g["pending"] and g["oldest_pending_s"] > DEGRADED_PENDING_AGE_S:
            reasons.append(
                f"{g['stream']}/{g['group']} has entries pending for {lag.duration(g['oldest_pending_s'])}"
            )
    count, failed = deliveries["count"], deliveries.get("failed", 0)
    if count >= 10 and failed / count > DEGRADED_FAILURE_SHARE:
        reasons.append(f"{failed} of the last {count} delivery attempts failed")
    return reasons


def _failed(entry) -> bool:
    return not is_true(entry[1].get("success"))


@falcon.before(authorize)
class DistributionStatus(AdminResource):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        r, keys = self.ctx.redis, self.ctx.keys
        report = lag.collect(r, keys)
        partners = self.ctx.store.list_partners()
        active = sum(1 for p in partners if p.active)
        window = logs.Window.last_hours(RECENT_HOURS)
        names = logs.source_names(r, keys)
        received = recent(
            logs.received_entries(r, keys, window, newest_first=True),
            lambda e: logs.received_row(e, names),
        )
        deliveries = recent(
            logs.forwarded_entries(r, keys, window, newest_first=True),
            logs.forwarded_row,
            failed=_failed,
        )
        reasons = health_reasons(report, active, deliveries)
        resp.media = {
            "health": "degraded" if reasons else "ok",
            "reasons": reasons,
            "active_partners": active,
            "partners": len(partners),
            "recent_received": received,
            "recent_deliveries": deliveries,
            "streams": report["groups"],
            "retry_queue": report["retry_queue"],
            "dead_letters": report["dead_letters"],
            "paused_partners": report["paused_partners"],
        }


# -- test distribution ------------------------------------------------------------------------
def queue_test_distribution(ctx: EdgeContext) -> dict:
    """One ``test`` forward job per active partner on partition 0's forward stream."""
    now_ms = int(time.time() * 1000)
    click_id = f"TEST-{now_ms}"
    payload = build_payload(
        status="test",
        payout="1.00",
        timestamp=now_ms // 1000,
        click_id=click_id,
        currency="USD",
        offer_id="TEST-OFFER",
        transaction_id=click_id,
    )
    partners = [p for p in ctx.store.list_partners() if p.active]
    stream = ctx.keys.forward_stream(0)
    pipe = ctx.redis.pipeline(transaction=True)  # all queued or none
    for partner in partners:
        # A forward job as storage.formats writes it; no received postback behind it.
        job = {
            "partner_id": partner.partner_id,
            "payload": payload,
            "log_id": "",
            "conversion_id": "",
            "attempt": 1,
            "created": now_ms,
        }
        pipe.xadd(stream, {"job": orjson.dumps(job)})
    job_ids = pipe.execute() if partners else []
    queued = [
        {"partner_id": p.partner_id, "name": p.name, "method": p.method, "job_id": job_id}
        for p, job_id in zip(partners, job_ids, strict=True)
    ]
    return {
        "status": "success",
        "message": f"test postback queued for {len(queued)} active partner(s)",
        "click_id": click_id,
        "payload": payload,
        "queued": queued,
        "count": len(queued),
    }


@falcon.before(authorize)
class TestDistribution(AdminResource):
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = queue_test_distribution(self.ctx)


@falcon.before(authorize)
class TestDistributionNow(AdminResource):
    """The older ``GET /test-distribution-now`` (seed 002), kept for existing bookmarks."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = queue_test_distribution(self.ctx)


# -- users and conversions -------------------------------------------------------------------
@falcon.before(authorize)
class User(AdminResource):
    def on_get(self, req: falcon.Request, resp: falcon.Response, user_id: str) -> None:
        resp.media = self.ctx.store.user(user_id)


@falcon.before(authorize)
class Conversion(AdminResource):
    def on_get(self, req: falcon.Request, resp: falcon.Response, conversion_id: str) -> None:
        resp.media = conversion_view(self.ctx, conversion_id)


def conversion_view(ctx: EdgeContext, conversion_id: str) -> dict:
    """A conversion for people: its source by name, the key cut to its last four characters."""
    return logs.shown_conversion(ctx.store, conversion_id)


def register(app: falcon.App, ctx: EdgeContext) -> None:
    app.add_route("/api/admin/received-postbacks", ReceivedPostbacks(ctx))
    app.add_route("/api/admin/partner-distribution-logs", DistributionLogs(ctx))
    app.add_route("/api/diagnostic/partner-distribution-status", DistributionStatus(ctx))
    app.add_route("/api/admin/test-distribution", TestDistribution(ctx))
    app.add_route("/test-distribution-now", TestDistributionNow(ctx))
    app.add_route("/api/admin/users/{user_id}", User(ctx))
    app.add_route("/api/admin/conversions/{conversion_id}", Conversion(ctx))
