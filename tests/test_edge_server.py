"""``postback edge`` as a real waitress server: start-up checks and proxy headers.

SPEC §8: an admin token under 16 characters stops the edge at start with one line;
``POSTBACK_TRUSTED_PROXIES`` makes the edge believe ``X-Forwarded-For`` from those
peers only (issue #8, defect 3: waitress dropped the header before the app saw it).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import requests

from core.sources import Source
from tests.procs import Service, free_port, wait_http

CALLER = "203.0.113.9"


def edge_env(settings, **extra: str) -> dict[str, str]:
    return {"REDIS_URL": settings.redis_url, "POSTBACK_NAMESPACE": settings.namespace, **extra}


def test_an_admin_token_under_16_characters_stops_the_edge_at_start(settings):
    env = {**os.environ, **edge_env(settings), "POSTBACK_ADMIN_TOKEN": "x" * 15}
    done = subprocess.run(
        [sys.executable, "-m", "scripts.cli", "edge", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    [line] = done.stderr.strip().splitlines()
    assert "POSTBACK_ADMIN_TOKEN" in line and "16 characters" in line


@pytest.fixture
def served(settings):
    """Start ``postback edge`` with extra environment; yields its base URL."""
    services: list[Service] = []

    def serve(**extra: str) -> str:
        port = free_port()
        edge = Service(
            "edge",
            ["edge", "--host", "127.0.0.1", "--port", str(port), "--threads", "2"],
            edge_env(settings, **extra),
        )
        services.append(edge.start())
        wait_http(f"http://127.0.0.1:{port}/health", edge)
        return f"http://127.0.0.1:{port}"

    yield serve
    for edge in services:
        edge.close()


def post_from(base: str, key: str, forwarded_for: str | None) -> requests.Response:
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    return requests.get(
        f"{base}/postback/{key}", params={"click_id": "c1"}, headers=headers, timeout=10
    )


def test_behind_a_trusted_proxy_the_forwarded_caller_is_checked(served, store, redis_client, keys):
    source = store.add_source(Source.build(name="behind-lb", allow_ip=[CALLER + "/32"]))
    base = served(POSTBACK_TRUSTED_PROXIES="127.0.0.0/8,10.0.0.0/8")

    assert post_from(base, source.key, None).status_code == 403  # the proxy itself
    assert post_from(base, source.key, "198.51.100.1").status_code == 403
    # The right-most address that is not a trusted proxy is the caller.
    ok = post_from(base, source.key, f"198.51.100.1, {CALLER}, 10.1.2.3")
    assert ok.status_code == 200, ok.text
    [(_, fields)] = redis_client.xrange(keys.input_stream(keys.partition_of(source.key)))
    assert fields["ip"] == CALLER


def test_without_trusted_proxies_a_forwarded_header_proves_nothing(served, store):
    source = store.add_source(Source.build(name="direct", allow_ip=[CALLER + "/32"]))
    base = served()
    assert post_from(base, source.key, CALLER).status_code == 403
