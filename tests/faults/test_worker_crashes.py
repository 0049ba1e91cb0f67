"""Matchers and forwarders SIGKILLed at random moments under load, and restarted.

Two matchers, two forwarders, one edge, real processes on the real Redis (the test's
own namespace). While the load runs, a worker is killed every 0.3-1.2 s (a fixed seed:
the same moments every run) and started again, half the time under its old consumer
name (it resumes its own pending entries), half under a new one (the others claim
what the dead one held). Afterwards every postback that got a 200 is credited exactly
once and delivered; duplicate deliveries (at-least-once) are counted and reported.
"""

from __future__ import annotations

import threading

import pytest

from tests.faults.harness import (
    Load,
    Network,
    add_catalogue,
    chaos_pauses,
    settle,
    worker_env,
)
from tests.sink import sink_fixture, until  # noqa: F401 - fixtures

POSTBACKS = 900


@pytest.fixture
def settings(settings):
    """Four partitions: the workers share them by lease, and take a dead one's over."""
    return settings.with_overrides(partitions=4)


@pytest.fixture
def network(settings):
    env = worker_env(
        settings.redis_url, settings.namespace, settings.partitions, POSTBACK_MAX_DELIVERIES="50"
    )
    network = Network(env)
    yield network
    network.close()


def test_killed_workers_lose_nothing_and_credit_nothing_twice(
    network, store, sink, record_property
):
    source = add_catalogue(store, {"net": sink.url("/net")}, POSTBACKS)
    network.start(matchers=2, forwarders=2)
    load = Load(network.base, source.key, POSTBACKS, threads=4, per_thread_per_s=25).start()

    kills = []
    stop = threading.Event()

    def chaos() -> None:
        for n, pause in enumerate(chaos_pauses(seed=8)):
            if stop.wait(pause):
                return
            worker = network.workers[n % len(network.workers)]
            worker.kill()
            if n % 2:  # a new name: its pending entries wait for a live worker's claim
                worker.args[2] = f"{worker.args[2].split('-')[0]}-r{n}"
            worker.start()
            kills.append(worker.name)

    chaos_thread = threading.Thread(target=chaos, daemon=True)
    chaos_thread.start()
    try:
        load.join()
        stop.set()
        chaos_thread.join(30)
        assert len(load.accepted) > POSTBACKS * 0.9, (load.lost, network.output())
        assert len(kills) >= 5, kills

        got = settle(store, load, lambda: sink.received("/net"), network)
        duplicates = sum(count - 1 for count in got.values())
        record_property("kills", len(kills))
        record_property("duplicate_deliveries", duplicates)
        print(
            f"\nfault suite, workers killed: {len(kills)} kills, {len(load.accepted)} accepted, "
            f"all credited once and delivered, {duplicates} duplicate deliveries"
        )
        assert set(got) <= {f"T{n}" for n in range(POSTBACKS)}
    finally:
        stop.set()
        load.stop()
