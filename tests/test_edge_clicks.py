"""``GET /click/{offer_id}``: record a click and redirect to the landing URL (SPEC §3)."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from core.clicks import Click
from core.offers import Offer
from core.partners import Partner
from edge.clicks import landing_url

LANDING = "https://adv.example/lp?c={click_id}&s={sub1}&o={offer_id}"


@pytest.fixture
def offer(store):
    return store.add_offer(Offer.build("OFFER-1", revshare=80, url=LANDING))


@pytest.fixture
def partner(store):
    return store.add_partner(Partner.build("pub-1", url="https://pub.example/pb"))


def test_click_is_recorded_and_redirected(client, store, offer, partner):
    resp = client.simulate_get(
        "/click/OFFER-1",
        query_string="partner=pub-1&user=u1&sub1=a b%26c&sub2=x",
        remote_addr="198.51.100.7",
    )
    assert resp.status_code == 302
    assert resp.headers["cache-control"] == "no-store"
    location = resp.headers["location"]
    assert location.startswith("https://adv.example/lp?c=CLK-")
    assert "s=a%20b%26c" in location and "o=OFFER-1" in location
    click_id = parse_qs(urlsplit(location).query)["c"][0]
    assert resp.json["click_id"] == click_id

    click = store.get_click(click_id)
    assert (click.offer_id, click.partner_id, click.user_id) == ("OFFER-1", "pub-1", "u1")
    assert click.ip == "198.51.100.7"
    assert click.subs == {"sub1": "a b&c", "sub2": "x"}


def test_offer_without_landing_url_answers_the_click_as_json(client, store, partner):
    store.add_offer(Offer.build("NOURL", fixed="1.00"))
    resp = client.simulate_get("/click/NOURL", query_string="partner=pub-1&user=u1")
    assert resp.status_code == 200
    assert resp.json["status"] == "success" and resp.json["offer_id"] == "NOURL"
    assert store.get_click(resp.json["click_id"]).user_id == "u1"


@pytest.mark.parametrize(
    ("query", "error"),
    [("user=u1", "partner required"), ("partner=pub-1", "user required")],
)
def test_missing_partner_or_user(client, offer, partner, query, error):
    resp = client.simulate_get("/click/OFFER-1", query_string=query)
    assert resp.status_code == 400
    assert resp.json == {"status": "error", "error": error}


def test_unknown_partner_is_400_naming_it(client, offer):
    resp = client.simulate_get("/click/OFFER-1", query_string="partner=nobody&user=u1")
    assert resp.status_code == 400
    assert resp.json["error"].startswith("partner: ")


def test_bad_user_id_is_400_naming_it(client, offer, partner):
    resp = client.simulate_get("/click/OFFER-1", query_string="partner=pub-1&user=a b")
    assert resp.status_code == 400
    assert resp.json["error"].startswith("user: ")


def test_unknown_or_inactive_offer_is_404(client, store, offer, partner):
    resp = client.simulate_get("/click/NOPE", query_string="partner=pub-1&user=u1")
    assert resp.status_code == 404
    assert "NOPE" in resp.json["error"]
    store.set_active("offer", "OFFER-1", False)
    resp = client.simulate_get("/click/OFFER-1", query_string="partner=pub-1&user=u1")
    assert resp.status_code == 404
    assert "not active" in resp.json["error"]


def test_landing_url_fills_macros_url_encoded():
    click = Click("CLK 1/2", "O", "P", "u@x", subs={"sub3": "?"})
    url = landing_url("https://a.example/{click_id}?u={user_id}&s={sub3}&t={sub4}", click)
    assert url == "https://a.example/CLK%201%2F2?u=u%40x&s=%3F&t="
