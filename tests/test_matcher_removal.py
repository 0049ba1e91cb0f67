"""Applied postbacks leave the input stream, and nothing else does.

``match.lua`` removes a chunk's entries with one XTRIM MINID when no older entry is
still pending, and with XDEL otherwise; either way an entry not yet applied (newer and
not read yet, or older and pending for another consumer) stays until it is applied.
"""

from __future__ import annotations

import pytest

from core.offers import Offer
from processors.matcher.step import GROUP, Matcher
from tests.test_matcher import add_click, add_partner, conversions, drain, points, post


@pytest.fixture
def world(store):
    store.add_offer(Offer.build("REV80", revshare=80))
    add_partner(store, "PUB")
    return store


def _clicks(store, count):
    for i in range(count):
        add_click(store, f"CLK-{i}")


def test_a_batch_removes_its_own_entries_and_leaves_the_newer_ones(
    world, redis_client, settings, keys
):
    _clicks(world, 5)
    for i in range(5):
        post(redis_client, keys, click_id=f"CLK-{i}", payout="1.00")
    matcher = Matcher(redis_client, settings.with_overrides(matcher_batch=2), consumer="c1")

    assert matcher.process_batch(0) == 2
    stream = keys.input_stream(0)
    assert redis_client.xlen(stream) == 3  # the three not read yet are still there
    assert drain(matcher) == 3
    assert redis_client.xlen(stream) == 0
    assert len(conversions(redis_client, keys, world)) == 5
    assert points(world) == "4.00"  # 5 x 0.80


def test_an_older_entry_pending_for_another_consumer_is_kept_until_it_is_applied(
    world, redis_client, settings, keys
):
    _clicks(world, 3)
    stream = keys.input_stream(0)
    first = post(redis_client, keys, click_id="CLK-0", payout="1.00")
    # Another matcher read the first postback and has not applied it yet.
    assert redis_client.xreadgroup(GROUP, "c2", {stream: ">"})[0][1][0][0] == first
    post(redis_client, keys, click_id="CLK-1", payout="1.00")
    post(redis_client, keys, click_id="CLK-2", payout="1.00")

    assert drain(Matcher(redis_client, settings, consumer="c1")) == 2
    assert [entry_id for entry_id, _ in redis_client.xrange(stream)] == [first]
    assert points(world) == "1.60"

    assert drain(Matcher(redis_client, settings, consumer="c2")) == 1  # its own pending
    assert redis_client.xlen(stream) == 0
    assert len(conversions(redis_client, keys, world)) == 3
    assert points(world) == "2.40"
