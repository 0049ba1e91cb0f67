"""The one Redis client: a single Redis or a Redis Cluster, from the same ``REDIS_URL``.

    >>> client = connect(settings)          # redis.Redis, or RedisCluster when the node
    >>> is_cluster(client)                  # answers cluster_enabled:1 (INFO cluster)

Nothing else to set: the node named by ``REDIS_URL`` is asked ``INFO cluster`` once and
a cluster node gets a ``RedisCluster`` (which finds the other nodes itself). Both kinds
have the same commands for everything this project does; every key a command or script
touches lies in one hash slot (``storage.keys``), and pipelines are split per node by
redis-py.

Timeouts and retries are deliberate. redis-py defaults to a 5 s socket timeout and
silent retries; a retried write can run twice and a blocking read longer than the socket
timeout is cut short. So no connection here retries by itself (callers decide), and a
worker's socket timeout is set above its longest BLOCK. A cluster client still follows
MOVED/ASK redirects (the command did not run where it was refused) and reloads its slot
table after a connection error.
"""

from __future__ import annotations

import logging

import redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.exceptions import ClusterError, RedisClusterException
from redis.retry import Retry

from core.config import Settings

log = logging.getLogger(__name__)


class _Cluster(RedisCluster):
    """``RedisCluster`` whose ``close()`` also closes each node's sockets.

    redis-py's own leaves the per-node pools open (their clients do not own them), so a
    closed cluster client left sockets behind for the garbage collector.
    """

    def close(self) -> None:
        nodes = self.get_nodes()
        super().close()
        for node in nodes:
            if node.redis_connection is not None:
                node.redis_connection.connection_pool.disconnect()


#: Either kind of client; both answer the same commands.
Client = redis.Redis | RedisCluster

#: What a lost or refused connection raises; callers answer 503 or back off and retry.
UNAVAILABLE = (
    redis.ConnectionError,
    redis.TimeoutError,
    ClusterError,  # cluster down, or no node answered within the redirect budget
    RedisClusterException,  # no node reachable to learn the slots from
    ConnectionError,
    TimeoutError,
    OSError,
)


def _options(socket_timeout: float | None, max_connections: int | None) -> dict:
    options: dict = {
        "decode_responses": True,
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": 2.0,
        "retry": Retry(NoBackoff(), 0),
        "health_check_interval": 30,
    }
    if max_connections:
        options["max_connections"] = max_connections
    return options


def cluster_enabled(url: str) -> bool | None:
    """Whether the node at ``url`` is a cluster node; None when it does not answer."""
    probe = redis.Redis.from_url(url, **_options(2.0, None))
    try:
        return int(probe.info("cluster").get("cluster_enabled", 0)) == 1
    except UNAVAILABLE:
        return None
    except redis.ResponseError:  # INFO refused (ACL): not something we can shard on
        return False
    finally:
        probe.close()


def connect(
    settings: Settings,
    *,
    socket_timeout: float | None = 5.0,
    max_connections: int | None = None,
    pool_timeout: float | None = None,
) -> Client:
    """A client for ``settings.redis_url`` (single or cluster), decoding replies to ``str``.

    With ``pool_timeout`` the pool (each node's, on a cluster) is a
    ``BlockingConnectionPool``: a thread that finds all ``max_connections`` in use waits
    up to that long for one to come back, instead of failing at once with "Too many
    connections".

    When the node does not answer, a single-Redis client is returned (it connects when
    Redis is back); a process meant for a cluster should start once the cluster answers,
    which ``postback matcher``/``forwarder``/``admin`` check with a PING first (the edge
    finds out later by itself, ``edge.context``).

    >>> r = connect(Settings(), socket_timeout=2.0 + 5)  # a worker blocking 2 s
    """
    options = _options(socket_timeout, max_connections)
    if cluster_enabled(settings.redis_url):
        if pool_timeout is not None:
            options.update(connection_pool_class=redis.BlockingConnectionPool, timeout=pool_timeout)
        return _Cluster.from_url(settings.redis_url, **options)
    if pool_timeout is None:
        return redis.Redis.from_url(settings.redis_url, **options)
    pool = redis.BlockingConnectionPool.from_url(
        settings.redis_url, timeout=pool_timeout, **options
    )
    client = redis.Redis(connection_pool=pool)
    client.auto_close_connection_pool = True  # close() closes the pool, as from_url's does
    return client


def is_cluster(client: Client) -> bool:
    return isinstance(client, RedisCluster)


def worker_connection(settings: Settings) -> Client:
    """A client whose socket timeout outlasts ``settings.block_ms`` by a margin."""
    return connect(settings, socket_timeout=settings.block_ms / 1000 + 10)


def ping(client: Client) -> bool:
    try:
        return bool(client.ping())
    except UNAVAILABLE:
        return False


def ensure_groups(client: Client, keys) -> None:
    """Create the matcher and forwarder groups (MKSTREAM) on every partition.

    Created at ID 0, not ``$``: a stream that already holds entries (written after a
    Redis restart, before any group existed) is read from its start, never skipped.
    One pipeline, split per node on a cluster; BUSYGROUP (exists already) is fine.
    """
    from storage.keys import FORWARDER_GROUP, MATCHER_GROUP

    pipe = client.pipeline(transaction=False)
    for n in keys.all_partitions():
        pipe.xgroup_create(keys.input_stream(n), MATCHER_GROUP, id="0", mkstream=True)
        pipe.xgroup_create(keys.forward_stream(n), FORWARDER_GROUP, id="0", mkstream=True)
    for reply in pipe.execute(raise_on_error=False):
        if isinstance(reply, Exception) and "BUSYGROUP" not in str(reply):
            raise reply


def delete_namespace(client: Client, namespace: str) -> int:
    """Delete every key of ``namespace`` (tests and benchmarks clean up with it).

    SCAN visits every primary of a cluster; keys are deleted one command each in a
    pipeline, so no DEL spans slots.
    """
    deleted, batch = 0, []
    for key in client.scan_iter(match=f"{namespace}:*", count=1000):
        batch.append(key)
        if len(batch) >= 500:
            deleted += _delete(client, batch)
            batch.clear()
    if batch:
        deleted += _delete(client, batch)
    return deleted


def _delete(client: Client, keys: list[str]) -> int:
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.delete(key)
    return sum(int(n) for n in pipe.execute())
