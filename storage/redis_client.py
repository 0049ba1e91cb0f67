"""Redis connections with deliberate timeouts.

redis-py 8 defaults to a 5 s socket timeout and ten silent retries. Neither suits us:
a retried write can run twice, and a blocking read longer than the socket timeout is
cut short. So every connection here has no library retries (callers decide), and a
worker's socket timeout is set above its longest BLOCK.
"""

from __future__ import annotations

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from core.config import Settings

#: What a lost or refused connection raises; callers answer 503 or back off and retry.
UNAVAILABLE = (redis.ConnectionError, redis.TimeoutError, ConnectionError, TimeoutError, OSError)


def connect(
    settings: Settings,
    *,
    socket_timeout: float | None = 5.0,
    max_connections: int | None = None,
    pool_timeout: float | None = None,
) -> redis.Redis:
    """A client for ``settings.redis_url``, decoding replies to ``str``.

    With ``pool_timeout`` the pool is a ``BlockingConnectionPool``: a thread that finds
    all ``max_connections`` in use waits up to that long for one to come back, instead
    of failing at once with "Too many connections".

    >>> r = connect(Settings(), socket_timeout=2.0 + 5)  # a worker blocking 2 s
    """
    kwargs: dict = {
        "decode_responses": True,
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": 2.0,
        "retry": Retry(NoBackoff(), 0),
        "health_check_interval": 30,
    }
    if max_connections:
        kwargs["max_connections"] = max_connections
    if pool_timeout is None:
        return redis.Redis.from_url(settings.redis_url, **kwargs)
    pool = redis.BlockingConnectionPool.from_url(settings.redis_url, timeout=pool_timeout, **kwargs)
    client = redis.Redis(connection_pool=pool)
    client.auto_close_connection_pool = True  # close() closes the pool, as from_url's does
    return client


def worker_connection(settings: Settings) -> redis.Redis:
    """A client whose socket timeout outlasts ``settings.block_ms`` by a margin."""
    return connect(settings, socket_timeout=settings.block_ms / 1000 + 10)


def ping(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except UNAVAILABLE:
        return False


def ensure_groups(client: redis.Redis, keys) -> None:
    """Create the matcher and forwarder groups (MKSTREAM) on every partition.

    Created at ID 0, not ``$``: a stream that already holds entries (written after a
    Redis restart, before any group existed) is read from its start, never skipped.
    """
    from storage.keys import FORWARDER_GROUP, MATCHER_GROUP

    for n in keys.all_partitions():
        for stream, group in (
            (keys.input_stream(n), MATCHER_GROUP),
            (keys.forward_stream(n), FORWARDER_GROUP),
        ):
            try:
                client.xgroup_create(stream, group, id="0", mkstream=True)
            except redis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise


def delete_namespace(client: redis.Redis, namespace: str) -> int:
    """Delete every key of ``namespace`` (tests and benchmarks clean up with it)."""
    deleted, batch = 0, []
    for key in client.scan_iter(match=f"{namespace}:*", count=1000):
        batch.append(key)
        if len(batch) >= 500:
            deleted += client.delete(*batch)
            batch.clear()
    if batch:
        deleted += client.delete(*batch)
    return deleted
