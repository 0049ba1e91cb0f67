"""What the admin page reads and does: dead letters (list, replay), a postback's story,
the lag panel, and the page's own files. In-process against a real Redis, two partitions."""

from __future__ import annotations

import re
import time

import orjson
import pytest
from falcon import testing

from edge.app import create_app
from storage import lag_history
from storage.keys import Keys
from tests.test_admin_api import AUTH, TOKEN
from tests.test_deadletters import dead_delivery, dead_postback
from tests.test_logs import SOURCE_KEY, add_conversion, add_forwarded, add_received, add_source


@pytest.fixture
def settings2(settings):
    return settings.with_overrides(admin_token=TOKEN, partitions=2)


@pytest.fixture
def keys(settings2) -> Keys:
    return Keys(settings2.namespace, settings2.partitions)


@pytest.fixture
def client(settings2, redis_client) -> testing.TestClient:
    return testing.TestClient(create_app(settings2, client=redis_client), headers=AUTH)


def now_ms() -> int:
    return int(time.time() * 1000)


def forward_jobs(redis_client, keys) -> list[dict]:
    return [
        orjson.loads(fields["job"])
        for n in keys.all_partitions()
        for _id, fields in redis_client.xrange(keys.forward_stream(n))
    ]


# -- dead letters --------------------------------------------------------------------------
def test_dead_letters_of_every_partition_newest_first_with_paging(client, redis_client, keys):
    dead_delivery(redis_client, keys, 0, "p1", "CLK-A", entry_id="1714000000001-0")
    dead_delivery(redis_client, keys, 1, "p2", "CLK-B", entry_id="1714000000002-0")
    dead_delivery(redis_client, keys, 0, "p1", "CLK-C", entry_id="1714000000003-0")

    first = client.simulate_get("/api/admin/dead-letters", params={"per_page": 2}).json
    assert (first["page"], first["pages"], first["total"]) == (1, 2, 3)
    assert [d["id"] for d in first["dead_letters"]] == ["0:1714000000003-0", "1:1714000000002-0"]
    second = client.simulate_get("/api/admin/dead-letters", params={"per_page": 2, "page": 2})
    [last] = second.json["dead_letters"]
    assert (last["id"], last["partition"], last["kind"]) == ("0:1714000000001-0", 0, "delivery")
    assert last["payload"] == {"click_id": "CLK-A", "payout": "4.00"}
    assert (last["attempt"], last["conversion_id"], last["error"]) == (9, "cv0-x", "HTTP 500")
    assert last["time"] == "2024-04-24T23:06:40.000Z"

    only_p2 = client.simulate_get("/api/admin/dead-letters", params={"partner": "p2"}).json
    assert [d["payload"]["click_id"] for d in only_p2["dead_letters"]] == ["CLK-B"]
    assert only_p2["total"] == 1


def test_a_dead_postback_shows_its_source_by_name_never_its_key(client, redis_client, keys):
    add_source(redis_client, keys, key="srcKEY", name="Survey wall")
    dead_postback(redis_client, keys, 1)
    result = client.simulate_get("/api/admin/dead-letters")
    [letter] = result.json["dead_letters"]
    assert letter["kind"] == "postback"
    assert letter["data"]["source"] == "Survey wall"
    assert letter["data"]["source_key"] == "…cKEY"
    assert letter["data"]["params"] == {"click_id": "C9"}
    assert "srcKEY" not in result.text


def test_replay_by_ids_puts_each_back_once_whatever_its_partition(client, redis_client, keys):
    dead_delivery(redis_client, keys, 0, "p1", "CLK-A", entry_id="1714000000001-0")
    dead_delivery(redis_client, keys, 1, "p2", "CLK-B", entry_id="1714000000002-0")
    dead_delivery(redis_client, keys, 1, "p2", "CLK-C", entry_id="1714000000003-0")

    body = {"ids": ["1:1714000000002-0", "0:1714000000001-0", "1:1714000000009-0"]}
    result = client.simulate_post("/api/admin/dead-letters/replay", json=body)
    assert result.status_code == 200, result.json
    assert result.json["replayed"] == 2
    assert sorted(result.json["ids"]) == ["0:1714000000001-0", "1:1714000000002-0"]
    assert result.json["not_found"] == ["1:1714000000009-0"]
    jobs = forward_jobs(redis_client, keys)
    assert sorted(j["payload"]["click_id"] for j in jobs) == ["CLK-A", "CLK-B"]
    assert {j["attempt"] for j in jobs} == {1}  # the whole retry schedule again

    again = client.simulate_post("/api/admin/dead-letters/replay", json=body).json
    assert again["replayed"] == 0 and len(forward_jobs(redis_client, keys)) == 2
    left = client.simulate_get("/api/admin/dead-letters").json["dead_letters"]
    assert [d["id"] for d in left] == ["1:1714000000003-0"]


def test_replay_by_id_replays_only_that_partitions_letter_when_ids_collide(
    client, redis_client, keys
):
    # Two letters dead-lettered in the same millisecond in two partitions share a stream id.
    dead_delivery(redis_client, keys, 0, "p1", "CLK-A", entry_id="1714000000005-0")
    dead_delivery(redis_client, keys, 1, "p1", "CLK-B", entry_id="1714000000005-0")
    listed = client.simulate_get("/api/admin/dead-letters").json["dead_letters"]
    by_click = {d["payload"]["click_id"]: d["id"] for d in listed}
    assert len(set(by_click.values())) == 2  # each row's id names one letter

    body = {"ids": [by_click["CLK-B"]]}
    result = client.simulate_post("/api/admin/dead-letters/replay", json=body)
    assert result.status_code == 200, result.json
    assert (result.json["replayed"], result.json["ids"]) == (1, [by_click["CLK-B"]])
    assert [j["payload"]["click_id"] for j in forward_jobs(redis_client, keys)] == ["CLK-B"]
    left = client.simulate_get("/api/admin/dead-letters").json["dead_letters"]
    assert [(d["id"], d["payload"]["click_id"]) for d in left] == [(by_click["CLK-A"], "CLK-A")]


def test_replay_by_partner_replays_that_partner_only(client, redis_client, keys):
    dead_delivery(redis_client, keys, 0, "p1", "CLK-A")
    dead_delivery(redis_client, keys, 1, "p1", "CLK-B")
    dead_delivery(redis_client, keys, 1, "p2", "CLK-C")
    result = client.simulate_post("/api/admin/dead-letters/replay", json={"partner": "p1"})
    assert result.json == {"status": "success", "replayed": 2, "partner": "p1"}
    assert sorted(j["payload"]["click_id"] for j in forward_jobs(redis_client, keys)) == [
        "CLK-A",
        "CLK-B",
    ]
    left = client.simulate_get("/api/admin/dead-letters").json["dead_letters"]
    assert [d["partner_id"] for d in left] == ["p2"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "body"),
        ([], "body"),
        ({"ids": ["0:1-0"], "partner": "p1"}, "body"),
        ({"id": "1-0"}, "id"),
        ({"ids": []}, "ids"),
        ({"ids": "0:1714000000001-0"}, "ids"),
        ({"ids": ["<script>"]}, "ids"),
        ({"ids": [17]}, "ids"),
        ({"ids": ["1714000000001-0"]}, "ids"),  # no partition: ambiguous
        ({"ids": ["2:1714000000001-0"]}, "ids"),  # no such partition
        ({"ids": ["-1:1714000000001-0"]}, "ids"),
        ({"ids": ["0:<script>"]}, "ids"),
        ({"ids": ["0:99999999999999999999999-0"]}, "ids"),
        ({"ids": ["0:1-99999999999999999999999"]}, "ids"),
        ({"partner": ""}, "partner"),
        ({"partner": 5}, "partner"),
    ],
)
def test_a_bad_replay_request_is_a_400_naming_the_field(client, redis_client, keys, body, field):
    dead_delivery(redis_client, keys, 0, "p1", "CLK-A")
    result = client.simulate_post("/api/admin/dead-letters/replay", json=body)
    assert result.status_code == 400
    assert result.json["error"].startswith(field + ":"), result.json
    assert client.simulate_get("/api/admin/dead-letters").json["total"] == 1  # nothing replayed


def test_replay_without_a_body_is_a_400(client):
    result = client.simulate_post("/api/admin/dead-letters/replay")
    assert result.status_code == 400 and result.json["error"].startswith("body:")


def test_dead_letters_refuse_a_bad_page(client):
    result = client.simulate_get("/api/admin/dead-letters", params={"page": "zero"})
    assert result.status_code == 400 and result.json["error"].startswith("page:")


# -- a postback's story ----------------------------------------------------------------------
def test_a_postback_story_has_its_entry_conversion_and_every_attempt(client, redis_client, keys):
    add_source(redis_client, keys)
    t = now_ms() - 60_000
    log_id = f"{t}-0"
    conversion_id = f"cv1-{0:024d}"
    add_received(redis_client, keys, t + 5, partition=1, log_id=log_id, conversion_id=conversion_id)
    add_conversion(redis_client, keys, conversion_id, t)
    add_received(redis_client, keys, t + 6, i=1, log_id=f"{t}-1")  # another postback
    fail = {"success": "0", "status_code": "503", "result": "retry", "response_body": "down"}
    add_forwarded(redis_client, keys, t + 10, partition=1, log_id=log_id, attempt=1, **fail)
    add_forwarded(redis_client, keys, t + 20, log_id=log_id, partner_id="p2", attempt=1)
    add_forwarded(redis_client, keys, t + 30, partition=1, log_id=log_id, attempt=2)
    add_forwarded(redis_client, keys, t + 40, i=1, log_id=f"{t}-1")  # another postback's

    result = client.simulate_get(f"/api/admin/postbacks/{log_id}")
    assert result.status_code == 200, result.json
    story = result.json
    assert story["postback"]["log_id"] == log_id
    assert story["postback"]["source"] == "SurveyWall"
    assert story["postback"]["params"]["custom"] == {"user_age": 28, "country": "US"}
    assert story["conversion"]["conversion_id"] == conversion_id
    assert story["conversion"]["partner_payout"] == "2.80"
    attempts = [(d["partner_id"], d["attempt"], d["status_code"]) for d in story["deliveries"]]
    assert attempts == [("p1", 1, 503), ("p2", 1, 200), ("p1", 2, 200)]
    assert story["deliveries"][0]["response_body"] == "down"
    assert SOURCE_KEY not in result.text


def test_deliveries_of_a_conversion(client, redis_client, keys):
    t = now_ms() - 60_000
    conversion_id = f"cv0-{7:024d}"
    add_conversion(redis_client, keys, conversion_id, t)
    add_forwarded(redis_client, keys, t + 10, i=7)
    add_forwarded(redis_client, keys, t + 20, i=8)
    result = client.simulate_get(f"/api/admin/conversions/{conversion_id}/deliveries")
    assert result.status_code == 200
    assert result.json["conversion"]["conversion_id"] == conversion_id
    assert [d["conversion_id"] for d in result.json["deliveries"]] == [conversion_id]
    assert SOURCE_KEY not in result.text
    missing = client.simulate_get("/api/admin/conversions/cv0-nope/deliveries")
    assert missing.status_code == 404


def test_a_story_not_in_the_logs_is_a_404_and_a_bad_id_a_400(client):
    assert client.simulate_get(f"/api/admin/postbacks/{now_ms()}-0").status_code == 404
    for wrong in ("not-an-id", "1-", "99999999999999999999999-0", "١٢-0"):
        bad = client.simulate_get(f"/api/admin/postbacks/{wrong}")
        assert bad.status_code == 400 and bad.json["error"].startswith("log_id:"), wrong


# -- lag panel and the page ------------------------------------------------------------------
def test_lag_reports_every_group_of_every_partition(client, redis_client, keys):
    redis_client.xadd(keys.input_stream(1), {"source": "x", "params": "{}"})
    redis_client.sadd(keys.partners_index(), "p9")
    redis_client.hset(keys.partner_health("p9"), mapping={"failures": "10", "paused": "1"})
    report = client.simulate_get("/api/admin/lag").json
    rows = {(g["stream"], g["group"]): g for g in report["groups"]}
    assert len(rows) == 4
    assert rows[(keys.input_stream(1), "matcher")]["lag"] == 1
    assert report["dead_letters"] == 0
    assert [(p["partner_id"], p["failures"]) for p in report["paused_partners"]] == [("p9", 10)]
    assert abs(report["time_ms"] - now_ms()) < 60_000
    assert report["totals"] == {
        "matcher": {"lag": 1, "pending": 0},
        "forwarder": {"lag": 0, "pending": 0},
    }
    # The reading is kept as a sample, so the next viewer's chart starts with it.
    [sample] = report["history"]
    assert sample == {"time_ms": report["time_ms"], "groups": report["totals"]}


def test_lag_history_keeps_one_sample_per_interval(redis_client, keys):
    report = {"groups": [{"group": "matcher", "lag": 2, "pending": 1}] * 2}
    t = now_ms()
    assert lag_history.record(redis_client, keys, report, t, every_ms=60_000)
    assert not lag_history.record(redis_client, keys, report, t + 10, every_ms=60_000)
    redis_client.delete(keys.lag_sample_lock())  # the interval has passed
    assert lag_history.record(redis_client, keys, {"groups": []}, t + 20, every_ms=60_000)
    assert lag_history.read(redis_client, keys, since_ms=t) == [
        {"time_ms": t, "groups": {"matcher": {"lag": 4, "pending": 2}}},
        {"time_ms": t + 20, "groups": {}},
    ]
    assert lag_history.read(redis_client, keys, since_ms=t + 1) == [
        {"time_ms": t + 20, "groups": {}}
    ]


def test_the_page_needs_no_token_and_its_calls_do(settings2, redis_client):
    anonymous = testing.TestClient(create_app(settings2, client=redis_client))
    page = anonymous.simulate_get("/admin")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert "Admin token" in page.text and "Sign in" in page.text
    modules = re.findall(r'from "\./([a-z]+\.js)"', anonymous.simulate_get("/admin/main.js").text)
    assert set(modules) == {"api.js", "detail.js", "dom.js", "lag.js"}
    for name in ["main.js", *modules]:
        script = anonymous.simulate_get(f"/admin/{name}")
        assert script.status_code == 200, name
        assert script.headers["content-type"].startswith("text/javascript")
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
            assert sink not in script.text, (name, sink)  # values go in as text only
    assert anonymous.simulate_get("/admin/admin.css").status_code == 200
    assert anonymous.simulate_get("/admin/../app.py").status_code == 404
    assert anonymous.simulate_get("/admin/nothing.js").status_code == 404
    assert anonymous.simulate_get("/api/admin/dead-letters").status_code == 401
