"""The Python-Lua protocol of ``match.lua``: one schema on both sides.

The planner builds each entry's arguments as a ``Segment`` (processors/matcher/segment.py)
and the script reads them through named offsets (``local F_<FIELD> = <n>``) and named
effect flags (``local FLAG_<ACTION> = <bit>``). These tests hold the two to each other,
show that the check catches a field moved on one side only, and that a segment shifted
by one argument is refused with nothing written.
"""

from __future__ import annotations

import re

import pytest
import redis

from core.offers import Offer
from processors.matcher.plan import decode_entries
from processors.matcher.segment import EFFECT_FLAGS, SEGMENT_LENGTH, Segment
from processors.matcher.step import Matcher
from storage.scripts import LUA_DIR
from tests.test_matcher import SOURCE, add_click, add_partner, post

SCRIPT = (LUA_DIR / "match.lua").read_text()


def schema_problems(text: str) -> list[str]:
    """How the offsets and flags declared in a match.lua text differ from the Python
    schema; [] when they agree."""
    offsets = [
        (int(n), name.lower()) for name, n in re.findall(r"^local F_(\w+) = (\d+)$", text, re.M)
    ]
    problems = []
    declared = [name for _, name in offsets]
    if declared != list(Segment._fields):
        problems.append(f"fields in the script {declared} != Segment {list(Segment._fields)}")
    for index, (offset, name) in enumerate(offsets):
        if offset != index:
            problems.append(f"F_{name.upper()} = {offset}, but it is field {index}")
    seg = re.search(r"^local SEG = (\d+)$", text, re.M)
    if not seg or int(seg.group(1)) != SEGMENT_LENGTH:
        problems.append(f"SEG is {seg and seg.group(1)}, the segment has {SEGMENT_LENGTH} fields")
    flags = {
        name.lower(): int(bit)
        for name, bit in re.findall(r"^local FLAG_(\w+) = (\d+)$", text, re.M)
    }
    if flags != EFFECT_FLAGS:
        problems.append(f"flags in the script {flags} != {EFFECT_FLAGS}")
    return problems


def test_the_script_reads_the_segment_the_planner_writes():
    assert schema_problems(SCRIPT) == []


def _swap(text: str, first: str, second: str) -> str:
    """The script with the declarations of two fields (or flags) exchanged."""
    a = re.search(rf"^local {first} = \d+$", text, re.M).group(0)
    b = re.search(rf"^local {second} = \d+$", text, re.M).group(0)
    return text.replace(a, "\0").replace(b, a).replace("\0", b)


@pytest.mark.parametrize(
    "first, second",
    [
        ("F_CLICK_ID", "F_OFFER_ID"),
        ("F_PARTNER_CENTS", "F_UPSTREAM_CENTS"),
        ("F_LOG_ID", "F_HOLD_MS"),
    ],
)
def test_two_fields_swapped_in_the_script_fail_the_check(first, second):
    fields = list(Segment._fields)
    i, j = (fields.index(name.removeprefix("F_").lower()) for name in (first, second))
    swapped = list(fields)
    swapped[i], swapped[j] = fields[j], fields[i]
    problems = schema_problems(_swap(SCRIPT, first, second))
    assert problems[0] == f"fields in the script {swapped} != Segment {fields}"


def test_an_offset_moved_in_the_script_fails_the_check():
    moved = SCRIPT.replace("local F_CURRENCY = 5\n", "local F_CURRENCY = 6\n")
    assert schema_problems(moved) == ["F_CURRENCY = 6, but it is field 5"]


def test_a_field_missing_from_the_script_fails_the_check():
    problems = schema_problems(SCRIPT.replace("local F_GOAL = 25\n", ""))
    assert problems[1:3] == [
        "F_SURVEY_ID = 26, but it is field 25",
        "F_CUSTOM = 27, but it is field 26",
    ]


def test_two_flags_swapped_in_the_script_fail_the_check():
    swapped = SCRIPT.replace("local FLAG_CREDIT = 8\n", "local FLAG_CREDIT = 16\n").replace(
        "local FLAG_DEBIT = 16\n", "local FLAG_DEBIT = 8\n"
    )
    script_flags = dict(EFFECT_FLAGS, credit=16, debit=8)
    assert schema_problems(swapped) == [f"flags in the script {script_flags} != {EFFECT_FLAGS}"]


def test_the_script_names_every_field_it_reads():
    # A bare offset (ARGV[p + 17]) is what the schema exists to replace.
    assert not re.findall(r"ARGV\[\w+ \+ \d", SCRIPT)
    for name in Segment._fields:
        uses = re.findall(rf"\bF_{name.upper()}\b", SCRIPT)
        assert len(uses) >= 2, f"F_{name.upper()} is declared but never read"


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


def test_a_planned_entry_is_its_segment_then_its_recipients(planned):
    matcher, n, (_, _, segment, recipients) = planned
    assert segment.recipients == len(recipients) == 1
    assert segment.hold_ms == 3_600_000
    assert (segment.click_id, segment.offer_id, segment.partner_id) == ("CLK-1", "HELD", "PUB")
    assert segment.partner_cents == 400 and segment.upstream_cents == 500
    _, args = matcher.planner.call(n, [planned[2]], 0, 1)
    assert args == ["matcher", *segment, *recipients, 0, 1]


def test_a_segment_shifted_by_one_argument_is_refused_and_writes_nothing(
    planned, redis_client, keys
):
    matcher, n, (log_id, key, segment, recipients) = planned
    shifted = [*segment[:-1], "", segment[-1]]  # one argument too many before the hold
    keys_, args = matcher.planner.call(n, [(log_id, key, shifted, recipients)], 0, 1)
    with pytest.raises(redis.ResponseError, match="argument count does not match the plan"):
        matcher.scripts.run(redis_client, "match", keys_, args)
    assert redis_client.xlen(keys.received_log(n)) == 0
    assert redis_client.xpending(keys.input_stream(n), "matcher")["pending"] == 1
    # the segment as planned goes through
    keys_, args = matcher.planner.call(n, [(log_id, key, segment, recipients)], 0, 1)
    assert matcher.scripts.run(redis_client, "match", keys_, args) == "matched"
