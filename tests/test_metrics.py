"""``GET /metrics``: Prometheus text with the edge counters and the relay's figures from Redis."""

from __future__ import annotations

import pytest
from falcon import testing
from prometheus_client.parser import text_string_to_metric_families

from core.config import Settings
from edge import metrics
from edge.app import create_app
from storage.keys import Keys
from storage.redis_client import ensure_groups

FAMILIES = (
    "postback_received",
    "postback_refused",
    "postback_redis_up",
    "postback_matcher_outcomes",
    "postback_deliveries",
    "postback_delivery_latency_seconds",
    "postback_stream_length",
    "postback_stream_lag",
    "postback_stream_pending",
    "postback_stream_oldest_pending_seconds",
    "postback_retry_queue",
    "postback_dead_letters",
    "postback_partners_paused",
)


def scrape(app) -> dict[str, dict]:
    """Family name → {(sample name, sorted labels): value}."""
    result = testing.TestClient(app).simulate_get("/metrics")
    assert result.status_code == 200
    assert result.headers["content-type"].startswith("text/plain")
    families = {}
    for family in text_string_to_metric_families(result.text):
        families[family.name] = {
            (s.name, tuple(sorted(s.labels.items()))): s.value for s in family.samples
        }
    return families


@pytest.fixture
def app(settings, redis_client):
    settings = settings.with_overrides(partitions=2)
    ensure_groups(redis_client, Keys(settings.namespace, 2))
    return create_app(settings, client=redis_client)


def test_every_family_is_exposed(app):
    metrics.count_received("SurveyWall", "approved")
    metrics.count_refused("invalid_key")
    families = scrape(app)
    assert set(FAMILIES) <= set(families)
    assert families["postback_redis_up"][("postback_redis_up", ())] == 1
    received = families["postback_received"]
    assert (
        received[("postback_received_total", (("source", "SurveyWall"), ("status", "approved")))]
        >= 1
    )


def test_stats_are_summed_over_partitions(app, redis_client):
    keys = app.ctx.keys
    redis_client.hset(
        keys.stats(0),
        mapping={
            "outcome:matched": 3,
            "delivery:p:1:delivered": 2,
            "latency_bucket:50": 1,
            "latency_bucket:100": 2,
            "latency_count": 2,
            "latency_sum_ms": 120,
        },
    )
    redis_client.hset(
        keys.stats(1),
        mapping={
            "outcome:matched": 4,
            "outcome:unmatched": 1,
            "delivery:p:1:delivered": 1,
            "delivery:p2:retry": 5,
            "latency_bucket:100": 1,
            "latency_count": 3,
            "latency_sum_ms": 3000,
        },
    )
    families = scrape(app)
    outcomes = families["postback_matcher_outcomes"]
    assert outcomes[("postback_matcher_outcomes_total", (("outcome", "matched"),))] == 7
    assert outcomes[("postback_matcher_outcomes_total", (("outcome", "unmatched"),))] == 1
    assert outcomes[("postback_matcher_outcomes_total", (("outcome", "duplicate"),))] == 0
    deliveries = families["postback_deliveries"]
    assert (
        deliveries[("postback_deliveries_total", (("partner", "p:1"), ("result", "delivered")))]
        == 3
    )
    assert deliveries[("postback_deliveries_total", (("partner", "p2"), ("result", "retry")))] == 5
    latency = families["postback_delivery_latency_seconds"]
    bucket = "postback_delivery_latency_seconds_bucket"
    assert latency[(bucket, (("le", "0.05"),))] == 1
    assert latency[(bucket, (("le", "0.1"),))] == 3
    assert latency[(bucket, (("le", "+Inf"),))] == 5
    assert latency[("postback_delivery_latency_seconds_count", ())] == 5
    assert latency[("postback_delivery_latency_seconds_sum", ())] == pytest.approx(3.12)


def test_lag_and_pending_gauges_per_group(app, redis_client):
    keys = app.ctx.keys
    stream = keys.input_stream(1)
    for i in range(5):
        redis_client.xadd(stream, {"source": "k", "params": "{}", "n": i})
    redis_client.xreadgroup("matcher", "m-1", {stream: ">"}, count=2)
    redis_client.zadd(keys.retry_queue(0), {"job": 1})
    families = scrape(app)
    labels = (("group", "matcher"), ("stream", stream))
    assert families["postback_stream_lag"][("postback_stream_lag", labels)] == 3
    assert families["postback_stream_pending"][("postback_stream_pending", labels)] == 2
    assert families["postback_stream_length"][("postback_stream_length", labels)] == 5
    assert len(families["postback_stream_lag"]) == 4  # two groups on each of two partitions
    assert families["postback_retry_queue"][("postback_retry_queue", ())] == 1


def test_metrics_answer_while_redis_is_down():
    app = create_app(Settings(redis_url="redis://127.0.0.1:1/0", namespace="tdown"))
    families = scrape(app)
    assert families["postback_redis_up"][("postback_redis_up", ())] == 0
    assert "postback_received" in families


def test_openmetrics_when_asked(app):
    result = testing.TestClient(app).simulate_get(
        "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
    )
    assert result.headers["content-type"].startswith("application/openmetrics-text")
    assert result.text.rstrip().endswith("# EOF")
