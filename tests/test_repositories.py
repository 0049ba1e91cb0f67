"""Store: records round-trip through Redis, config changes bump the version."""

from __future__ import annotations

from decimal import Decimal

import pytest

from core.offers import Offer
from core.partners import Partner
from core.sources import Source
from core.validation import ValidationError
from storage.keys import Keys
from storage.repositories import NotFound, Store


def test_offer_round_trip_keeps_exact_amounts(store):
    store.add_offer(Offer.build("REV", revshare="33.5", currency="eur"))
    store.add_offer(Offer.build("FIX", fixed="50", window_days=7))
    rev, fix = store.get_offer("REV"), store.get_offer("FIX")
    assert rev.revshare_percent == Decimal("33.5") and rev.currency == "EUR"
    assert fix.fixed_cents == 5000 and fix.window_days == 7 and fix.payout_model == "fixed"


def test_every_change_bumps_the_config_version(store):
    v0 = store.config_version()
    store.add_partner(Partner.build("p1", url="https://p.example/pb"))
    v1 = store.config_version()
    store.set_active("partner", "p1", False)
    v2 = store.config_version()
    store.update_partner("p1", Partner.build("p1", url="https://p2.example/pb", scope="all"))
    assert v0 < v1 < v2 < store.config_version()
    partner = store.get_partner("p1")
    assert (partner.url, partner.scope, partner.active) == ("https://p2.example/pb", "all", False)


def test_every_partition_keeps_a_copy_of_the_source_rewritten_on_each_change(
    redis_client, settings
):
    keys = Keys(settings.namespace, partitions=4)
    store = Store(redis_client, keys)
    source = store.add_source(Source.build(name="W", key="abc123xyz-0123456789"))
    assert [s.key for s in store.list_sources()] == [source.key]

    def copies(field):
        return [redis_client.hget(keys.source_copy(n, source.key), field) for n in range(4)]

    assert copies("name") == ["W"] * 4 and copies("active") == ["1"] * 4
    store.update_source(source.key, name="Renamed")
    store.set_active("source", source.key, False)
    assert copies("name") == ["Renamed"] * 4 and copies("active") == ["0"] * 4
    assert keys.source_copy(3, source.key).startswith(f"{settings.namespace}:{{p3}}:")


def test_click_expires_after_the_window_and_is_indexed_for_fallback(store, keys):
    store.add_offer(Offer.build("O1", fixed="1", window_days=7))
    store.add_partner(Partner.build("p1", url="https://p.example/pb"))
    click = store.add_click(
        offer_id="O1", partner_id="p1", user_id="u1", subs={"sub2": "x", "bogus": "y"}
    )
    ttl = store.r.ttl(keys.click(click.click_id))
    assert 7 * 86400 < ttl <= 8 * 86400
    assert store.r.zscore(keys.offer_clicks("O1"), click.click_id) == click.created
    assert store.get_click(click.click_id).subs == {"sub2": "x"}


def test_click_needs_an_active_offer_and_a_known_partner(store):
    store.add_offer(Offer.build("O1", fixed="1"))
    with pytest.raises(ValidationError, match="partner"):
        store.add_click(offer_id="O1", partner_id="ghost", user_id="u1", click_id="CLK-1")
    with pytest.raises(NotFound):
        store.get_click("CLK-1")  # nothing half-written
    store.set_active("offer", "O1", False)
    store.add_partner(Partner.build("p1", url="https://p.example/pb"))
    with pytest.raises(ValidationError, match="not active"):
        store.add_click(offer_id="O1", partner_id="p1", user_id="u1")


def test_balance_sums_every_partition(redis_client, settings):
    keys = Keys(settings.namespace, partitions=3)
    store = Store(redis_client, keys)
    redis_client.hincrby(keys.points(0), "u1", 400)
    redis_client.hincrby(keys.points(2), "u1", 280)
    assert store.user("u1") == {"user_id": "u1", "points": "6.80", "held": "0.00"}


def test_conversion_shows_amounts_as_strings(store, keys):
    keys_ = keys
    store.r.hset(
        keys_.conversion(0, "cv0-abc"),
        mapping={
            "conversion_id": "cv0-abc",
            "status": "approved",
            "payout_cents": "500",
            "partner_payout_cents": "400",
            "credited_cents": "400",
            "custom": '{"age": 28}',
            "history": '[{"status": "approved", "partner_payout_cents": 400}]',
            "created": "1",
        },
    )
    conversion = store.get_conversion("cv0-abc")
    assert (conversion["payout"], conversion["partner_payout"], conversion["credited"]) == (
        "5.00",
        "4.00",
        "4.00",
    )
    assert conversion["custom"] == {"age": 28}
    assert conversion["history"] == [{"status": "approved", "partner_payout": "4.00"}]
    with pytest.raises(NotFound):
        store.get_conversion("cv9-abc")
