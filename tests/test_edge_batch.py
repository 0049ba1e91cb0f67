"""``POST /postback/{key}/batch``: JSON array or NDJSON, items judged one by one (SPEC §3)."""

from __future__ import annotations

import orjson
import pytest

from core.postback import MAX_BATCH_ITEMS
from core.sources import Source

PUBLIC_IP = "198.51.100.7"


def entries(redis_client, keys, source_key):
    return redis_client.xrange(keys.input_stream(keys.partition_of(source_key)))


def post_batch(client, key, body, content_type=None, remote_addr=PUBLIC_IP):
    if not isinstance(body, bytes):
        body = orjson.dumps(body)
    return client.simulate_post(
        f"/postback/{key}/batch", body=body, content_type=content_type, remote_addr=remote_addr
    )


def test_mixed_valid_and_invalid_items(client, source, redis_client, keys):
    items = [
        {"click_id": "a", "payout": 3.5},
        {"status": "approved"},
        {"click_id": "b", "status": "PENDING", "sub1": "s"},
        {"click_id": "c", "payout": "lots"},
        "not an object",
        {"offer_id": "OFFER-1"},
    ]
    resp = post_batch(client, source.key, items, "application/json")
    assert resp.status_code == 200
    body = resp.json
    assert body["status"] == "success"
    assert body["accepted"] == 3 and body["rejected"] == 3
    results = body["results"]
    assert [r["index"] for r in results] == [0, 1, 2, 3, 4, 5]
    assert results[1] == {"index": 1, "error": "click_id required"}
    assert results[3]["error"].startswith("payout: must be a decimal number")
    assert results[4] == {"index": 4, "error": "item: must be a JSON object, not a string"}

    stored = entries(redis_client, keys, source.key)
    assert [entry_id for entry_id, _ in stored] == [results[i]["log_id"] for i in (0, 2, 5)]
    assert {fields["method"] for _, fields in stored} == {"BATCH"}
    assert {fields["ip"] for _, fields in stored} == {PUBLIC_IP}
    assert {fields["source"] for _, fields in stored} == {source.key}
    first, second, third = (orjson.loads(fields["params"]) for _, fields in stored)
    assert first == {"click_id": "a", "status": "approved", "payout": "3.50", "custom": {}}
    assert second == {"click_id": "b", "status": "pending", "custom": {"sub1": "s"}}
    assert third["offer_id"] == "OFFER-1"


def test_ndjson_declared(client, source, redis_client, keys):
    body = b'{"click_id": "a"}\n{"click_id": "b"}\n'
    resp = post_batch(client, source.key, body, "application/x-ndjson")
    assert resp.status_code == 200
    assert resp.json["accepted"] == 2 and resp.json["rejected"] == 0
    assert len(entries(redis_client, keys, source.key)) == 2


def test_ndjson_detected_with_blank_lines_and_a_broken_line(client, source, redis_client, keys):
    body = b'{"click_id": "a"}\r\n\n{"click_id": \n{"click_id": "c", "payout": "1.005"}\n'
    resp = post_batch(client, source.key, body)
    assert resp.status_code == 200
    assert resp.json["accepted"] == 2 and resp.json["rejected"] == 1
    assert resp.json["results"][1]["error"].startswith("invalid JSON")
    stored = entries(redis_client, keys, source.key)
    assert orjson.loads(stored[1][1]["params"])["payout"] == "1.01"


def test_unfilled_macro_fails_only_its_item(client, source):
    resp = post_batch(client, source.key, [{"click_id": "{click_id}"}, {"click_id": "ok"}])
    assert resp.json["accepted"] == 1
    assert resp.json["results"][0]["error"].startswith("click_id: holds the unfilled macro")


def test_empty_batch_is_a_key_check(client, source, store):
    resp = post_batch(client, source.key, [])
    assert resp.status_code == 200
    assert resp.json == {"status": "success", "accepted": 0, "rejected": 0, "results": []}
    store.set_active("source", source.key, False)
    assert post_batch(client, source.key, []).status_code == 404


def test_unknown_key_refuses_the_whole_batch(client, store, redis_client, keys):
    resp = post_batch(client, "unknownunknownunknown", [{"click_id": "a"}])
    assert resp.status_code == 404
    assert resp.json == {"status": "error", "error": "Invalid postback key"}
    assert redis_client.xlen(keys.input_stream(0)) == 0


def test_forbidden_ip_refuses_the_whole_batch(client, store, redis_client, keys):
    source = store.add_source(Source.build(name="walled", allow_ip=["203.0.113.0/24"]))
    resp = post_batch(client, source.key, [{"click_id": "a"}, {"click_id": "b"}])
    assert resp.status_code == 403
    assert entries(redis_client, keys, source.key) == []
    resp = post_batch(client, source.key, [{"click_id": "a"}], remote_addr="203.0.113.9")
    assert resp.status_code == 200


@pytest.mark.parametrize("body", [b"", b'"text"', b"42", b"hello", b"[1, 2"])
def test_a_body_that_is_not_a_batch(client, source, body):
    resp = post_batch(client, source.key, body)
    assert resp.status_code == 400
    assert resp.json["error"].startswith("body: ")


def test_ten_thousand_items_are_accepted_in_one_write(client, source, redis_client, keys):
    items = [{"click_id": f"c{i}", "payout": "0.10"} for i in range(MAX_BATCH_ITEMS)]
    resp = post_batch(client, source.key, items)
    assert resp.status_code == 200
    assert resp.json["accepted"] == MAX_BATCH_ITEMS
    assert redis_client.xlen(keys.input_stream(keys.partition_of(source.key))) == MAX_BATCH_ITEMS


def test_more_than_ten_thousand_items_is_413(client, source, redis_client, keys):
    resp = post_batch(client, source.key, [{"click_id": "c"}] * (MAX_BATCH_ITEMS + 1))
    assert resp.status_code == 413
    assert "at most 10000" in resp.json["error"]
    assert entries(redis_client, keys, source.key) == []


def test_body_over_8_mib_is_413(client, source, redis_client, keys):
    pad = "x" * (1024 * 1024)
    body = orjson.dumps([{"click_id": f"c{i}", "pad": pad} for i in range(9)])
    assert len(body) > 8 * 1024 * 1024
    resp = post_batch(client, source.key, body)
    assert resp.status_code == 413
    assert entries(redis_client, keys, source.key) == []


def test_batch_is_post_only(client, source):
    assert client.simulate_get(f"/postback/{source.key}/batch").status_code == 405
