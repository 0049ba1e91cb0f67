"""The Falcon app: JSON through orjson, one error shape, resources registered by module."""

from __future__ import annotations

import logging
import threading
import time

import falcon
import orjson
import redis

from core.config import Settings
from core.validation import ValidationError
from edge import (
    admin,
    admin_config,
    admin_deadletters,
    admin_page,
    admin_story,
    clicks,
    health,
    metrics,
    openapi,
    postbacks,
)
from edge.context import EdgeContext
from storage.redis_client import UNAVAILABLE
from storage.repositories import NotFound

log = logging.getLogger(__name__)

#: Each module has ``register(app, ctx)``, which adds its routes.
RESOURCE_MODULES = (
    postbacks,
    clicks,
    health,
    admin,
    admin_config,
    admin_deadletters,
    admin_story,
    admin_page,
    metrics,
    openapi,
)


def _dumps(obj) -> str:
    return orjson.dumps(obj).decode()


class EdgeApp(falcon.App):
    """A Falcon app that carries its :class:`EdgeContext` (``falcon.App`` has slots)."""

    ctx: EdgeContext


def create_app(settings: Settings, client: redis.Redis | None = None) -> EdgeApp:
    ctx = EdgeContext.build(settings, client)
    # The edge starts anyway when Redis is down: it answers 503 until Redis is back,
    # and creates the groups then.
    ctx.ensure_groups(quiet=True)

    app = EdgeApp(media_type=falcon.MEDIA_JSON)
    json_handler = falcon.media.JSONHandler(dumps=_dumps, loads=orjson.loads)
    app.req_options.media_handlers.update({falcon.MEDIA_JSON: json_handler})
    app.resp_options.media_handlers.update({falcon.MEDIA_JSON: json_handler})
    app.req_options.strip_url_path_trailing_slash = True
    app.set_error_serializer(_serialize_error)
    app.add_error_handler(ValidationError, _validation_error)
    app.add_error_handler(NotFound, _not_found)
    storage_errors = StorageErrors()
    for exc_type in UNAVAILABLE:
        app.add_error_handler(exc_type, storage_errors.unavailable)
    # Any other Redis error (OOM, READONLY after a failover, BUSY script...) means the
    # request was not accepted either: 503 so the sender retries, never a bare 500.
    app.add_error_handler(redis.RedisError, storage_errors.error)
    app.ctx = ctx

    for module in RESOURCE_MODULES:
        module.register(app, ctx)
    return app


def _serialize_error(req, resp, exc: falcon.HTTPError) -> None:
    """Every error body is ``{"status": "error", "error": "<what and which field>"}``."""
    resp.content_type = falcon.MEDIA_JSON
    message = exc.description or exc.title
    resp.data = orjson.dumps({"status": "error", "error": message})


def _validation_error(req, resp, exc: ValidationError, params) -> None:
    raise falcon.HTTPBadRequest(title="Bad request", description=str(exc))


def _not_found(req, resp, exc: NotFound, params) -> None:
    raise falcon.HTTPNotFound(title="Not found", description=str(exc))


class StorageErrors:
    """503 for a Redis that is down or refusing, logged once per ``every_s``, not per answer.

    During an outage every request answers 503; a line each would bury the log (and
    cost the edge) when it matters most. The line after a quiet spell says how many
    503s it stood for.
    """

    def __init__(self, every_s: float = 10.0) -> None:
        self.every_s = every_s
        self._lock = threading.Lock()
        self._last = -float("inf")
        self._quiet = 0

    def unavailable(self, req, resp, exc, params) -> None:
        self._log(logging.WARNING, "Redis unavailable: %s", exc)
        raise _storage_unavailable()

    def error(self, req, resp, exc, params) -> None:
        self._log(logging.ERROR, "Redis error on %s %s: %s", req.method, req.path, exc)
        raise _storage_unavailable()

    def _log(self, level: int, message: str, *args) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._last < self.every_s:
                self._quiet += 1
                return
            quiet, self._quiet, self._last = self._quiet, 0, now
        if quiet:
            message += f" ({quiet} more 503s not logged in the last {self.every_s:.0f} s)"
        log.log(level, message, *args)


def _storage_unavailable() -> falcon.HTTPServiceUnavailable:
    return falcon.HTTPServiceUnavailable(
        title="Service unavailable",
        description="storage unavailable, retry later",
        retry_after=5,
    )
