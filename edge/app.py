"""The Falcon app: JSON through orjson, one error shape, resources registered by module."""

from __future__ import annotations

import importlib
import logging

import falcon
import orjson
import redis

from core.config import Settings
from core.entities import ValidationError
from edge.context import EdgeContext
from storage.redis_client import UNAVAILABLE
from storage.repositories import NotFound

log = logging.getLogger(__name__)

#: Each module has ``register(app, ctx)``; a module not written yet is skipped.
RESOURCE_MODULES = (
    "edge.postbacks",
    "edge.clicks",
    "edge.health",
    "edge.admin",
    "edge.admin_config",
    "edge.admin_deadletters",
    "edge.admin_story",
    "edge.admin_page",
    "edge.metrics",
    "edge.openapi",
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
    for exc_type in UNAVAILABLE:
        app.add_error_handler(exc_type, _redis_unavailable)
    # Any other Redis error (OOM, READONLY after a failover, BUSY script...) means the
    # request was not accepted either: 503 so the sender retries, never a bare 500.
    app.add_error_handler(redis.RedisError, _redis_error)
    app.ctx = ctx

    for module_name in RESOURCE_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue
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


def _redis_unavailable(req, resp, exc, params) -> None:
    log.warning("Redis unavailable: %s", exc)
    raise falcon.HTTPServiceUnavailable(
        title="Service unavailable",
        description="storage unavailable, retry later",
        retry_after=5,
    )


def _redis_error(req, resp, exc, params) -> None:
    log.error("Redis error on %s %s: %s", req.method, req.path, exc)
    raise falcon.HTTPServiceUnavailable(
        title="Service unavailable",
        description="storage unavailable, retry later",
        retry_after=5,
    )
