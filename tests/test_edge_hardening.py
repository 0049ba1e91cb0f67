"""Input found to break the edge from outside (issue #8, defects 2 and 9), on real Redis.

Each answer is what a sender should see: a 4xx naming the field, never a 5xx, and
nothing half-written; what was accepted stays readable by the admin API and export.
"""

from __future__ import annotations

import logging

import orjson
from falcon import testing

from edge.app import create_app
from processors.matcher.step import Matcher
from scripts.cli import main as postback

TOKEN = "a-long-enough-admin-token"


def nested(depth: int) -> str:
    """JSON text of objects nested ``depth`` deep (no encoder writes past ~254 levels)."""
    return '{"k":' * depth + '"leaf"' + "}" * depth


def deep_postback(depth: int, click_id: str = "c") -> str:
    return f'{{"click_id":"{click_id}","tree":{nested(depth)}}}'


def stream(redis_client, keys, source) -> list:
    return redis_client.xrange(keys.input_stream(keys.partition_of(source.key)))


def test_deep_json_is_a_400_alone_and_what_was_accepted_stays_readable(
    settings, redis_client, keys, source, monkeypatch, capsys
):
    client = testing.TestClient(
        create_app(settings.with_overrides(admin_token=TOKEN), redis_client)
    )
    for depth in (31, 250, 253, 600, 1000):
        resp = client.simulate_post(
            f"/postback/{source.key}",
            body=deep_postback(depth),
            headers={"Content-Type": "application/json"},
        )
        expected = 200 if depth < 32 else 400
        assert resp.status_code == expected, (depth, resp.text)
        if expected == 400:
            assert "tree" in resp.json["error"]
    batch = client.simulate_post(
        f"/postback/{source.key}/batch",
        body=f'[{{"click_id":"a"}},{deep_postback(300, "b")}]',
        headers={"Content-Type": "application/json"},
    )
    assert batch.status_code == 200
    assert (batch.json["accepted"], batch.json["rejected"]) == (1, 1)
    assert "tree" in batch.json["results"][1]["error"]
    assert len(stream(redis_client, keys, source)) == 2
    matcher = Matcher(redis_client, settings, consumer="m-deep")
    while matcher.process_batch(0):
        pass

    listed = client.simulate_get(
        "/api/admin/received-postbacks", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert listed.status_code == 200 and listed.json["total"] == 2
    monkeypatch.setenv("REDIS_URL", settings.redis_url)
    monkeypatch.setenv("POSTBACK_NAMESPACE", settings.namespace)
    assert postback(["export", "--log", "received", "--format", "jsonl"]) == 0
    rows = [orjson.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 2


def test_payouts_that_are_not_plain_ascii_decimals_are_400(client, source, redis_client, keys):
    for payout in ("1_000", "\u0661\u0662", "\uff15"):
        resp = client.simulate_get(
            f"/postback/{source.key}", params={"click_id": "c", "payout": payout}
        )
        assert resp.status_code == 400 and resp.json["error"].startswith("payout:")
    resp = client.simulate_get(f"/postback/{source.key}", query_string="click_id=c&payout=-0")
    assert resp.status_code == 200
    [(_, fields)] = stream(redis_client, keys, source)
    assert orjson.loads(fields["params"])["payout"] == "0.00"


def test_invalid_utf8_in_the_query_is_400_naming_the_parameter(client, source, redis_client, keys):
    resp = client.simulate_get(f"/postback/{source.key}", query_string="click_id=c&city=K%F6ln")
    assert resp.status_code == 400 and resp.json["error"].startswith("city:")
    resp = client.simulate_post(
        f"/postback/{source.key}", query_string="click_id=%FF", json={"status": "approved"}
    )
    assert resp.status_code == 400 and resp.json["error"].startswith("click_id:")
    # Valid UTF-8, the replacement character itself included, is kept as sent.
    resp = client.simulate_get(
        f"/postback/{source.key}", query_string="click_id=c&city=K%C3%B6ln&mark=%EF%BF%BD"
    )
    assert resp.status_code == 200
    [(_, fields)] = stream(redis_client, keys, source)
    assert orjson.loads(fields["params"])["custom"] == {"city": "Köln", "mark": "\ufffd"}


def test_a_query_is_capped_like_a_single_body(client, source, redis_client, keys):
    big = "x" * (64 * 1024)
    resp = client.simulate_get(f"/postback/{source.key}", query_string=f"click_id=c&blob={big}")
    assert resp.status_code == 414 and "query string" in resp.json["error"]
    resp = client.simulate_post(f"/postback/{source.key}", query_string=f"click_id=c&blob={big}")
    assert resp.status_code == 414
    assert stream(redis_client, keys, source) == []


def test_an_outage_is_logged_once_in_a_while_not_once_per_503(settings, caplog):
    app = create_app(settings.with_overrides(redis_url="redis://127.0.0.1:1/0"))
    client = testing.TestClient(app)
    try:
        with caplog.at_level(logging.WARNING, logger="edge.app"):
            for n in range(50):
                resp = client.simulate_get(f"/postback/{'k' * 24}", query_string=f"click_id={n}")
                assert resp.status_code == 503
    finally:
        app.ctx.redis.close()
    assert 1 <= len([r for r in caplog.records if "Redis unavailable" in r.getMessage()]) <= 2
