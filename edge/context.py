"""What every edge resource shares: settings, the Redis client, keys, store and scripts."""

from __future__ import annotations

from dataclasses import dataclass

import redis

from core.config import Settings
from storage.keys import Keys
from storage.redis_client import connect
from storage.repositories import Store
from storage.scripts import Scripts, default_scripts


@dataclass
class EdgeContext:
    settings: Settings
    redis: redis.Redis
    keys: Keys
    store: Store
    scripts: Scripts

    @classmethod
    def build(cls, settings: Settings, client: redis.Redis | None = None) -> EdgeContext:
        # The edge fails fast: a short socket timeout and no retries, so a Redis outage
        # becomes a 503 in about a second instead of a hung request.
        client = client or connect(
            settings, socket_timeout=2.0, max_connections=max(settings.threads * 2, 16)
        )
        keys = Keys(settings.namespace, settings.partitions)
        return cls(settings, client, keys, Store(client, keys), default_scripts())
