"""Admin command and API for dialects, goals and holds (SPEC §7, §8): the fields, their
JSON names, and one-line refusals naming the bad mapping."""

from __future__ import annotations

import orjson
import pytest
from falcon import testing

from edge.app import create_app

TOKEN = "s3cret-admin-token"
KEY = "aff-network-dialect-key-01"


@pytest.fixture
def api(settings, redis_client, store):
    app = create_app(settings.with_overrides(admin_token=TOKEN), client=redis_client)
    return testing.TestClient(app, headers={"Authorization": f"Bearer {TOKEN}"})


def as_json(out: str) -> dict:
    return orjson.loads(out)


# -- command ----------------------------------------------------------------------------
def test_source_add_and_set_with_aliases_and_a_status_map(admin, store):
    code, out, err = admin(
        "source", "add", "--name", "Adv", "--key", KEY, "--param", "click_id=aff_sub",
        "--param", "payout=sum", "--status-map", "1=approved", "--status-map", "0=rejected",
        "--json",
    )  # fmt: skip
    assert code == 0, err
    data = as_json(out)
    assert data["params"] == {"click_id": "aff_sub", "payout": "sum"}
    assert data["status_map"] == {"1": "approved", "0": "rejected"}

    code, out, err = admin(
        "source", "set", KEY, "--name", "Advertiser", "--param", "payout=", "--param",
        "transaction_id=tid", "--status-map", "sale=approved", "--allow-ip", "192.0.2.0/24",
        "--json",
    )  # fmt: skip
    assert code == 0, err
    data = as_json(out)
    assert data["name"] == "Advertiser"
    assert data["params"] == {"click_id": "aff_sub", "transaction_id": "tid"}
    assert data["status_map"] == {"1": "approved", "0": "rejected", "sale": "approved"}
    assert data["allow"] == ["192.0.2.0/24"]
    assert store.get_source(KEY).params == data["params"]
    code, out, _ = admin("source", "set", KEY, "--allow-ip", "any")
    assert code == 0 and out.strip() == f"source {KEY} changed"
    assert store.get_source(KEY).allow == []


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--param", "clickid=aff_sub"], "params: unknown field 'clickid'"),
        (["--status-map", "1=paid"], "status_map: status 'paid' is not one of"),
        (["--param", "click_id=s", "--param", "transaction_id=s"], "alias 's' given for both"),
        (["--param", "click_id=a", "--param", "click_id=b"], "param: 'click_id' given twice"),
        (["--status-map", "approved"], "status_map: 'approved' must look like NAME=VALUE"),
    ],
)
def test_bad_mappings_are_refused_with_one_line_naming_them(admin, store, argv, expected):
    code, out, err = admin("source", "add", "--name", "Adv", *argv)
    assert code != 0 and out == ""
    assert len(err.strip().splitlines()) == 1
    assert expected in err
    assert store.list_sources() == []
    code, _, err = admin("partner", "add", "P1", "--url", "https://pub.example/pb", *argv)
    if "status 'paid'" not in expected:  # a partner maps STATUS=VALUE the other way
        assert code != 0 and expected in err and len(err.strip().splitlines()) == 1


def test_source_set_refuses_a_bad_mapping_and_keeps_the_source(admin, store):
    assert admin("source", "add", "--name", "Adv", "--key", KEY, "--param", "click_id=s")[0] == 0
    code, _, err = admin("source", "set", KEY, "--param", "transaction_id=s")
    assert code != 0 and "alias 's' given for both" in err
    assert store.get_source(KEY).params == {"click_id": "s"}
    code, _, err = admin("source", "set", "no-such-source-key-123")
    assert code != 0 and "not found" in err and len(err.strip().splitlines()) == 1


def test_offer_hold_and_goals(admin, store):
    code, out, err = admin("offer", "add", "APP", "--revshare", "80", "--hold", "7d", "--json")
    assert code == 0, err
    assert as_json(out)["hold_s"] == 604_800
    code, out, _ = admin("offer", "goal", "APP", "install", "--fixed", "1")
    assert code == 0 and out.strip() == "offer APP goal install: fixed 1.00"
    code, out, _ = admin("offer", "goal", "APP", "purchase", "--revshare", "50", "--json")
    assert as_json(out)["goals"] == {"install": {"fixed": "1.00"}, "purchase": {"revshare": "50"}}
    assert as_json(out)["hold_s"] == 604_800
    assert store.get_offer("APP").goals["purchase"] == {"revshare": "50"}

    code, _, err = admin("offer", "goal", "APP", "install", "--revshare", "150")
    assert code != 0 and "goals.install.revshare" in err
    code, _, err = admin("offer", "goal", "NOPE", "install", "--fixed", "1")
    assert code != 0 and "offer 'NOPE' not found" in err
    code, _, err = admin("offer", "add", "APP2", "--fixed", "1", "--hold", "7 weeks")
    assert code != 0 and "hold:" in err and len(err.strip().splitlines()) == 1


def test_partner_add_with_its_own_names_and_values(admin):
    code, out, err = admin(
        "partner", "add", "PUB", "--url", "https://pub.example/pb", "--param", "click_id=subid",
        "--param", "payout=amount", "--status-map", "approved=1", "--json",
    )  # fmt: skip
    assert code == 0, err
    data = as_json(out)
    assert data["params"] == {"click_id": "subid", "payout": "amount"}
    assert data["status_map"] == {"approved": "1"}


def test_user_show_gives_points_and_held(admin, store, keys):
    store.r.hset(keys.points(0), "u1", 400)
    store.r.hset(keys.held(0), "u1", 250)
    assert admin("user", "show", "u1")[1].strip() == "4.00 points (held: 2.50)"
    assert as_json(admin("user", "show", "u1", "--json")[1]) == {
        "user_id": "u1",
        "points": "4.00",
        "held": "2.50",
    }


# -- API --------------------------------------------------------------------------------
def test_api_sources_take_params_and_status_map(api, store):
    body = {
        "name": "Adv",
        "key": KEY,
        "params": {"click_id": "aff_sub"},
        "status_map": {"1": "approved"},
    }
    resp = api.simulate_post("/api/admin/sources", json=body)
    assert resp.status_code == 201, resp.json
    assert resp.json["params"] == {"click_id": "aff_sub"}
    assert resp.json["status_map"] == {"1": "approved"}
    resp = api.simulate_patch(f"/api/admin/sources/{KEY}", json={"status_map": {"0": "Rejected"}})
    assert resp.status_code == 200, resp.json
    assert resp.json["params"] == {"click_id": "aff_sub"}  # kept
    assert resp.json["status_map"] == {"0": "rejected"}  # replaced
    for bad, name in (
        ({"params": {"nope": "x"}}, "params"),
        ({"status_map": {"1": "paid"}}, "status_map"),
        ({"params": {"click_id": "x", "goal": "x"}}, "params"),
        ({"params": "click_id=x"}, "params"),
    ):
        resp = api.simulate_patch(f"/api/admin/sources/{KEY}", json=bad)
        assert resp.status_code == 400, bad
        assert name in resp.json["error"]
    assert store.get_source(KEY).status_map == {"0": "rejected"}


def test_api_offers_take_goals_and_hold_s(api, store):
    body = {
        "offer_id": "APP",
        "revshare": "80",
        "goals": {"install": {"fixed": "1.00"}, "purchase": {"revshare": "50"}},
        "hold_s": 604800,
    }
    resp = api.simulate_post("/api/admin/offers", json=body)
    assert resp.status_code == 201, resp.json
    assert resp.json["goals"] == body["goals"] and resp.json["hold_s"] == 604800
    resp = api.simulate_patch("/api/admin/offers/APP", json={"fixed": "2"})
    assert resp.json["goals"] == body["goals"] and resp.json["hold_s"] == 604800  # kept
    resp = api.simulate_patch("/api/admin/offers/APP", json={"hold_s": 0, "goals": {}})
    assert resp.json["goals"] == {} and resp.json["hold_s"] == 0
    resp = api.simulate_patch("/api/admin/offers/APP", json={"hold_s": -5})
    assert resp.status_code == 400 and "hold_s" in resp.json["error"]
    resp = api.simulate_patch("/api/admin/offers/APP", json={"goals": {"x": {"fixed": "a"}}})
    assert resp.status_code == 400 and "goals.x.fixed" in resp.json["error"]


def test_api_partners_take_params_and_status_map(api):
    body = {
        "partner_id": "PUB",
        "url": "https://pub.example/pb",
        "params": {"click_id": "subid"},
        "status_map": {"approved": "1"},
    }
    resp = api.simulate_post("/api/admin/partners", json=body)
    assert resp.status_code == 201, resp.json
    assert resp.json["params"] == {"click_id": "subid"}
    resp = api.simulate_patch("/api/admin/partners/PUB", json={"status_map": {"paid": "1"}})
    assert resp.status_code == 400 and "status_map" in resp.json["error"]


def test_api_user_gives_points_and_held(api, store, keys):
    store.r.hset(keys.held(0), "u1", 250)
    assert api.simulate_get("/api/admin/users/u1").json == {
        "user_id": "u1",
        "points": "0.00",
        "held": "2.50",
    }
