"""Prometheus metrics: ``GET /metrics`` (text format, negotiated by ``Accept``).

Two kinds of figures:

* this edge process's own counters (postbacks received by source and status, refused
  by reason), kept in :data:`REGISTRY`; labelled by source *name*, never by key: the
  key is a secret;
* the whole relay's figures, read from Redis at scrape time by :class:`RelayCollector`:
  matcher outcomes, deliveries by partner and result and the delivery latency histogram
  (the ``stats`` hashes summed over partitions), and per stream and group the length,
  lag and pending count (the same numbers as ``postback lag``).

``/metrics`` needs no token: expose it on the internal network only. When Redis is
unreachable it still answers, with ``postback_redis_up 0`` and the process counters.
"""

from __future__ import annotations

import logging

import falcon
import redis
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector

from storage import monitoring
from storage.formats import LATENCY_BUCKETS_MS, OUTCOMES
from storage.redis_client import UNAVAILABLE

log = logging.getLogger(__name__)

REGISTRY = CollectorRegistry(auto_describe=True)

POSTBACKS_RECEIVED = Counter(
    "postback_received_total",
    "Postbacks accepted by the edge",
    ["source", "status"],
    registry=REGISTRY,
)
POSTBACKS_REFUSED = Counter(
    "postback_refused_total",
    "Postbacks refused by the edge",
    ["reason"],
    registry=REGISTRY,
)


#: The counters' labelled children, looked up once: ``labels()`` takes a lock and builds
#: a key on every call, on the edge's hot path.
_received: dict[tuple[str, str], object] = {}
_refused: dict[str, object] = {}


def count_received(source_name: str, status: str, n: int = 1) -> None:
    child = _received.get((source_name, status))
    if child is None:
        child = _received.setdefault(
            (source_name, status), POSTBACKS_RECEIVED.labels(source=source_name, status=status)
        )
    child.inc(n)


def count_refused(reason: str, n: int = 1) -> None:
    child = _refused.get(reason)
    if child is None:
        child = _refused.setdefault(reason, POSTBACKS_REFUSED.labels(reason=reason))
    child.inc(n)


def sum_stats(hashes: list[dict[str, str]]) -> dict[str, int]:
    """The partitions' stats hashes added up field by field (bad values skipped)."""
    total: dict[str, int] = {}
    for stats in hashes:
        for name, value in stats.items():
            try:
                total[name] = total.get(name, 0) + int(value)
            except ValueError:
                continue
    return total


def relay_families(stats: dict[str, int], report: dict) -> list:
    """Metric families from summed stats and a lag report (pure: tests feed it dicts)."""
    outcomes = CounterMetricFamily(
        "postback_matcher_outcomes",
        "Postbacks handled by the matcher, by outcome",
        labels=["outcome"],
    )
    for outcome in OUTCOMES:
        outcomes.add_metric([outcome], stats.get(f"outcome:{outcome}", 0))

    deliveries = CounterMetricFamily(
        "postback_deliveries",
        "Delivery attempts to partners, by partner and result",
        labels=["partner", "result"],
    )
    for name, value in sorted(stats.items()):
        if name.startswith("delivery:"):
            # Partner ids may hold ':'; results never do.
            partner, _, result = name[len("delivery:") :].rpartition(":")
            deliveries.add_metric([partner, result], value)

    count = stats.get("latency_count", 0)
    buckets = [(_le(ms), stats.get(f"latency_bucket:{ms}", 0)) for ms in LATENCY_BUCKETS_MS] + [
        ("+Inf", count)
    ]
    latency = HistogramMetricFamily(
        "postback_delivery_latency_seconds",
        "Partner response time of delivery attempts",
        buckets=buckets,
        sum_value=stats.get("latency_sum_ms", 0) / 1000,
    )

    group_labels = ["stream", "group"]
    length = GaugeMetricFamily(
        "postback_stream_length", "Entries in the stream", labels=group_labels
    )
    backlog = GaugeMetricFamily(
        "postback_stream_lag", "Entries not yet read by the group", labels=group_labels
    )
    pending = GaugeMetricFamily(
        "postback_stream_pending", "Entries read but not yet acknowledged", labels=group_labels
    )
    oldest = GaugeMetricFamily(
        "postback_stream_oldest_pending_seconds",
        "Age of the oldest pending entry",
        labels=group_labels,
    )
    for g in report["groups"]:
        labels = [g["stream"], g["group"]]
        length.add_metric(labels, g["length"])
        backlog.add_metric(labels, g["lag"])
        pending.add_metric(labels, g["pending"])
        oldest.add_metric(labels, g["oldest_pending_s"])
    retry = GaugeMetricFamily(
        "postback_retry_queue", "Deliveries waiting for a retry", value=report["retry_queue"]
    )
    dead = GaugeMetricFamily(
        "postback_dead_letters", "Entries in the dead-letter streams", value=report["dead_letters"]
    )
    paused = GaugeMetricFamily(
        "postback_partners_paused",
        "Partners paused after repeated failures",
        value=len(report.get("paused_partners") or []),
    )
    return [outcomes, deliveries, latency, length, backlog, pending, oldest, retry, dead, paused]


def _le(ms: int) -> str:
    return f"{ms / 1000:g}"


class RelayCollector:
    """Reads the relay's figures from Redis on every scrape."""

    def __init__(self, ctx) -> None:
        self.ctx = ctx

    def collect(self):
        up = GaugeMetricFamily("postback_redis_up", "1 when Redis answered this scrape")
        r, keys = self.ctx.redis, self.ctx.keys
        try:
            pipe = r.pipeline(transaction=False)
            for n in keys.all_partitions():
                pipe.hgetall(keys.stats(n))
            stats = sum_stats(pipe.execute())
            report = monitoring.collect(r, keys)
        except (*UNAVAILABLE, redis.RedisError) as exc:
            log.warning("/metrics: Redis unavailable: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from relay_families(stats, report)


class _Scrape:
    """The edge's counters and the relay collector, exposed as one.

    Under ``postback edge --workers N`` the workers keep their counters in files of one
    directory (prometheus_client's multiprocess mode, ``PROMETHEUS_MULTIPROC_DIR``, set
    by the supervisor), so whichever worker answers a scrape reports them all.
    """

    def __init__(self, ctx) -> None:
        self.relay = RelayCollector(ctx)
        self.counters = REGISTRY
        if ctx.settings.metrics_dir:
            self.counters = CollectorRegistry()
            MultiProcessCollector(self.counters, path=ctx.settings.metrics_dir)

    def collect(self):
        yield from self.counters.collect()
        yield from self.relay.collect()


class MetricsResource:
    def __init__(self, ctx) -> None:
        self.scrape = _Scrape(ctx)

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        encoder, content_type = choose_encoder(req.get_header("Accept") or "")
        resp.content_type = content_type
        resp.cache_control = ["no-store"]
        resp.data = encoder(self.scrape)


def register(app: falcon.App, ctx) -> None:
    app.add_route("/metrics", MetricsResource(ctx))
