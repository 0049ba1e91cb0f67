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


# -- a batch over several partitions (one script call each, sent together) -------------


@pytest.fixture
def partitioned(settings):
    """An edge on 8 partitions (spread over every node on a cluster), its store, keys."""
    from edge.app import create_app
    from storage.keys import Keys
    from storage.redis_client import connect, delete_namespace, ensure_groups
    from storage.repositories import Store

    settings = settings.with_overrides(partitions=8)
    keys = Keys(settings.namespace, settings.partitions)
    redis_client = connect(settings)
    ensure_groups(redis_client, keys)
    app = create_app(settings)
    yield app, Store(redis_client, keys), redis_client, keys
    app.ctx.redis.close()
    delete_namespace(redis_client, settings.namespace)
    redis_client.close()


def _partition(keys, source_key: str, item: dict) -> int:
    from core.conversions import routing_identity
    from core.postback import validate

    return keys.partition_of(routing_identity(source_key, validate(item)))


def test_every_item_of_a_batch_gets_its_own_entry_in_its_partition(partitioned):
    from falcon import testing

    app, store, redis_client, keys = partitioned
    source = store.add_source(Source.build(name="spread"))
    items = [{"click_id": f"c{i}", "payout": "1.00", "sub1": str(i)} for i in range(200)]
    items.insert(7, {"click_id": "c7", "payout": "lots"})
    resp = post_batch(testing.TestClient(app), source.key, items)
    assert resp.status_code == 200
    assert (resp.json["accepted"], resp.json["rejected"]) == (200, 1)
    results = resp.json["results"]
    assert results[7]["error"].startswith("payout: ")
    used = set()
    for item, result in zip(items, results, strict=True):
        if "error" in result:
            continue
        n = _partition(keys, source.key, item)
        used.add(n)
        [(entry_id, fields)] = redis_client.xrange(
            keys.input_stream(n), result["log_id"], result["log_id"]
        )
        assert orjson.loads(fields["params"])["custom"] == {"sub1": item["sub1"]}
    assert len(used) == 8
    assert sum(redis_client.xlen(keys.input_stream(n)) for n in range(8)) == 200


def test_a_partition_whose_write_fails_answers_send_again_and_the_others_go_in(partitioned):
    """Each partition's call is all or nothing; a failed one fails only its own items."""
    from falcon import testing

    app, store, redis_client, keys = partitioned
    source = store.add_source(Source.build(name="half-broken"))
    items = [{"click_id": f"c{i}"} for i in range(64)]
    broken = _partition(keys, source.key, items[0])
    # The stream is replaced by a string: its XADD fails (WRONGTYPE), as a write on a
    # lost or full node would, after the key and IP checks passed.
    redis_client.delete(keys.input_stream(broken))
    redis_client.set(keys.input_stream(broken), "not a stream")

    resp = post_batch(testing.TestClient(app), source.key, items)
    assert resp.status_code == 200
    results = resp.json["results"]
    failed = [r["index"] for r in results if "error" in r]
    expected = [i for i, item in enumerate(items) if _partition(keys, source.key, item) == broken]
    assert failed == expected and 0 < len(failed) < len(items)
    assert {results[i]["error"] for i in failed} == {
        "storage unavailable for this item, send it again"
    }
    assert resp.json["accepted"] == len(items) - len(failed)
    written = sum(redis_client.xlen(keys.input_stream(n)) for n in range(8) if n != broken)
    assert written == resp.json["accepted"]


def test_a_batch_whose_every_partition_fails_is_503(partitioned):
    from falcon import testing

    app, store, redis_client, keys = partitioned
    source = store.add_source(Source.build(name="all-broken"))
    for n in range(8):
        redis_client.delete(keys.input_stream(n))
        redis_client.set(keys.input_stream(n), "not a stream")
    resp = post_batch(
        testing.TestClient(app), source.key, [{"click_id": f"c{i}"} for i in range(40)]
    )
    assert resp.status_code == 503
