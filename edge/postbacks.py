"""``/postback/{key}`` and ``/postback/{key}/batch``: take postbacks in (SPEC §3).

A postback is read in the source's dialect (aliases, status map: ``core.dialects``) and
validated in-process (``core.postback``), then one EVALSHA of ``ingest.lua`` checks the
source key, the caller's IP and that the cached dialect is the stored one, and appends
the entry to the input stream of its partition (from its conversion identity,
``storage.keys``). The answer is sent only after that write succeeded; its stream entry
ID is the ``log_id`` (unique across partitions, see ``ingest.lua``).

Each edge process caches every source's allow-list and dialect; the script compares
them with Redis's and answers "stale" (writing nothing) when they differ, so a change
takes effect on the next postback, on every process, at no extra round trip. A postback
that fails validation under the cached dialect costs one key check (a script call
with no entries) to make sure the dialect it was read in is current.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable

import falcon
import orjson
import redis

from core.conversions import routing_identity
from core.dialects import SourceDialect
from core.postback import (
    MAX_BATCH_BODY,
    MAX_SINGLE_BODY,
    BatchTooLarge,
    PostbackError,
    body_kind,
    check_query_utf8,
    last_values,
    parse_form,
    parse_json_object,
    split_batch,
    validate,
    validate_item,
)
from edge import metrics, throttle
from edge.client_ip import client_ip, ip_allowed
from edge.context import EdgeContext
from storage.redis_client import UNAVAILABLE

SOURCE_KEY = re.compile(r"^[A-Za-z0-9_\-]{16,128}$")
_ACCEPTED_HEAD = b'{"status":"success","message":"Postback received","log_id":"'
_ACCEPTED_TAIL = b'"}'
_INVALID_KEY = "Invalid postback key"


def accepted_body(log_id: str) -> bytes:
    """The 200 answer, assembled from pre-built bytes (a stream ID needs no escaping)."""
    return _ACCEPTED_HEAD + log_id.encode() + _ACCEPTED_TAIL


class Ingest:
    """Source check, IP check and stream write: one script call per partition touched.

    A postback goes to the partition of its conversion identity (``storage.keys``); each
    partition holds its own copy of the source record, so the check and the XADD stay
    one single-slot call. A batch makes one call per partition it touches, sent
    together to every node (``Scripts.run_packed``).
    """

    def __init__(self, ctx: EdgeContext) -> None:
        self.ctx = ctx

    def partition(self, key: str, postback: dict) -> int:
        return self.ctx.keys.partition_of(routing_identity(key, postback))

    def write(
        self,
        key: str,
        ip: str,
        method: str,
        prepare: Callable[[SourceDialect], list[tuple[int, bytes | str]]],
    ) -> tuple[str, list[str | None]]:
        """Append the entries ``prepare`` makes ((partition, params JSON) pairs, given the
        source's dialect) for source ``key``.

        Returns (source name, a log_id per entry, None where its partition's write failed
        while others went in). Raises 404 for an unknown or inactive key, 403 for an IP
        outside the allow-list, the PostbackError of ``prepare`` once the dialect it read
        in is known current, and Redis errors (503) when nothing at all was written.
        """
        ctx = self.ctx
        if not SOURCE_KEY.match(key):
            metrics.count_refused("unknown_key")
            throttle.refuse(ctx, "key", ip, falcon.HTTPNotFound(description=_INVALID_KEY))
        entries: list[tuple[int, bytes | str]] = []
        log_ids: list[str | None] = []
        outcomes: dict[int, str] = {}
        name, todo = "", None
        try:
            # The cached allow-list or dialect may be stale; the script then answers with
            # the stored ones and writes nothing. A second retry covers a change racing
            # the first.
            for _ in range(3):
                allow = ctx.allow_cache.get(key, "")
                dialect_text, dialect = ctx.dialect_cache.get(key, _NO_DIALECT)
                allowed = "1" if ip_allowed(ip, allow) else "0"
                head = (key, allow, allowed, method, ip, dialect_text)
                if todo is None:  # nothing written yet: (re)read in the cached dialect
                    try:
                        entries = prepare(dialect)
                    except PostbackError:
                        if self._still_current(key, head):
                            raise
                        continue
                    log_ids = [None] * len(entries)
                    by_partition = _by_partition(entries)
                    todo = list(by_partition)
                if not ctx.groups_ready:
                    ctx.ensure_groups()
                parts = ctx.keys.partitions
                calls = [
                    (
                        (ctx.keys.source_copy(n, key), ctx.keys.input_stream(n)),
                        (*head, f"{n} {parts}", *(entries[i][1] for i in by_partition[n])),
                    )
                    for n in todo
                ]
                replies = ctx.scripts.run_packed(ctx.redis, "ingest", calls)
                if not outcomes and all(isinstance(r, Exception) for r in replies):
                    raise replies[0]  # nothing written anywhere: 503
                stale = []
                for n, reply in zip(todo, replies, strict=True):
                    if isinstance(reply, Exception):
                        outcomes[n] = "error"
                        continue
                    outcomes[n] = reply[0]
                    if reply[0] == "ok":
                        name = reply[1]
                        for i, log_id in zip(by_partition[n], reply[2:], strict=True):
                            log_ids[i] = log_id
                    elif reply[0] == "stale":
                        stale.append(n)
                        self._refresh(key, reply[1], reply[2])
                    elif reply[0] == "forbidden":
                        name = name or reply[1]
                if not stale:
                    break
                # Only partitions that wrote nothing go again; when none wrote, the whole
                # request is read again in the refreshed dialect.
                todo = stale if "ok" in outcomes.values() else None
        except UNAVAILABLE:
            metrics.count_refused("unavailable")
            raise
        if "ok" in outcomes.values():
            return name, log_ids
        if "forbidden" in outcomes.values():
            metrics.count_refused("forbidden")
            raise falcon.HTTPForbidden(
                description=f"caller IP {ip} is not in this source's allow-list"
            )
        if "unknown" in outcomes.values():
            metrics.count_refused("unknown_key")
            throttle.refuse(ctx, "key", ip, falcon.HTTPNotFound(description=_INVALID_KEY))
        raise falcon.HTTPServiceUnavailable(
            description="source settings changing, retry later", retry_after=1
        )

    def _refresh(self, key: str, allow: str, dialect_text: str) -> None:
        ctx = self.ctx
        if allow:
            ctx.allow_cache[key] = allow
        else:
            ctx.allow_cache.pop(key, None)
        if dialect_text:
            ctx.dialect_cache[key] = (dialect_text, SourceDialect.from_json(dialect_text))
        else:
            ctx.dialect_cache.pop(key, None)

    def _still_current(self, key: str, head: tuple) -> bool:
        """After a postback failed validation: True unless the source's allow-list or
        dialect changed since cached (the cache is refreshed then, to read it again).
        Any other answer, or none (Redis down), leaves the validation error standing."""
        ctx = self.ctx
        redis_keys = (ctx.keys.source_copy(0, key), ctx.keys.input_stream(0))
        try:
            reply = ctx.scripts.run(ctx.redis, "ingest", redis_keys, head)
        except (*UNAVAILABLE, redis.RedisError):
            return True
        if reply[0] != "stale":
            return True
        self._refresh(head[0], reply[1], reply[2])
        return False


_NO_DIALECT = ("", SourceDialect())


def _by_partition(entries: list[tuple[int, bytes | str]]) -> dict[int, list[int]]:
    """Entry indexes grouped by partition, in order; an empty batch checks the key on
    partition 0."""
    groups: dict[int, list[int]] = {}
    for index, (n, _) in enumerate(entries):
        group = groups.get(n)
        if group is None:
            groups[n] = [index]
        else:
            group.append(index)
    return groups or {0: []}


def caller_ip(req: falcon.Request, ctx: EdgeContext) -> str:
    trusted = ctx.settings.trusted_proxies
    if not trusted:
        return req.remote_addr
    return client_ip(req.remote_addr, req.get_header("X-Forwarded-For"), trusted)


def read_body(req: falcon.Request, limit: int) -> bytes:
    """The request body, refused with 413 past ``limit`` bytes, never read unbounded.

    Content-Length is checked before reading; a body without one (chunked) is read up
    to ``limit + 1`` bytes at most. (Waitress itself buffers a chunked body only up to
    its ``max_request_body_size``, which ``postback edge`` sets to the batch limit.)
    """
    length = req.content_length
    if length is not None and length > limit:
        metrics.count_refused("too_large")
        raise falcon.HTTPContentTooLarge(description=f"body over {limit} bytes")
    stream = req.bounded_stream if length is not None else req.stream
    body = stream.read(limit + 1)
    if len(body) > limit:
        metrics.count_refused("too_large")
        raise falcon.HTTPContentTooLarge(description=f"body over {limit} bytes")
    return body


def query_params(req: falcon.Request) -> dict:
    """The query's parameters (last value wins), refused past the single-body limit.

    A query carries a postback as much as a body does, so it has the same 64 KiB cap
    (waitress alone would take headers up to 256 KiB). Bytes that are not UTF-8 are
    refused naming the parameter, not replaced.
    """
    if len(req.query_string) > MAX_SINGLE_BODY:
        metrics.count_refused("too_large")
        raise falcon.HTTPUriTooLong(description=f"query string over {MAX_SINGLE_BODY} bytes")
    params = req.params
    if not params:
        return {}
    if any(type(v) is list for v in params.values()):
        params = last_values(params)
    if "%" in req.query_string and any(
        "\ufffd" in k or (type(v) is str and "\ufffd" in v) for k, v in params.items()
    ):
        try:
            check_query_utf8(req.query_string)
        except PostbackError as exc:
            raise _refuse(exc) from None
    return params


def _refuse(exc: PostbackError) -> falcon.HTTPBadRequest:
    metrics.count_refused("invalid")
    return falcon.HTTPBadRequest(description=exc.message)


class PostbackResource:
    def __init__(self, ctx: EdgeContext) -> None:
        self.ctx = ctx
        self.ingest = Ingest(ctx)

    def on_get(self, req: falcon.Request, resp: falcon.Response, key: str) -> None:
        self._accept(req, resp, key, "GET", query_params(req))

    def on_post(self, req: falcon.Request, resp: falcon.Response, key: str) -> None:
        body = read_body(req, MAX_SINGLE_BODY)
        # Query parameters count too (some senders POST with everything in the URL);
        # a field in both places takes the body's value.
        params = dict(query_params(req))
        if body.strip():
            try:
                if body_kind(req.content_type, body) == "json":
                    params.update(parse_json_object(body))
                else:
                    params.update(parse_form(body))
            except PostbackError as exc:
                raise _refuse(exc) from None
        self._accept(req, resp, key, "POST", params)

    def _accept(self, req, resp, key: str, method: str, params: dict) -> None:
        postback: dict = {}

        def prepare(dialect: SourceDialect) -> list[tuple[int, bytes | str]]:
            nonlocal postback
            postback = validate(dialect.apply(params) if dialect else params)
            return [(self.ingest.partition(key, postback), orjson.dumps(postback))]

        ip = caller_ip(req, self.ctx)
        try:
            name, log_ids = self.ingest.write(key, ip, method, prepare)
        except PostbackError as exc:
            raise _refuse(exc) from None
        if log_ids[0] is None:  # its one partition's write failed: nothing written
            raise falcon.HTTPServiceUnavailable(
                description="storage unavailable, retry later", retry_after=5
            )
        metrics.count_received(name, postback["status"])
        resp.data = accepted_body(log_ids[0])


class BatchResource:
    """``POST /postback/{key}/batch``: a JSON array or NDJSON of up to 10,000 postbacks.

    Items are validated one by one; the valid ones go to Redis in one pipeline of one
    script call per partition they touch (each call all or nothing). If Redis fails
    before any went in, the answer is 503; if one partition's call fails while others
    went in (a cluster node lost mid-batch), its items answer an error saying to send
    them again (a resent postback is a duplicate by its conversion identity, never a
    second credit). Errors of single items are answered in ``results``; a bad key or IP
    refuses the whole batch (404/403).
    """

    def __init__(self, ctx: EdgeContext) -> None:
        self.ctx = ctx
        self.ingest = Ingest(ctx)

    def on_post(self, req: falcon.Request, resp: falcon.Response, key: str) -> None:
        body = read_body(req, MAX_BATCH_BODY)
        try:
            items = split_batch(body, req.content_type)
        except BatchTooLarge as exc:
            metrics.count_refused("too_large")
            raise falcon.HTTPContentTooLarge(description=exc.message) from None
        except PostbackError as exc:
            raise _refuse(exc) from None

        results: list[dict] = []
        entries: list[tuple[int, str]] = []
        statuses: list[str] = []  # of the entries, in order
        waiting: list[dict] = []  # results that get their log_id after the write
        partition_of, dumps = self.ctx.keys.partition_of, orjson.dumps

        def prepare(dialect: SourceDialect) -> list[tuple[int, str]]:
            # Read again from scratch when the script found the cached dialect stale.
            results.clear(), entries.clear(), statuses.clear(), waiting.clear()
            apply = dialect.apply if dialect else None
            for index, item in enumerate(items):
                try:
                    if apply is not None and isinstance(item, dict):
                        item = apply(item)
                    postback = validate_item(item)
                except PostbackError as exc:
                    results.append({"index": index, "error": exc.message})
                    continue
                result = {"index": index, "log_id": ""}
                results.append(result)
                waiting.append(result)
                # decode(): a short str is a small-object allocation that frees at once;
                # a thousand orjson bytes objects kept alive cost ~10x more each.
                entries.append(
                    (partition_of(routing_identity(key, postback)), dumps(postback).decode())
                )
                statuses.append(postback["status"])
            return entries

        name, log_ids = self.ingest.write(key, caller_ip(req, self.ctx), "BATCH", prepare)
        accepted: Counter[str] = Counter()
        for result, log_id, status in zip(waiting, log_ids, statuses, strict=True):
            if log_id is None:  # its partition's write failed (others went in): resend it
                del result["log_id"]
                result["error"] = "storage unavailable for this item, send it again"
            else:
                result["log_id"] = log_id
                accepted[status] += 1
        for status, count in accepted.items():
            metrics.count_received(name, status, count)
        rejected = len(results) - accepted.total()
        if rejected:
            metrics.count_refused("invalid", rejected)
        resp.data = orjson.dumps(
            {
                "status": "success",
                "accepted": accepted.total(),
                "rejected": rejected,
                "results": results,
            }
        )


def register(app: falcon.App, ctx: EdgeContext) -> None:
    app.add_route("/postback/{key}", PostbackResource(ctx))
    app.add_route("/postback/{key}/batch", BatchResource(ctx))
