"""The seed document's scenarios 1-10 (``/work/shared/seeds/000_*.txt``), end to end
through the matcher on a real Redis: what the user is credited and what partners get."""

from __future__ import annotations

import pytest

from core.offers import Offer
from tests.test_matcher import (
    add_click,
    add_partner,
    conversions,
    drain,
    jobs,
    points,
    post,
    received,
)


@pytest.fixture
def seeded(store):
    """An 80% revenue-share network: publisher PUB (scope own) sent every click."""
    for offer_id in ("VBFS6", "OFFER-123", "DEMO", "OFFER-456", "SURVEY-789", "OFFER-REV"):
        store.add_offer(Offer.build(offer_id, revshare=80))
    for offer_id in ("OFFER-A", "OFFER-B", "OFFER-C", "OFFER-1", "OFFER-2", "OFFER-3"):
        store.add_offer(Offer.build(offer_id, revshare=80))
    store.add_offer(Offer.build("OFFER-FIXED", fixed="50"))
    store.add_offer(Offer.build("OFFER-EU", revshare=100, currency="EUR"))
    add_partner(store, "PUB")
    return store


@pytest.fixture
def matcher(redis_client, settings):
    from processors.matcher.step import Matcher

    return Matcher(redis_client, settings, consumer="seeds")


def payloads(redis_client, keys) -> list[dict]:
    return [j["payload"] for j in jobs(redis_client, keys)]


def test_scenario_1_survey_completion(seeded, matcher, redis_client, keys):
    add_click(seeded, "CLK-789ABC", offer_id="VBFS6")
    post(
        redis_client,
        keys,
        click_id="CLK-789ABC",
        status="approved",
        payout="5.00",
        survey_id="VBFS6",
        transaction_id="TXN-12345",
    )
    drain(matcher)

    assert points(seeded) == "4.00"
    [payload] = payloads(redis_client, keys)
    assert payload["payout"] == "4.00" and payload["status"] == "approved"
    assert payload["survey_id"] == "VBFS6" and payload["transaction_id"] == "TXN-12345"
    assert received(redis_client, keys)[0]["outcome"] == "matched"


def test_scenario_2_pending_then_approval(seeded, matcher, redis_client, keys):
    add_click(seeded, "CLK-456DEF", offer_id="OFFER-123")
    ask = {"click_id": "CLK-456DEF", "payout": "10.00", "offer_id": "OFFER-123"}
    post(redis_client, keys, status="pending", transaction_id="TXN-67890", **ask)
    drain(matcher)

    assert points(seeded) == "0.00"
    [conversion] = conversions(redis_client, keys, seeded)
    assert conversion["status"] == "pending"
    assert [(p["status"], p["payout"]) for p in payloads(redis_client, keys)] == [
        ("pending", "8.00")
    ]

    post(redis_client, keys, status="approved", transaction_id="TXN-67890", **ask)
    drain(matcher)

    assert points(seeded) == "8.00"
    [conversion] = conversions(redis_client, keys, seeded)
    assert conversion["status"] == "approved"
    assert [p["status"] for p in payloads(redis_client, keys)] == ["pending", "approved"]


def test_scenario_3_custom_data_kept_and_forwarded(seeded, matcher, redis_client, keys):
    add_click(seeded, "CLK-999XYZ", offer_id="DEMO")
    custom = {
        "user_age": 28,
        "user_gender": "female",
        "user_country": "US",
        "user_state": "CA",
        "completion_time_seconds": 180,
        "survey_responses": '{"q1":"yes","q2":"no","q3":"maybe"}',
    }
    post(
        redis_client,
        keys,
        method="POST",
        click_id="CLK-999XYZ",
        payout="3.50",
        survey_id="DEMO-001",
        transaction_id="TXN-DEMO-123",
        custom=dict(custom),
    )
    drain(matcher)

    assert points(seeded) == "2.80"
    [conversion] = conversions(redis_client, keys, seeded)
    assert conversion["custom"] == custom
    [payload] = payloads(redis_client, keys)
    assert payload["payout"] == "2.80"
    assert {k: payload[k] for k in custom} == custom


def test_scenario_4_three_offers_same_user(seeded, matcher, redis_client, keys):
    for click_id, offer_id in (
        ("CLK-001", "OFFER-A"),
        ("CLK-002", "OFFER-B"),
        ("CLK-003", "OFFER-C"),
    ):
        add_click(seeded, click_id, offer_id=offer_id)
    post(redis_client, keys, click_id="CLK-001", payout="5.00", offer_id="OFFER-A")
    post(redis_client, keys, click_id="CLK-002", payout="8.00", offer_id="OFFER-B")
    post(redis_client, keys, click_id="CLK-003", payout="12.00", offer_id="OFFER-C")
    drain(matcher)

    assert points(seeded) == "20.00"  # (5 + 8 + 12) × 80%
    assert len(conversions(redis_client, keys, seeded)) == 3
    assert sorted(p["payout"] for p in payloads(redis_client, keys)) == ["4.00", "6.40", "9.60"]


def test_scenario_5_rejected_for_fraud(seeded, matcher, redis_client, keys):
    add_click(seeded, "CLK-FRAUD-123", offer_id="OFFER-456")
    post(
        redis_client,
        keys,
        click_id="CLK-FRAUD-123",
        status="rejected",
        payout="0",
        offer_id="OFFER-456",
        transaction_id="TXN-REJECT-789",
        reason="fraud_detected",
    )
    drain(matcher)

    assert points(seeded) == "0.00"
    [conversion] = conversions(redis_client, keys, seeded)
    assert conversion["status"] == "rejected" and conversion["credited"] == "0.00"
    [payload] = payloads(redis_client, keys)
    assert payload["status"] == "rejected" and payload["reason"] == "fraud_detected"


def test_scenario_6_fallback_on_offer_with_warning(seeded, matcher, redis_client, keys):
    add_click(seeded, "CLK-SURVEY", offer_id="SURVEY-789")
    post(
        redis_client,
        keys,
        offer_id="SURVEY-789",
        status="approved",
        payout="7.00",
        transaction_id="TXN-NOCLICKID",
    )
    drain(matcher)

    assert points(seeded) == "5.60"
    [entry] = received(redis_client, keys)
    assert entry["outcome"] == "matched" and entry["matched_by"] == "offer_fallback"
    assert entry["warning"]
    [conversion] = conversions(redis_client, keys, seeded)
    assert conversion["matched_by"] == "offer_fallback" and conversion["warning"]


def test_scenario_7_revshare_versus_fixed(seeded, matcher, redis_client, keys):
    add_click(seeded, "CLK-REV-001", offer_id="OFFER-REV", user_id="u-rev")
    add_click(seeded, "CLK-FIXED-001", offer_id="OFFER-FIXED", user_id="u-fixed")
    post(redis_client, keys, click_id="CLK-REV-001", payout="100.00", offer_id="OFFER-REV")
    post(redis_client, keys, click_id="CLK-FIXED-001", payout="100.00", offer_id="OFFER-FIXED")
    drain(matcher)

    assert points(seeded, "u-rev") == "80.00"
    assert points(seeded, "u-fixed") == "50.00"
    by_click = {p["click_id"]: p["payout"] for p in payloads(redis_client, keys)}
    assert by_click == {"CLK-REV-001": "80.00", "CLK-FIXED-001": "50.00"}


def test_scenario_8_eur_kept(seeded, matcher, redis_client, keys):
    add_click(seeded, "CLK-EUR-001", offer_id="OFFER-EU")
    post(
        redis_client,
        keys,
        click_id="CLK-EUR-001",
        payout="42.50",
        currency="EUR",
        offer_id="OFFER-EU",
        transaction_id="TXN-EUR-123",
    )
    drain(matcher)

    assert points(seeded) == "42.50"
    [conversion] = conversions(redis_client, keys, seeded)
    assert conversion["currency"] == "EUR"
    [payload] = payloads(redis_client, keys)
    assert (payload["currency"], payload["payout"]) == ("EUR", "42.50")


def test_scenario_9_batch_each_processed_independently(seeded, matcher, redis_client, keys):
    for i, offer_id in enumerate(("OFFER-1", "OFFER-2", "OFFER-3"), start=1):
        add_click(seeded, f"CLK-BATCH-00{i}", offer_id=offer_id)
    for i, (payout, offer_id) in enumerate(
        (("5.00", "OFFER-1"), ("8.00", "OFFER-2"), ("12.00", "OFFER-3")), start=1
    ):
        post(
            redis_client,
            keys,
            method="BATCH",
            click_id=f"CLK-BATCH-00{i}",
            payout=payout,
            offer_id=offer_id,
        )
    drain(matcher)

    assert points(seeded) == "20.00"
    assert [e["outcome"] for e in received(redis_client, keys)] == ["matched"] * 3
    assert len(payloads(redis_client, keys)) == 3


def test_scenario_10_test_postback(seeded, matcher, redis_client, keys):
    add_partner(seeded, "NETWORK", scope="all")
    post(
        redis_client,
        keys,
        click_id="TEST-INTEGRATION-001",
        status="test",
        payout="1.00",
        offer_id="TEST-OFFER",
    )
    drain(matcher)

    assert conversions(redis_client, keys, seeded) == [] and points(seeded) == "0.00"
    [job] = jobs(redis_client, keys)
    assert job["partner_id"] == "NETWORK"
    assert (job["payload"]["status"], job["payload"]["payout"]) == ("test", "1.00")
    assert received(redis_client, keys)[0]["outcome"] == "test"
