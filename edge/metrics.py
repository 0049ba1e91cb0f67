"""Prometheus metrics of the edge process (the ops issue adds ``/metrics`` itself).

Counters are labelled by source *name*, never by key: the key is a secret.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

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


def count_received(source_name: str, status: str, n: int = 1) -> None:
    POSTBACKS_RECEIVED.labels(source=source_name, status=status).inc(n)


def count_refused(reason: str, n: int = 1) -> None:
    POSTBACKS_REFUSED.labels(reason=reason).inc(n)


def register(app, ctx) -> None:
    """Routes are added by the ops issue."""
