"""The seed scenarios end to end: HTTP edge → matcher → forwarder → partner sink.

Everything real but the sockets of the edge (falcon's TestClient): real Redis, the
matcher's and forwarder's own batch steps, and a local HTTP partner.
"""

from __future__ import annotations

import pytest
from falcon import testing

from core.offers import Offer
from core.partners import Partner
from core.sources import Source
from edge.app import create_app
from processors.matcher.step import Matcher
from tests.sink import forwarded, make_forwarder_fixture, sink_fixture, until  # noqa: F401

KEY = "abc123xyz-seed-source-key"


@pytest.fixture
def settings(settings):
    """The default layout, 16 partitions: the seeds spread over them (and a cluster's nodes)."""
    return settings.with_overrides(partitions=16)


@pytest.fixture
def network(settings, store, sink):
    settings = settings.with_overrides(
        retry_schedule=(0, 0, 0, 0, 0, 0, 0, 0), pause_after_failures=100
    )
    store.add_source(Source.build(name="Survey wall", key=KEY))
    store.add_offer(Offer.build("VBFS6", revshare=80, url="https://offers.example/v?c={click_id}"))
    store.add_offer(Offer.build("OFFER-FIXED", fixed=50))
    store.add_offer(Offer.build("OFFER-EU", revshare=80, currency="EUR"))
    store.add_offer(Offer.build("SURVEY-789", revshare=80))
    store.add_partner(Partner.build("pub1", url=sink.url("/pub1"), scope="own", allow_private=True))
    store.add_partner(
        Partner.build("net", url=sink.url("/net"), method="POST", scope="all", allow_private=True)
    )
    clicks = {
        "CLK-789ABC": ("VBFS6", "u1"),
        "CLK-456DEF": ("VBFS6", "u2"),
        "CLK-999XYZ": ("VBFS6", "u3"),
        "CLK-FRAUD-123": ("VBFS6", "u4"),
        "CLK-FIXED-001": ("OFFER-FIXED", "u5"),
        "CLK-EUR-001": ("OFFER-EU", "u6"),
        "CLK-SURVEY": ("SURVEY-789", "u7"),
    }
    for click_id, (offer_id, user_id) in clicks.items():
        store.add_click(
            offer_id=offer_id,
            partner_id="pub1",
            user_id=user_id,
            click_id=click_id,
            subs={"sub1": "camp7"},
        )
    return settings


@pytest.fixture
def edge(network, redis_client):
    return testing.TestClient(create_app(network, redis_client))


@pytest.fixture
def matcher(network, redis_client):
    return Matcher(redis_client, network, consumer="m-e2e")


def drain(matcher: Matcher) -> None:
    while sum(matcher.process_batch(n) for n in matcher.keys.all_partitions()):
        pass


def send(edge, query: str) -> str:
    reply = edge.simulate_get(f"/postback/{KEY}", query_string=query)
    assert reply.status_code == 200, reply.text
    return reply.json["log_id"]


def test_seed_scenarios_credit_users_and_reach_partners_with_their_payout(
    edge, matcher, make_forwarder, sink, store, keys, redis_client, network
):
    forwarder = make_forwarder(settings=network)
    # 1: approved 5.00 at 80 % → 4.00
    send(
        edge,
        "click_id=CLK-789ABC&status=approved&payout=5.00&survey_id=VBFS6&transaction_id=TXN-12345",
    )
    # 2: pending, then approved
    send(
        edge,
        "click_id=CLK-456DEF&status=pending&payout=10.00&offer_id=OFFER-123&transaction_id=TXN-67890",
    )
    drain(matcher)
    assert store.user("u2")["points"] == "0.00"
    send(
        edge,
        "click_id=CLK-456DEF&status=approved&payout=10.00&offer_id=OFFER-123&transaction_id=TXN-67890",
    )
    # 3: POST with custom data
    reply = edge.simulate_post(
        f"/postback/{KEY}",
        json={
            "click_id": "CLK-999XYZ",
            "status": "approved",
            "payout": 3.50,
            "survey_id": "DEMO-001",
            "transaction_id": "TXN-DEMO-123",
            "user_age": 28,
            "user_country": "US",
        },
    )
    assert reply.status_code == 200
    # 5: rejected; 6: fallback by offer; 7: fixed; 8: EUR; 10: test
    send(
        edge,
        "click_id=CLK-FRAUD-123&status=rejected&payout=0&offer_id=OFFER-456&transaction_id=TXN-REJECT-789&reason=fraud_detected",
    )
    send(edge, "offer_id=SURVEY-789&status=approved&payout=7.00&transaction_id=TXN-NOCLICKID")
    send(edge, "click_id=CLK-FIXED-001&status=approved&payout=100.00&offer_id=OFFER-FIXED")
    send(
        edge,
        "click_id=CLK-EUR-001&status=approved&payout=42.50&currency=EUR&offer_id=OFFER-EU&transaction_id=TXN-EUR-123",
    )
    send(edge, "click_id=TEST-INTEGRATION-001&status=test&payout=1.00&offer_id=TEST-OFFER")
    drain(matcher)

    balances = {u: store.user(u)["points"] for u in ("u1", "u2", "u3", "u4", "u5", "u6", "u7")}
    assert balances == {
        "u1": "4.00",
        "u2": "8.00",
        "u3": "2.80",
        "u4": "0.00",
        "u5": "50.00",
        "u6": "34.00",
        "u7": "5.60",
    }

    # Conversion events: 1, 2 pending, 2 approved, 3, 5, 6, 7, 8 → pub1 (own) and net (all);
    # the unknown-click test postback → net only.
    until(
        lambda: len(sink.received("/pub1")) >= 8 and len(sink.received("/net")) >= 9,
        step=forwarder.process_batch,
        timeout=20,
        message="every forward delivered",
    )
    pub1 = [r.params for r in sink.received("/pub1")]
    first = next(p for p in pub1 if p.get("transaction_id") == "TXN-12345")
    assert (first["payout"], first["status"], first["click_id"], first["sub1"]) == (
        "4.00",
        "approved",
        "CLK-789ABC",
        "camp7",
    )
    assert first["currency"] == "USD" and first["user_id"] == "u1" and first["survey_id"] == "VBFS6"
    assert KEY not in " ".join(r.query for r in sink.received("/pub1"))
    # Deliveries run concurrently, so one conversion's events may arrive in either order.
    assert sorted(p["status"] for p in pub1 if p.get("transaction_id") == "TXN-67890") == [
        "approved",
        "pending",
    ]
    eur = next(p for p in pub1 if p.get("transaction_id") == "TXN-EUR-123")
    assert (eur["payout"], eur["currency"]) == ("34.00", "EUR")

    net = [r.json() for r in sink.received("/net")]
    custom = next(p for p in net if p.get("transaction_id") == "TXN-DEMO-123")
    assert (custom["payout"], custom["user_age"], custom["user_country"]) == ("2.80", 28, "US")
    test = next(p for p in net if p["status"] == "test")
    assert (test["payout"], test["click_id"]) == ("1.00", "TEST-INTEGRATION-001")
    assert all(r.headers["Content-Type"] == "application/json" for r in sink.received("/net"))

    log = until(
        lambda: (entries := forwarded(redis_client, keys)) and len(entries) >= 17 and entries,
        step=forwarder.process_batch,
        timeout=20,
        message="every attempt in the forwarded log",
    )
    failed = [(e["partner_id"], e["status_code"], e["error"]) for e in log if e["success"] != "1"]
    assert not failed
    assert len(log) == len(sink.received()) == 17
    assert {entry["partner_id"] for entry in log} == {"pub1", "net"}


def test_a_partner_down_for_a_while_receives_everything_once_it_is_back(
    edge, matcher, make_forwarder, sink, store, redis_client, keys, network
):
    forwarder = make_forwarder(settings=network)
    sink.respond("/pub1", 503)
    sink.respond("/net", 503)
    for i in range(5):
        store.add_click(offer_id="VBFS6", partner_id="pub1", user_id="u9", click_id=f"CLK-DOWN-{i}")
        send(edge, f"click_id=CLK-DOWN-{i}&status=approved&payout=1.00&transaction_id=TXN-DOWN-{i}")
    drain(matcher)
    until(
        lambda: len(sink.received("/pub1")) >= 10,
        step=forwarder.process_batch,
        timeout=20,
        message="retries while the partner is down",
    )
    assert store.user("u9")["points"] == "4.00"  # points never wait for partners

    sink.respond("/pub1", 200)
    sink.respond("/net", 200)

    expected = {f"TXN-DOWN-{i}" for i in range(5)}

    def all_delivered() -> bool:
        log = forwarded(redis_client, keys)
        ok = {(e["partner_id"], e["conversion_id"]) for e in log if e["success"] == "1"}
        return len(ok) == 10

    until(
        all_delivered,
        step=forwarder.process_batch,
        timeout=30,
        message="everything delivered after recovery",
    )
    log = forwarded(redis_client, keys)
    failed = [e for e in log if e["success"] == "0"]
    assert failed and all(e["status_code"] == "503" for e in failed)
    assert {e["attempt"] for e in log if e["success"] == "1"} - {"1"}, "deliveries came on retries"
    assert expected <= {r.params.get("transaction_id") for r in sink.received("/pub1")}
