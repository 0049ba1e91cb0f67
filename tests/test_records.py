"""Records in Redis hashes: one typed conversion, the same hash fields as ever.

The golden mappings are what the hand-written conversions stored before
``core.records`` replaced them: records already in Redis, and the Lua scripts that read
them (ingest.lua compares a source's ``dialect`` as one value), depend on them.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.clicks import SUB_IDS, Click
from core.offers import Offer
from core.partners import Partner
from core.sources import Source
from storage.partner_health import Health

SOURCE = Source(
    key="k" * 24,
    name="Survey wall",
    active=False,
    allow=["10.0.0.0/8", "2001:db8::/32"],
    created=1714000000000,
    params={"payout": "sum", "click_id": "aff_sub"},
    status_map={"1": "approved"},
)
OFFER = Offer(
    offer_id="VBFS6",
    name="VBFS six",
    revshare_percent=Decimal("80.5"),
    url="https://offer.example/?c={click_id}",
    window_days=7,
    created=5,
    goals={"purchase": {"revshare": "50"}, "install": {"fixed": "1.00"}},
    hold_s=604800,
)
PARTNER = Partner(
    partner_id="p1",
    url="https://p.example/pb?c={click_id}",
    name="One",
    email="ops@p.example",
    method="POST",
    scope="all",
    secret="shh",
    allow_private=True,
    created=7,
    status_map={"approved": "1"},
)
CLICK = Click("C1", "VBFS6", "p1", "u1", ip="203.0.113.5", created=9, subs={"sub2": "b"})

GOLDEN = [
    (
        SOURCE,
        {
            "key": "k" * 24,
            "name": "Survey wall",
            "active": "0",
            "allow": "10.0.0.0/8,2001:db8::/32",
            "created": "1714000000000",
            "dialect": '{"params":{"click_id":"aff_sub","payout":"sum"},"status_map":{"1":"approved"}}',
        },
    ),
    (
        Source(key="s" * 16, name="Plain"),
        {
            "key": "s" * 16,
            "name": "Plain",
            "active": "1",
            "allow": "",
            "created": "0",
            "dialect": "",
        },
    ),
    (
        OFFER,
        {
            "offer_id": "VBFS6",
            "name": "VBFS six",
            "payout_model": "revshare",
            "revshare_percent": "80.5",
            "fixed_cents": "",
            "currency": "USD",
            "url": "https://offer.example/?c={click_id}",
            "window_days": "7",
            "active": "1",
            "created": "5",
            "goals": '{"install":{"fixed":"1.00"},"purchase":{"revshare":"50"}}',
            "hold_s": "604800",
        },
    ),
    (
        Offer(offer_id="F1", payout_model="fixed", fixed_cents=150),
        {
            "offer_id": "F1",
            "name": "",
            "payout_model": "fixed",
            "revshare_percent": "",
            "fixed_cents": "150",
            "currency": "USD",
            "url": "",
            "window_days": "30",
            "active": "1",
            "created": "0",
            "goals": "",
            "hold_s": "0",
        },
    ),
    (
        PARTNER,
        {
            "partner_id": "p1",
            "url": "https://p.example/pb?c={click_id}",
            "name": "One",
            "email": "ops@p.example",
            "method": "POST",
            "scope": "all",
            "secret": "shh",
            "active": "1",
            "allow_private": "1",
            "created": "7",
            "dialect": '{"params":{},"status_map":{"approved":"1"}}',
        },
    ),
    (
        CLICK,
        {
            "click_id": "C1",
            "offer_id": "VBFS6",
            "partner_id": "p1",
            "user_id": "u1",
            "ip": "203.0.113.5",
            "created": "9",
            "sub2": "b",
        },
    ),
]


@pytest.mark.parametrize("record, stored", GOLDEN, ids=lambda v: type(v).__name__)
def test_a_record_is_stored_in_the_same_hash_fields_as_before(record, stored):
    assert record.to_redis() == stored
    assert type(record).from_redis(stored) == record


# -- every record type survives the round trip ------------------------------------------------
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=20)  # JSON-encodable
NAMES = st.dictionaries(TEXT, TEXT, max_size=3)
WHEN = st.integers(min_value=0, max_value=2**53)
NETWORKS = st.lists(st.from_regex(r"\A[0-9a-f.:/]{1,20}\Z"), max_size=3)

RECORDS = {
    "Source": st.builds(
        Source,
        key=TEXT,
        name=TEXT,
        active=st.booleans(),
        allow=NETWORKS,
        created=WHEN,
        params=NAMES,
        status_map=NAMES,
    ),
    "Offer": st.builds(
        Offer,
        offer_id=TEXT,
        name=TEXT,
        payout_model=st.sampled_from(["revshare", "fixed"]),
        revshare_percent=st.none() | st.decimals(allow_nan=False, allow_infinity=False),
        fixed_cents=st.none() | st.integers(min_value=-(2**63), max_value=2**63),
        currency=TEXT,
        url=TEXT,
        window_days=st.integers(min_value=-5, max_value=5000),
        active=st.booleans(),
        created=WHEN,
        goals=st.dictionaries(TEXT, NAMES, max_size=3),
        hold_s=st.integers(min_value=0, max_value=10**9),
    ),
    "Partner": st.builds(
        Partner,
        partner_id=TEXT,
        url=TEXT,
        name=TEXT,
        email=TEXT,
        method=st.sampled_from(["GET", "POST"]),
        scope=st.sampled_from(["own", "all"]),
        secret=TEXT,
        active=st.booleans(),
        allow_private=st.booleans(),
        created=WHEN,
        params=NAMES,
        status_map=NAMES,
    ),
    "Click": st.builds(
        Click,
        click_id=TEXT,
        offer_id=TEXT,
        partner_id=TEXT,
        user_id=TEXT,
        ip=TEXT,
        created=WHEN,
        subs=st.dictionaries(st.sampled_from(SUB_IDS), TEXT.filter(bool), max_size=5),
    ),
    "Health": st.builds(
        Health,
        failures=st.integers(min_value=0, max_value=10**6),
        paused=st.booleans(),
        paused_since=WHEN,
        next_probe=WHEN,
        last_error=TEXT,
    ),
}


def test_every_record_kept_in_redis_has_a_round_trip_test():
    from core.records import Record

    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    kept = {
        cls.__name__
        for cls in subclasses(Record)
        if not cls.__module__.startswith(("tests.", "core.records"))  # examples of their own
    }
    assert kept == set(RECORDS)


@pytest.mark.parametrize("name", sorted(RECORDS))
def test_a_record_reads_back_as_it_was_written(name):
    @given(RECORDS[name])
    def round_trip(record):
        stored = record.to_redis()
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in stored.items())
        assert type(record).from_redis(stored) == record

    round_trip()


@pytest.mark.parametrize("name", sorted(RECORDS))
def test_a_record_reads_back_from_redis_itself(name, redis_client, keys):
    key = keys.click("record-test-" + name)  # a key of the test's own namespace

    @given(RECORDS[name])
    def round_trip(record):
        redis_client.delete(key)
        redis_client.hset(key, mapping=record.to_redis())
        assert type(record).from_redis(redis_client.hgetall(key)) == record

    round_trip()


# -- reading what older or half-written records hold ----------------------------------------
def test_missing_and_empty_fields_read_as_the_defaults():
    offer = Offer.from_redis({"offer_id": "VBFS6", "window_days": "", "revshare_percent": ""})
    assert (offer.window_days, offer.revshare_percent, offer.currency) == (30, None, "USD")
    assert (offer.goals, offer.hold_s, offer.created) == ({}, 0, 0)
    # a flag is true only when stored as one: a record missing "active" is not active
    assert offer.active is False
    assert Click.from_redis({"click_id": "C1", "sub1": "", "sub9": "x"}).subs == {}
    assert Health.from_redis({}) == Health()


def test_unknown_hash_fields_are_ignored():
    stored = {**SOURCE.to_redis(), "secret": "a source secret an older version stored"}
    assert Source.from_redis(stored) == SOURCE


def test_an_allow_list_entry_that_cannot_be_stored_is_refused():
    with pytest.raises(ValueError, match="no comma"):
        Source(key="k" * 16, name="S", allow=["10.0.0.0/8,10.1.0.0/16"]).to_redis()


def test_a_field_type_without_a_stored_form_is_a_clear_error():
    from dataclasses import dataclass

    from core.records import Record

    @dataclass
    class Odd(Record):
        when: float = 0.0

    with pytest.raises(TypeError, match=r"Odd\.when: no stored form"):
        Odd().to_redis()
