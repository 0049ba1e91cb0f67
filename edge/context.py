"""What every edge resource shares: settings, the Redis client, keys, store and scripts."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import redis

from core.config import Settings
from core.dialects import SourceDialect
from storage.keys import Keys
from storage.redis_client import UNAVAILABLE, cluster_enabled, connect, ensure_groups
from storage.repositories import Store
from storage.scripts import Scripts, default_scripts

log = logging.getLogger(__name__)


@dataclass
class EdgeContext:
    settings: Settings
    redis: redis.Redis
    keys: Keys
    store: Store
    scripts: Scripts
    #: source key → its allow-list string as last seen in Redis; a key absent here means
    #: "any IP". The ingest script says when an entry is stale, so changes apply at once.
    allow_cache: dict[str, str] = field(default_factory=dict)
    #: source key → (its dialect as stored, parsed), for sources with aliases or a status
    #: map; kept fresh the same way (the script compares the stored text).
    dialect_cache: dict[str, tuple[str, SourceDialect]] = field(default_factory=dict)
    groups_ready: bool = False
    #: True when Redis did not answer at start, so whether it is a cluster is not known.
    redetect: bool = False

    @classmethod
    def build(cls, settings: Settings, client: redis.Redis | None = None) -> EdgeContext:
        redetect = False
        if client is None:
            redetect = cluster_enabled(settings.redis_url) is None
            client = _connect(settings)
        keys = Keys(settings.namespace, settings.partitions)
        ctx = cls(settings, client, keys, Store(client, keys), default_scripts())
        ctx.redetect = redetect
        return ctx

    def ensure_groups(self, *, quiet: bool = False) -> bool:
        """Create the consumer groups once (SPEC §8: the edge creates them at start).

        When Redis was down at start this is tried again before the next write, so
        ``postback lag`` shows the groups as soon as postbacks flow. With ``quiet`` a
        Redis that is unreachable (or answers an error) returns False instead of raising.
        """
        if self.groups_ready:
            return True
        try:
            if self.redetect:
                self._detect()
            ensure_groups(self.redis, self.keys)
        except (*UNAVAILABLE, redis.RedisError) as exc:
            if not quiet:
                raise
            log.warning("consumer groups not created yet: %s", exc)
            return False
        self.groups_ready = True
        return True

    def _detect(self) -> None:
        """Redis was down at start: once it answers, find out whether it is a cluster."""
        kind = cluster_enabled(self.settings.redis_url)
        if kind is None:
            raise redis.ConnectionError(f"no answer from {self.settings.redis_url}")
        self.redetect = False
        if kind:
            log.info("%s is a cluster node: using a cluster client", self.settings.redis_url)
            self.redis = _connect(self.settings)
            self.store = Store(self.redis, self.keys)


def _connect(settings: Settings):
    # The edge fails fast: a short socket timeout and no retries, so a Redis outage
    # becomes a 503 in about a second instead of a hung request. Every resource of
    # every waitress thread borrows from this one pool per call and gives the
    # connection back; a thread holds at most one at a time, so twice the threads
    # never runs dry, and a burst waits briefly rather than failing.
    return connect(
        settings,
        socket_timeout=2.0,
        max_connections=settings.threads * 2 + 4,
        pool_timeout=2.0,
    )
