"""Liveness, readiness and the public postback self-test (SPEC §3).

* ``GET /health``: the process answers; never touches Redis (for restart probes).
* ``GET /ready``: Redis answers PING; 503 with ``Retry-After`` otherwise (for load
  balancers: take the edge out of rotation while it cannot accept postbacks).
* ``GET /api/analytics/postback/test``: a fixed description senders check against.
"""

from __future__ import annotations

import falcon
import orjson

from edge.context import EdgeContext
from storage.redis_client import ping

_HEALTHY = orjson.dumps({"status": "ok"})
_READY = orjson.dumps({"status": "ready"})
_POSTBACK_TEST = orjson.dumps(
    {
        "status": "online",
        "endpoint": "/postback/{key}",
        "methods": ["GET", "POST"],
        "required_params": ["click_id"],
        "optional_params": ["status", "payout", "transaction_id", "+ any custom fields"],
    }
)


class HealthResource:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.cache_control = ["no-store"]
        resp.data = _HEALTHY


class ReadyResource:
    def __init__(self, ctx: EdgeContext) -> None:
        self.ctx = ctx

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.cache_control = ["no-store"]
        if not ping(self.ctx.redis):
            raise falcon.HTTPServiceUnavailable(description="Redis unreachable", retry_after=5)
        self.ctx.ensure_groups(quiet=True)
        resp.data = _READY


class PostbackTestResource:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.data = _POSTBACK_TEST


def register(app: falcon.App, ctx: EdgeContext) -> None:
    app.add_route("/health", HealthResource())
    app.add_route("/ready", ReadyResource(ctx))
    app.add_route("/api/analytics/postback/test", PostbackTestResource())
