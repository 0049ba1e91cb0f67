"""The Python-Lua protocol of ``match.lua``: the planner's segments have the length the
script reads, and a segment shifted by one argument is refused with nothing written."""

from __future__ import annotations

import re

import pytest
import redis

from core.offers import Offer
from processors.matcher.plan import SEGMENT_LENGTH, decode_entries
from processors.matcher.step import Matcher
from storage.scripts import LUA_DIR
from tests.test_matcher import SOURCE, add_click, add_partner, post


def test_the_script_reads_the_segment_length_the_planner_writes():
    text = (LUA_DIR / "match.lua").read_text()
    assert re.search(r"^local SEG = (\d+)$", text, re.M).group(1) == str(SEGMENT_LENGTH)


@pytest.fixture
def planned(store, redis_client, settings, keys):
    store.add_offer(Offer.build("HELD", revshare=80, hold="1h"))
    add_partner(store, "PUB")
    add_click(store, "CLK-1", "HELD")
    post(redis_client, keys, click_id="CLK-1", payout="5.00")
    matcher = Matcher(redis_client, settings, consumer="c1")
    n = keys.partition_of(SOURCE)
    entries = redis_client.xreadgroup("matcher", "c1", {keys.input_stream(n): ">"})[0][1]
    decoded, failures = decode_entries(entries)
    assert not failures
    clicks = matcher._read_clicks(decoded)
    item = matcher.planner.plan(n, decoded[0], clicks)
    return matcher, n, item


def test_a_planned_segment_is_the_fixed_part_then_the_recipients(planned):
    _, _, (_, _, segment) = planned
    recipients = segment[14]
    assert recipients == 1
    assert len(segment) == SEGMENT_LENGTH + recipients
    assert segment[28] == 3_600_000  # the hold, last of the fixed part


def test_a_segment_shifted_by_one_argument_is_refused_and_writes_nothing(
    planned, redis_client, keys
):
    matcher, n, (log_id, key, segment) = planned
    shifted = [*segment[:28], "", *segment[28:]]  # one argument too many before the hold
    keys_, args = matcher.planner.call(n, [(log_id, key, shifted)], 0, 1)
    with pytest.raises(redis.ResponseError, match="argument count does not match the plan"):
        matcher.scripts.run(redis_client, "match", keys_, args)
    assert redis_client.xlen(keys.received_log(n)) == 0
    assert redis_client.xpending(keys.input_stream(n), "matcher")["pending"] == 1
    # the segment as planned goes through
    keys_, args = matcher.planner.call(n, [(log_id, key, segment)], 0, 1)
    assert matcher.scripts.run(redis_client, "match", keys_, args) == "matched"
