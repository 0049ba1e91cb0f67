"""/health, /ready, the postback self-test, and ``postback edge`` serving on waitress."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import requests

from core.sources import Source
from tests.procs import child_env, free_port, stop


def test_health(client):
    resp = client.simulate_get("/health")
    assert resp.status_code == 200
    assert resp.json == {"status": "ok"}


def test_ready_when_redis_answers(client):
    resp = client.simulate_get("/ready")
    assert resp.status_code == 200
    assert resp.json == {"status": "ready"}


def test_postback_self_test_document(client):
    resp = client.simulate_get("/api/analytics/postback/test")
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/json"
    assert resp.json == {
        "status": "online",
        "endpoint": "/postback/{key}",
        "methods": ["GET", "POST"],
        "required_params": ["click_id"],
        "optional_params": ["status", "payout", "transaction_id", "+ any custom fields"],
    }


def test_the_edge_creates_the_consumer_groups_at_start(settings, redis_client, keys):
    from edge.app import create_app

    assert not redis_client.exists(keys.input_stream(0))
    create_app(settings).ctx.redis.close()
    assert [g["name"] for g in redis_client.xinfo_groups(keys.input_stream(0))] == ["matcher"]
    assert [g["name"] for g in redis_client.xinfo_groups(keys.forward_stream(0))] == ["forwarder"]


# -- the real server -------------------------------------------------------------------


def _wait_for(url: str, proc: subprocess.Popen, deadline_s: float = 20.0) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode()
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return
        except requests.ConnectionError:
            time.sleep(0.05)  # polling a starting server, with a deadline
    pytest.fail(f"{url} did not answer within {deadline_s} s")


def _chunks(total: int, size: int = 64 * 1024):
    sent = 0
    while sent < total:
        yield b"x" * size
        sent += size


def test_postback_edge_serves_and_stops_cleanly(settings, store, redis_client, keys):
    source = store.add_source(Source.build(name="live"))
    port = free_port()
    env = child_env(settings)
    proc = subprocess.Popen(
        [sys.executable, "-m", "scripts.cli", "edge", "--host", "127.0.0.1", "--port", str(port)]
        + ["--threads", "2"],
        env=env,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_for(f"{base}/health", proc)
        resp = requests.get(
            f"{base}/postback/{source.key}", params={"click_id": "c1", "payout": "2"}, timeout=5
        )
        assert resp.status_code == 200
        assert resp.headers["content-type"] == "application/json"
        [(entry_id, fields)] = redis_client.xrange(keys.input_stream(0))
        assert entry_id == resp.json()["log_id"] and fields["ip"] == "127.0.0.1"

        # A chunked body has no Content-Length: it is still cut off at the limit.
        resp = requests.post(f"{base}/postback/{source.key}", data=_chunks(128 * 1024), timeout=10)
        assert resp.status_code == 413
        resp = requests.post(
            f"{base}/postback/{source.key}/batch", data=_chunks(9 * 1024 * 1024), timeout=30
        )
        assert resp.status_code == 413
        assert redis_client.xlen(keys.input_stream(0)) == 1
    finally:
        try:
            code = stop(proc, 15)
        finally:
            stderr = proc.stderr.read().decode()
            proc.stderr.close()
    assert code == 0, stderr
    assert f"http://127.0.0.1:{port}" in stderr
