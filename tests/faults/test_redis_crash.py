"""Redis itself SIGKILLed and restarted during a load.

The test starts its own ``redis-server`` on a free port, in a temporary directory,
with ``appendonly yes`` and ``appendfsync always`` (the settings the README's
guarantees need); 6379 is never touched. While it is down the edge answers 503 with
``Retry-After``; when it is back, the edge, the matcher and the forwarder carry on by
themselves (the same processes, never restarted), and every postback that got a 200
is credited once and delivered.
"""

from __future__ import annotations

import subprocess
import time

import pytest
import requests

from core.config import Settings
from scripts.embedded_redis import answers, find_redis_server
from storage.keys import Keys
from storage.redis_client import connect, ensure_groups
from storage.repositories import Store
from tests.faults.harness import (
    Load,
    Network,
    add_catalogue,
    settle,
    worker_env,
)
from tests.procs import free_port
from tests.sink import sink_fixture, until  # noqa: F401 - fixtures


class DurableRedis:
    """A redis-server of the test's own, writing every change to its AOF before replying."""

    def __init__(self, directory) -> None:
        self.binary = find_redis_server()
        if self.binary is None:
            pytest.skip("no redis-server binary on this machine")
        self.port = free_port()
        self.dir = directory
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1"]
            + ["--dir", str(self.dir), "--appendonly", "yes", "--appendfsync", "always"]
            + ["--save", "", "--daemonize", "no", "--logfile", str(self.dir / "redis.log")],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        until(lambda: answers(self.url), timeout=30, message="our redis-server answering")
        # After a restart it answers LOADING while it replays the AOF.
        until(self._loaded, timeout=60, message="our redis-server loaded its AOF")

    def _loaded(self) -> bool:
        client = connect(Settings(redis_url=self.url))
        try:
            return client.ping()
        except Exception:  # noqa: BLE001 - LOADING, or not yet accepting
            return False
        finally:
            client.close()

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)


@pytest.fixture
def durable_redis(tmp_path):
    redis_server = DurableRedis(tmp_path)
    redis_server.start()
    yield redis_server
    redis_server.stop()


def test_redis_killed_under_load_loses_nothing_that_got_a_200(durable_redis, sink, record_property):
    settings = Settings(redis_url=durable_redis.url, namespace="faults", partitions=4)
    client = connect(settings)
    keys = Keys(settings.namespace, settings.partitions)
    ensure_groups(client, keys)
    store = Store(client, keys)
    source = add_catalogue(store, {"net": sink.url("/net")}, 3000)
    network = Network(worker_env(durable_redis.url, settings.namespace, 4)).start()
    load = Load(network.base, source.key, 3000, threads=3, per_thread_per_s=15).start()
    try:
        until(lambda: len(load.accepted) >= 100, timeout=60, message="load flowing")
        durable_redis.kill()
        killed_at = time.monotonic()
        until(lambda: load.retry_after_seen, timeout=30, message="a 503 with Retry-After")
        until(lambda: load.refusals[503] >= 20, timeout=60, message="the edge refusing a while")
        ready = requests.get(f"{network.base}/ready", timeout=10)
        assert ready.status_code == 503 and ready.headers.get("Retry-After")
        durable_redis.start()
        back = len(load.accepted)
        until(
            lambda: len(load.accepted) >= back + 100, timeout=90, message="200s again after restart"
        )
        load.stop()
        down_s = time.monotonic() - killed_at

        got = settle(store, load, lambda: sink.received("/net"), network)
        # Nobody was restarted: the same processes recovered by themselves.
        assert all(s.running() and s.starts == 1 for s in network.services), network.output()
        duplicates = sum(count - 1 for count in got.values())
        record_property("duplicate_deliveries", duplicates)
        print(
            f"\nfault suite, Redis killed: {len(load.accepted)} accepted, "
            f"{sum(load.refusals.values())} refused meanwhile ({dict(load.refusals)}), "
            f"{len(load.lost)} without a 200, outage and recovery {down_s:.1f} s, "
            f"all accepted credited once and delivered, {duplicates} duplicate deliveries"
        )
    finally:
        load.stop()
        network.close()
        client.close()
