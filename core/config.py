"""Settings: built once from the environment, validated, then passed down.

No other module reads ``os.environ``. A bad value raises :class:`ConfigError` whose
message is one line naming the variable; the ``postback`` command prints it and exits.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from core.networks import parse_networks
from core.numbers import positive_number, whole_number

DEFAULT_RETRY_SCHEDULE = (30, 120, 600, 1800, 3600, 10800, 21600, 43200)


class ConfigError(ValueError):
    """A setting from the environment is missing or malformed."""


@dataclass(frozen=True)
class Settings:
    redis_url: str = "redis://127.0.0.1:6379/0"
    admin_token: str | None = None
    host: str = "0.0.0.0"
    port: int = 8080
    threads: int = 8
    #: Edge processes sharing the port; 0 means one per CPU this process may use. None
    #: (not set) is 1 for ``postback edge`` and one per CPU for ``postback dev``.
    edge_workers: int | None = None
    namespace: str = "pb"
    partitions: int = 16
    lease_ms: int = 10000
    retry_schedule: tuple[int, ...] = DEFAULT_RETRY_SCHEDULE
    forward_timeout: float = 10.0
    forward_connect_timeout: float = 3.0
    forward_concurrency: int = 64
    partner_max_inflight: int = 8
    pause_after_failures: int = 10
    probe_interval_s: float = 60.0
    claim_idle_ms: int = 60000
    log_retention_days: float = 30.0
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = field(
        default_factory=tuple
    )
    matcher_batch: int = 500
    block_ms: int = 2000
    max_deliveries: int = 5
    fallback_window_s: int = 3600
    #: Where edge workers keep their metrics (prometheus_client's multiprocess mode).
    metrics_dir: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``env`` (default ``os.environ``); raise ConfigError on bad values."""
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        for name, (attr, parse) in _VARIABLES.items():
            raw = env.get(name)
            if raw is None or raw.strip() == "":
                continue
            try:
                values[attr] = parse(raw.strip())
            except (ValueError, TypeError) as exc:
                raise ConfigError(f"{name}={raw.strip()!r}: {exc}") from None
        return cls(**values)

    def with_overrides(self, **changes: object) -> Settings:
        return replace(self, **changes)

    @property
    def retention_ms(self) -> int:
        return int(self.log_retention_days * 86400 * 1000)


def _port(raw: str) -> int:
    return whole_number(raw, maximum=65535, what="a port number from 1 to 65535")


def workers(raw: str) -> int:
    """A worker count: a whole number from 1, or ``auto`` (0: one per usable CPU)."""
    if raw.strip().lower() == "auto":
        return 0
    return whole_number(raw, what="a whole number from 1, or auto (one per CPU)")


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the system has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(len(os.sched_getaffinity(0)), 1)
    return os.cpu_count() or 1


def _schedule(raw: str) -> tuple[int, ...]:
    try:
        steps = tuple(int(part) for part in raw.split(","))
    except ValueError:
        raise ValueError("must be comma-separated whole seconds, e.g. 30,120,600") from None
    if not steps or any(step < 0 for step in steps):
        raise ValueError("must be comma-separated whole seconds, none negative")
    return steps


def _networks(raw: str) -> tuple:
    try:
        return parse_networks(part for part in raw.split(",") if part.strip())
    except ValueError as exc:
        raise ValueError(f"must be comma-separated IP addresses or CIDRs: {exc}") from None


def _redis_url(raw: str) -> str:
    if not raw.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("must start with redis://, rediss:// or unix://")
    return raw


def _namespace(raw: str) -> str:
    if not raw.replace("-", "").replace("_", "").isalnum():
        raise ValueError("letters, digits, '-' and '_' only")
    return raw


_VARIABLES = {
    "REDIS_URL": ("redis_url", _redis_url),
    "POSTBACK_ADMIN_TOKEN": ("admin_token", str),
    "HOST": ("host", str),
    "PORT": ("port", _port),
    "POSTBACK_THREADS": ("threads", whole_number),
    "POSTBACK_EDGE_WORKERS": ("edge_workers", workers),
    "POSTBACK_NAMESPACE": ("namespace", _namespace),
    "POSTBACK_PARTITIONS": ("partitions", whole_number),
    "POSTBACK_LEASE_MS": ("lease_ms", whole_number),
    "POSTBACK_RETRY_SCHEDULE": ("retry_schedule", _schedule),
    "POSTBACK_FORWARD_TIMEOUT": ("forward_timeout", positive_number),
    "POSTBACK_FORWARD_CONNECT_TIMEOUT": ("forward_connect_timeout", positive_number),
    "POSTBACK_FORWARD_CONCURRENCY": ("forward_concurrency", whole_number),
    "POSTBACK_PARTNER_MAX_INFLIGHT": ("partner_max_inflight", whole_number),
    "POSTBACK_PAUSE_AFTER_FAILURES": ("pause_after_failures", whole_number),
    "POSTBACK_PROBE_INTERVAL": ("probe_interval_s", positive_number),
    "POSTBACK_CLAIM_IDLE_MS": ("claim_idle_ms", whole_number),
    "POSTBACK_LOG_RETENTION_DAYS": ("log_retention_days", positive_number),
    "POSTBACK_TRUSTED_PROXIES": ("trusted_proxies", _networks),
    "POSTBACK_MATCHER_BATCH": ("matcher_batch", whole_number),
    "POSTBACK_BLOCK_MS": ("block_ms", whole_number),
    "POSTBACK_MAX_DELIVERIES": ("max_deliveries", whole_number),
    "POSTBACK_FALLBACK_WINDOW": ("fallback_window_s", whole_number),
    "PROMETHEUS_MULTIPROC_DIR": ("metrics_dir", str),
}

#: Every variable the system reads, for the README and ``postback --help``.
VARIABLES = tuple(_VARIABLES)
