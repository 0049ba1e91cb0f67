"""The admin HTTP API (SPEC §7), driven in-process against a real Redis."""

from __future__ import annotations

import socket
import time

import falcon.inspect
import orjson
import pytest
from falcon import testing

from edge.app import create_app
from storage.keys import FORWARDER_GROUP
from tests.test_logs import (
    SOURCE_KEY,
    add_conversion,
    add_forwarded,
    add_received,
    add_source,
)

TOKEN = "s3cret-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
HOUR_MS = 3600 * 1000

#: Every admin route with each of its methods (test_every_admin_route_is_listed keeps it whole).
ADMIN_ROUTES = [
    ("GET", "/api/admin/received-postbacks"),
    ("GET", "/api/admin/partner-distribution-logs"),
    ("GET", "/api/diagnostic/partner-distribution-status"),
    ("POST", "/api/admin/test-distribution"),
    ("GET", "/test-distribution-now"),
    ("GET", "/api/admin/users/{user_id}"),
    ("GET", "/api/admin/conversions/{conversion_id}"),
    ("GET", "/api/admin/dead-letters"),
    ("POST", "/api/admin/dead-letters/replay"),
    ("GET", "/api/admin/postbacks/{log_id}"),
    ("GET", "/api/admin/conversions/{conversion_id}/deliveries"),
    ("GET", "/api/admin/lag"),
    *[
        call
        for plural, field in (
            ("sources", "key"),
            ("offers", "offer_id"),
            ("partners", "partner_id"),
        )
        for call in (
            ("GET", f"/api/admin/{plural}"),
            ("POST", f"/api/admin/{plural}"),
            ("GET", f"/api/admin/{plural}/{{{field}}}"),
            ("PATCH", f"/api/admin/{plural}/{{{field}}}"),
            ("POST", f"/api/admin/{plural}/{{{field}}}/deactivate"),
            ("POST", f"/api/admin/{plural}/{{{field}}}/activate"),
        )
    ],
]
SAMPLE_IDS = {
    "user_id": "u1",
    "conversion_id": "cv0-x",
    "key": SOURCE_KEY,
    "offer_id": "VBFS6",
    "partner_id": "p1",
    "log_id": "1714000000000-0",
}
ADMIN_CALLS = [(method, path.format(**SAMPLE_IDS)) for method, path in ADMIN_ROUTES]


@pytest.fixture
def app(settings, redis_client):
    return create_app(settings.with_overrides(admin_token=TOKEN), client=redis_client)


@pytest.fixture
def client(app) -> testing.TestClient:
    return testing.TestClient(app, headers=AUTH)


def now_ms() -> int:
    return int(time.time() * 1000)


def add_partner_record(client, **fields) -> dict:
    body = {"url": "https://partner.example.com/pb", "allow_private": True, **fields}
    result = client.simulate_post("/api/admin/partners", json=body)
    assert result.status_code == 201, result.json
    return result.json


# -- authorization ------------------------------------------------------------------------------
def test_every_admin_route_is_listed(app):
    routes = {
        (method.method, route.path)
        for route in falcon.inspect.inspect_routes(app)
        for method in route.methods
        if not method.internal
        and route.path.startswith(("/api/admin", "/api/diagnostic", "/test-distribution-now"))
    }
    assert routes == set(ADMIN_ROUTES)


@pytest.mark.parametrize(("method", "path"), ADMIN_CALLS)
def test_token_required_on_every_admin_path(app, method, path):
    anonymous = testing.TestClient(app)
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
        result = anonymous.simulate_request(method, path, headers=headers, json={})
        assert result.status_code == 401, (headers, result.json)
        assert result.json["status"] == "error"
        assert result.headers["WWW-Authenticate"] == "Bearer"


@pytest.mark.parametrize(("method", "path"), ADMIN_CALLS)
def test_admin_paths_are_off_without_a_configured_token(settings, redis_client, method, path):
    app = create_app(settings, client=redis_client)  # admin_token None
    off = testing.TestClient(app, headers={"Authorization": "Bearer None"})
    result = off.simulate_request(method, path, json={})
    assert result.status_code == 403
    assert "POSTBACK_ADMIN_TOKEN" in result.json["error"]


# -- received postbacks -----------------------------------------------------------------------
def test_received_postbacks_newest_first_with_filters(client, redis_client, keys):
    add_source(redis_client, keys)
    base = now_ms() - HOUR_MS
    add_received(redis_client, keys, base - 30 * HOUR_MS, 0)  # outside 24 hours
    add_received(redis_client, keys, base + 1, 1)
    add_received(redis_client, keys, base + 2, 2, outcome="unmatched", reason="unknown click")
    add_received(redis_client, keys, base + 3, 3, status="pending")
    add_received(redis_client, keys, base + 4, 4, source="otherKEY0123456789abcd")

    def clicks(query: str = "") -> list[str]:
        result = client.simulate_get("/api/admin/received-postbacks", query_string=query)
        assert result.status_code == 200, result.json
        return [row["click_id"] for row in result.json["logs"]]

    assert clicks() == ["CLK-4", "CLK-3", "CLK-2", "CLK-1"]
    assert clicks("hours=48") == ["CLK-4", "CLK-3", "CLK-2", "CLK-1", "CLK-0"]
    assert clicks("source=SurveyWall") == ["CLK-3", "CLK-2", "CLK-1"]
    assert clicks("source=otherKEY0123456789abcd") == ["CLK-4"]
    assert clicks("status=pending") == ["CLK-3"]
    assert clicks("outcome=unmatched") == ["CLK-2"]

    result = client.simulate_get("/api/admin/received-postbacks", query_string="outcome=unmatched")
    row = result.json["logs"][0]
    assert row["reason"] == "unknown click" and row["payout"] == "3.50"
    assert row["source"] == "SurveyWall" and row["source_key"] == "…WXYZ"
    assert SOURCE_KEY not in result.text


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("page=0", "page"),
        ("page=two", "page"),
        ("per_page=0", "per_page"),
        ("per_page=501", "per_page"),
        ("hours=-1", "hours"),
        ("hours=abc", "hours"),
        ("outcome=lost", "outcome"),
        ("status=done", "status"),
    ],
)
def test_received_bad_query_names_the_field(client, query, field):
    result = client.simulate_get("/api/admin/received-postbacks", query_string=query)
    assert result.status_code == 400
    assert result.json["error"].startswith(f"{field}:")


def test_pagination_edges(client, redis_client, keys):
    path = "/api/admin/partner-distribution-logs"
    empty = client.simulate_get(path).json
    assert empty == {"logs": [], "page": 1, "pages": 0, "total": 0}

    base = now_ms() - HOUR_MS
    for i in range(7):
        add_forwarded(redis_client, keys, base + i, i)

    def page(query: str) -> dict:
        result = client.simulate_get(path, query_string=query)
        assert result.status_code == 200
        return result.json

    first = page("per_page=3")
    assert (first["page"], first["pages"], first["total"]) == (1, 3, 7)
    assert [r["conversion_id"][-1] for r in first["logs"]] == ["6", "5", "4"]
    last = page("per_page=3&page=3")
    assert [r["conversion_id"][-1] for r in last["logs"]] == ["0"]
    past = page("per_page=3&page=4")
    assert (past["logs"], past["pages"], past["total"]) == ([], 3, 7)
    assert page("per_page=500")["total"] == 7
    bad = client.simulate_get(path, query_string="per_page=x")
    assert bad.status_code == 400 and bad.json["error"].startswith("per_page:")


def test_counting_stops_at_the_scan_limit(monkeypatch, client, redis_client, keys):
    import edge.admin

    base = now_ms() - HOUR_MS
    for i in range(6):
        add_forwarded(redis_client, keys, base + i, i)
    monkeypatch.setattr(edge.admin, "MAX_SCAN", 4)
    result = client.simulate_get("/api/admin/partner-distribution-logs", query_string="per_page=2")
    assert result.json["total"] == 4 and result.json["truncated"] is True
    assert [r["conversion_id"][-1] for r in result.json["logs"]] == ["5", "4"]  # the newest
    assert result.headers["Cache-Control"] == "no-store"


def test_distribution_logs_filter_success_and_partner(client, redis_client, keys):
    base = now_ms() - HOUR_MS
    add_forwarded(redis_client, keys, base + 1, 1)
    add_forwarded(redis_client, keys, base + 2, 2, success="0", status_code="503", result="retry")
    add_forwarded(redis_client, keys, base + 3, 3, partner_id="p2")
    path = "/api/admin/partner-distribution-logs"

    def codes(query: str) -> list:
        return [
            r["status_code"] for r in client.simulate_get(path, query_string=query).json["logs"]
        ]

    assert codes("success=true") == [200, 200]
    assert codes("success=false") == [503]
    assert codes("partner=p1") == [503, 200]
    assert codes("partner=p2&success=false") == []
    row = client.simulate_get(path, query_string="success=false").json["logs"][0]
    assert row["success"] is False and row["payout"] == "2.80" and row["attempt"] == 1
    bad = client.simulate_get(path, query_string="success=maybe")
    assert bad.status_code == 400 and bad.json["error"].startswith("success:")


# -- diagnostics and test distribution ------------------------------------------------------------
def test_distribution_status(client, redis_client, keys):
    path = "/api/diagnostic/partner-distribution-status"
    alone = client.simulate_get(path).json
    assert alone["health"] == "degraded" and alone["active_partners"] == 0

    add_partner_record(client, partner_id="p1")
    add_partner_record(client, partner_id="p2")
    base = now_ms() - 60_000
    add_received(redis_client, keys, base, 1)
    add_forwarded(redis_client, keys, base + 1, 1)
    add_forwarded(redis_client, keys, base + 2, 2, success="0", status_code="500")
    status = client.simulate_get(path).json
    assert status["health"] == "ok", status["reasons"]
    assert status["active_partners"] == 2
    assert status["recent_received"]["count"] == 1
    assert status["recent_deliveries"]["count"] == 2
    assert status["recent_deliveries"]["failed"] == 1
    assert status["recent_deliveries"]["latest"][0]["status_code"] == 500
    assert {g["group"] for g in status["streams"]} == {"matcher", "forwarder"}
    assert all("lag" in g and "pending" in g for g in status["streams"])
    assert status["dead_letters"] == 0

    redis_client.hset(
        keys.partner_health("p2"),
        mapping={"failures": "10", "paused": "1", "paused_since": str(base), "next_probe": "0"},
    )
    paused = client.simulate_get(path).json
    assert paused["health"] == "degraded"
    assert [p["partner_id"] for p in paused["paused_partners"]] == ["p2"]
    assert any("p2" in reason for reason in paused["reasons"])


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/api/admin/test-distribution"), ("GET", "/test-distribution-now")],
)
def test_test_distribution_queues_one_job_per_active_partner(
    client, redis_client, keys, method, path
):
    add_partner_record(client, partner_id="p1", scope="own")
    add_partner_record(client, partner_id="p2", scope="all", method="POST")
    add_partner_record(client, partner_id="p3")
    assert client.simulate_post("/api/admin/partners/p3/deactivate").status_code == 200

    result = client.simulate_request(method, path)
    assert result.status_code == 200
    assert [q["partner_id"] for q in result.json["queued"]] == ["p1", "p2"]
    entries = redis_client.xrange(keys.forward_stream(0))
    jobs = [orjson.loads(fields["job"]) for _, fields in entries]
    assert [job["partner_id"] for job in jobs] == ["p1", "p2"]
    assert [entry_id for entry_id, _ in entries] == [q["job_id"] for q in result.json["queued"]]
    payload = jobs[0]["payload"]
    assert payload["status"] == "test" and payload["payout"] == "1.00"
    assert payload["click_id"].startswith("TEST-") and jobs[0]["attempt"] == 1
    assert SOURCE_KEY not in orjson.dumps(jobs).decode()
    groups = redis_client.xinfo_groups(keys.forward_stream(0))
    assert groups[0]["name"] == FORWARDER_GROUP


# -- users and conversions ---------------------------------------------------------------------
def test_user_points_summed_over_partitions(settings, redis_client):
    app = create_app(settings.with_overrides(admin_token=TOKEN, partitions=3), client=redis_client)
    client = testing.TestClient(app, headers=AUTH)
    keys = app.ctx.keys
    redis_client.hset(keys.points(0), "u1", 280)
    redis_client.hset(keys.points(2), "u1", 120)
    assert client.simulate_get("/api/admin/users/u1").json == {
        "user_id": "u1",
        "points": "4.00",
        "held": "0.00",
    }
    assert client.simulate_get("/api/admin/users/nobody").json["points"] == "0.00"


def test_conversion_by_id(client, redis_client, keys):
    add_source(redis_client, keys)
    add_conversion(redis_client, keys, "cv0-abc", now_ms())
    result = client.simulate_get("/api/admin/conversions/cv0-abc")
    assert result.status_code == 200
    conversion = result.json
    assert (conversion["payout"], conversion["partner_payout"]) == ("3.50", "2.80")
    assert conversion["source"] == "SurveyWall" and conversion["source_key"] == "…WXYZ"
    assert SOURCE_KEY not in result.text
    assert conversion["history"][0]["status"] == "approved"
    for missing in ("cv0-nope", "not-a-conversion", "cv9-abc"):
        assert client.simulate_get(f"/api/admin/conversions/{missing}").status_code == 404


# -- sources, offers, partners -------------------------------------------------------------------
def test_sources_create_list_change_deactivate(client, app):
    created = client.simulate_post(
        "/api/admin/sources", json={"name": "Wall", "allow_ip": ["10.0.0.0/8"]}
    )
    assert created.status_code == 201
    key = created.json["key"]
    assert len(key) >= 16 and created.headers["Location"] == f"/api/admin/sources/{key}"
    assert created.json["allow"] == ["10.0.0.0/8"]
    assert "secret" not in created.json and "has_secret" not in created.json  # SPEC §2: none

    listing = client.simulate_get("/api/admin/sources").json
    assert [s["key"] for s in listing["sources"]] == [key] and listing["total"] == 1

    changed = client.simulate_patch(
        f"/api/admin/sources/{key}", json={"name": "Wall 2", "allow_ip": "1.2.3.4, 5.6.0.0/16"}
    )
    assert changed.status_code == 200
    assert changed.json["name"] == "Wall 2" and changed.json["allow"] == [
        "1.2.3.4/32",
        "5.6.0.0/16",
    ]

    version = app.ctx.store.config_version()
    off = client.simulate_post(f"/api/admin/sources/{key}/deactivate")
    assert off.status_code == 200 and off.json["active"] is False
    assert app.ctx.store.get_source(key).active is False
    assert app.ctx.store.config_version() > version  # workers reload at once
    assert client.simulate_get("/api/admin/sources", query_string="active=true").json["total"] == 0
    assert client.simulate_post(f"/api/admin/sources/{key}/activate").json["active"] is True

    duplicate = client.simulate_post("/api/admin/sources", json={"name": "Again", "key": key})
    assert duplicate.status_code == 409 and duplicate.json["error"].startswith("key:")


@pytest.mark.parametrize(
    ("method", "path", "body", "code", "field"),
    [
        ("POST", "/api/admin/sources", {"name": ""}, 400, "name"),
        ("POST", "/api/admin/sources", {"name": "W", "allow_ip": ["nope"]}, 400, "allow_ip"),
        ("POST", "/api/admin/sources", {"name": "W", "key": "short"}, 400, "key"),
        ("POST", "/api/admin/sources", {"name": "W", "colour": "red"}, 400, "colour"),
        ("POST", "/api/admin/sources", ["not", "an", "object"], 400, "body"),
        ("POST", "/api/admin/sources", {"name": "W", "secret": "s"}, 400, "secret"),  # none
        ("POST", "/api/admin/offers", {"offer_id": "O1"}, 400, "payout"),
        ("POST", "/api/admin/offers", {"offer_id": "O1", "revshare": 120}, 400, "revshare"),
        ("POST", "/api/admin/offers", {"offer_id": "O1", "fixed": "-1"}, 400, "fixed"),
        ("POST", "/api/admin/offers", {"offer_id": "O 1", "fixed": "1"}, 400, "offer_id"),
        (
            "POST",
            "/api/admin/offers",
            {"offer_id": "O1", "fixed": 1, "currency": "usdollar"},
            400,
            "currency",
        ),
        ("POST", "/api/admin/partners", {"partner_id": "p9"}, 400, "url"),
        (
            "POST",
            "/api/admin/partners",
            {"partner_id": "p9", "url": "http://127.0.0.1/pb"},
            400,
            "url",
        ),
        (
            "POST",
            "/api/admin/partners",
            {"partner_id": "p9", "url": "https://partner.example.com", "method": "PUT"},
            400,
            "method",
        ),
        (
            "POST",
            "/api/admin/partners",
            {"partner_id": "p9", "url": "https://partner.example.com", "scope": "x"},
            400,
            "scope",
        ),
        (
            "POST",
            "/api/admin/partners",
            {"partner_id": "p9", "url": "https://partner.example.com", "allow_private": "yes"},
            400,
            "allow_private",
        ),
        ("PATCH", "/api/admin/sources/unknownKEY0123456789", {"name": "x"}, 404, None),
        ("PATCH", "/api/admin/offers/nope", {"name": "x"}, 404, None),
        ("PATCH", "/api/admin/partners/nope", {"name": "x"}, 404, None),
        ("GET", "/api/admin/partners/nope", None, 404, None),
        ("POST", "/api/admin/offers/nope/deactivate", None, 404, None),
    ],
)
def test_bad_input_is_refused_naming_the_field(client, method, path, body, code, field):
    result = client.simulate_request(method, path, json=body)
    assert result.status_code == code, result.json
    if field:
        assert result.json["error"].startswith(f"{field}:"), result.json


def test_invalid_json_body_is_a_400(client):
    result = client.simulate_post(
        "/api/admin/sources", body="{not json", headers={"Content-Type": "application/json"}
    )
    assert result.status_code == 400 and result.json["status"] == "error"


def test_offers_create_change_deactivate(client, app):
    created = client.simulate_post(
        "/api/admin/offers",
        json={"offer_id": "VBFS6", "revshare": 80, "url": "https://o.example/?c={click_id}"},
    )
    assert created.status_code == 201
    assert (created.json["payout_model"], created.json["revshare"], created.json["currency"]) == (
        "revshare",
        "80",
        "USD",
    )
    assert (
        client.simulate_post(
            "/api/admin/offers", json={"offer_id": "VBFS6", "fixed": 1}
        ).status_code
        == 409
    )

    fixed = client.simulate_patch("/api/admin/offers/VBFS6", json={"fixed": 2.5, "currency": "eur"})
    assert fixed.status_code == 200
    assert (fixed.json["payout_model"], fixed.json["fixed"], fixed.json["revshare"]) == (
        "fixed",
        "2.50",
        None,
    )
    assert (
        fixed.json["currency"] == "EUR" and fixed.json["url"] == "https://o.example/?c={click_id}"
    )
    assert app.ctx.store.get_offer("VBFS6").fixed_cents == 250

    bad = client.simulate_patch("/api/admin/offers/VBFS6", json={"window_days": 0})
    assert bad.status_code == 400 and bad.json["error"].startswith("window_days:")
    assert app.ctx.store.get_offer("VBFS6").window_days == 30  # nothing half-changed

    assert client.simulate_post("/api/admin/offers/VBFS6/deactivate").json["active"] is False
    assert (
        client.simulate_patch("/api/admin/offers/VBFS6", json={"active": True}).json["active"]
        is True
    )
    assert [o["offer_id"] for o in client.simulate_get("/api/admin/offers").json["offers"]] == [
        "VBFS6"
    ]


def test_partners_create_change_deactivate(client, app):
    created = client.simulate_post(
        "/api/admin/partners",
        json={
            "partner_id": "p1",
            "url": "http://127.0.0.1:9/pb",
            "allow_private": True,
            "secret": "shh",
            "email": "ops@p.example",
        },
    )
    assert created.status_code == 201
    assert created.json["has_secret"] is True and "secret" not in created.json
    assert (created.json["method"], created.json["scope"], created.json["name"]) == (
        "GET",
        "own",
        "p1",
    )

    changed = client.simulate_patch(
        "/api/admin/partners/p1", json={"method": "post", "scope": "all", "name": "One"}
    )
    assert changed.status_code == 200
    assert (changed.json["method"], changed.json["scope"], changed.json["name"]) == (
        "POST",
        "all",
        "One",
    )
    assert app.ctx.store.get_partner("p1").secret == "shh"  # kept when not given

    assert client.simulate_post("/api/admin/partners/p1/deactivate").json["active"] is False
    assert app.ctx.store.get_partner("p1").active is False
    listing = client.simulate_get("/api/admin/partners", query_string="active=false").json
    assert [p["partner_id"] for p in listing["partners"]] == ["p1"]
    dup = client.simulate_post(
        "/api/admin/partners", json={"partner_id": "p1", "url": "https://partner.example.com"}
    )
    assert dup.status_code == 409 and dup.json["error"].startswith("partner_id:")


def test_a_partner_name_resolving_to_a_private_address_is_refused(client, monkeypatch):
    real = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        if host == "rebind.example":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.7", 0))]
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    body = {"partner_id": "p1", "url": "https://rebind.example/pb"}
    refused = client.simulate_post("/api/admin/partners", json=body)
    assert refused.status_code == 400 and refused.json["error"].startswith("url: rebind.example")
    allowed = client.simulate_post("/api/admin/partners", json={**body, "allow_private": True})
    assert allowed.status_code == 201
