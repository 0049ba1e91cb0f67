"""Partition leases (SPEC §9): a fair share each, rebalanced, a dead holder's taken over."""

from __future__ import annotations

import pytest

from processors.leases import Leases, fair_share, holders, live_members, orphans
from scripts import lag
from storage.keys import MATCHER_GROUP, Keys
from storage.redis_client import ensure_groups
from tests.test_matcher_worker import wait_for


@pytest.mark.parametrize(
    ("partitions", "members", "shares"),
    [
        (16, ["a"], [16]),
        (16, ["a", "b"], [8, 8]),
        (16, ["c", "a", "b"], [5, 6, 5]),
        (2, list("abc"), [1, 1, 0]),
    ],
)
def test_fair_share_gives_every_partition_to_exactly_one_member(partitions, members, shares):
    assert [fair_share(partitions, members, m) for m in members] == shares
    assert sum(shares) == partitions


@pytest.fixture
def keys16(settings) -> Keys:
    return Keys(settings.namespace, 16)


def lease(redis_client, keys16, name: str, lease_ms: int = 600) -> Leases:
    return Leases(redis_client, keys16, MATCHER_GROUP, name, lease_ms=lease_ms)


def test_a_newcomer_gets_its_share_and_a_dead_holders_partitions_are_taken_over(
    redis_client, keys16
):
    first = lease(redis_client, keys16, "m-a")
    gained, _ = first.refresh(force=True)
    assert gained == set(range(16)) and first.held == set(range(16))

    second = lease(redis_client, keys16, "m-b")
    second.refresh(force=True)  # registered; everything is still held by m-a
    assert second.held == set()
    _, lost = first.refresh(force=True)  # m-a sees two members: gives 8 back
    assert len(lost) == 8 and len(first.held) == 8
    gained, _ = second.refresh(force=True)
    assert gained == lost and first.held.isdisjoint(second.held)
    assert set(holders(redis_client, keys16, MATCHER_GROUP).values()) == {"m-a", "m-b"}

    # m-a dies: it renews nothing. Its leases and its registration lapse, then m-b
    # takes every partition.
    wait_for(
        lambda: second.refresh(force=True) and len(second.held) == 16,
        timeout=10,
        what="the survivor to take over",
    )
    assert set(holders(redis_client, keys16, MATCHER_GROUP).values()) == {"m-b"}
    assert live_members(redis_client, keys16, MATCHER_GROUP) == {"m-b"}


def test_a_clean_stop_gives_the_leases_back_at_once(redis_client, keys16):
    first, second = lease(redis_client, keys16, "m-a"), lease(redis_client, keys16, "m-b")
    first.refresh(force=True)
    second.refresh(force=True)
    first.release_all()
    second.refresh(force=True)
    assert second.held == set(range(16))


def test_a_lease_taken_by_another_is_lost_not_renewed(redis_client, keys16):
    first = lease(redis_client, keys16, "m-a")
    first.refresh(force=True)
    redis_client.set(keys16.lease(3, MATCHER_GROUP), "m-other", px=60_000)  # stolen
    _, lost = first.refresh(force=True)
    assert 3 in lost and 3 not in first.held
    assert redis_client.get(keys16.lease(3, MATCHER_GROUP)) == "m-other"


def test_orphans_are_the_pending_entries_of_consumers_no_longer_live(redis_client, keys16):
    ensure_groups(redis_client, keys16)
    stream = keys16.input_stream(0)
    for i in range(4):
        redis_client.xadd(stream, {"n": i})
    redis_client.xreadgroup(MATCHER_GROUP, "dead", {stream: ">"}, count=2)
    redis_client.xreadgroup(MATCHER_GROUP, "alive", {stream: ">"}, count=2)
    dead_ids = [
        e["message_id"]
        for e in redis_client.xpending_range(stream, MATCHER_GROUP, "-", "+", 10, "dead")
    ]
    assert orphans(redis_client, stream, MATCHER_GROUP, {"alive"}) == dead_ids


def test_lag_shows_which_process_holds_which_partition(redis_client, keys16):
    ensure_groups(redis_client, keys16)
    lease(redis_client, keys16, "m-a").refresh(force=True)
    report = lag.collect(redis_client, keys16)
    rows = {g["stream"]: g for g in report["groups"]}
    assert rows[keys16.input_stream(5)]["holder"] == "m-a"
    assert rows[keys16.forward_stream(5)]["holder"] == ""
    assert "HOLDER" in lag.render_table(report) and "m-a" in lag.render_table(report)


def test_an_idle_matcher_blocking_longer_than_its_lease_still_keeps_its_partitions(
    settings, redis_client, tmp_path
):
    import signal
    import time

    from tests.test_matcher_worker import Worker

    layout = settings.with_overrides(partitions=4, lease_ms=1500)
    keys = Keys(layout.namespace, 4)
    ensure_groups(redis_client, keys)
    worker = Worker(layout, tmp_path / "m.log", "--consumer", "m-idle", POSTBACK_BLOCK_MS="6000")
    try:
        wait_for(
            lambda: set(holders(redis_client, keys, MATCHER_GROUP).values()) == {"m-idle"},
            timeout=20,
            what="the matcher to hold every partition",
        )
        seen = set()
        deadline = time.monotonic() + 4  # past two lease lengths with nothing to read
        while time.monotonic() < deadline:
            seen |= set(holders(redis_client, keys, MATCHER_GROUP).values())
            time.sleep(0.05)  # sampling an invariant over a span, not waiting for an event
        assert seen == {"m-idle"}, "a lease lapsed while the matcher blocked"
    finally:
        worker.stop(signal.SIGTERM, timeout=20)
