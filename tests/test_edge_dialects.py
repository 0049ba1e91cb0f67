"""Source dialects on the edge, real Redis (SPEC §3 "Source dialects"): aliases and status
maps read before validation, in GET, POST and batches, and a change taking effect on the
next postback on every edge process."""

from __future__ import annotations

import orjson
import pytest
from falcon import testing

from core.sources import Source
from edge.app import create_app

KEY = "aff-network-dialect-key-01"


@pytest.fixture
def advertiser(store) -> Source:
    return store.add_source(
        Source.build(
            name="Advertiser",
            key=KEY,
            params={"click_id": "aff_sub", "payout": "sum", "transaction_id": "tid"},
            status_map={"1": "approved", "0": "rejected", "sale": "approved"},
        )
    )


def stored(redis_client, keys) -> list[dict]:
    stream = keys.input_stream(keys.partition_of(KEY))
    return [orjson.loads(fields["params"]) for _, fields in redis_client.xrange(stream)]


def test_aliases_and_status_map_are_read_as_our_fields(client, advertiser, redis_client, keys):
    resp = client.simulate_get(
        f"/postback/{KEY}", query_string="aff_sub=CLK-1&sum=2.5&tid=T-1&status=1&country=US"
    )
    assert resp.status_code == 200, resp.text
    assert stored(redis_client, keys) == [
        {
            "click_id": "CLK-1",
            "status": "approved",
            "payout": "2.50",
            "transaction_id": "T-1",
            "custom": {"country": "US"},
        }
    ]


def test_the_fields_own_names_still_work(client, advertiser, redis_client, keys):
    resp = client.simulate_get(
        f"/postback/{KEY}", query_string="click_id=CLK-1&payout=1&status=rejected"
    )
    assert resp.status_code == 200, resp.text
    assert stored(redis_client, keys)[0]["click_id"] == "CLK-1"
    assert stored(redis_client, keys)[0]["status"] == "rejected"


def test_json_bodies_and_batches_speak_the_dialect_too(client, advertiser, redis_client, keys):
    resp = client.simulate_post(f"/postback/{KEY}", json={"aff_sub": "C1", "status": 0})
    assert resp.status_code == 200, resp.text
    resp = client.simulate_post(
        f"/postback/{KEY}/batch",
        json=[{"aff_sub": "C2", "status": "Sale"}, {"aff_sub": "C3", "status": "7"}],
    )
    assert resp.status_code == 200, resp.text
    assert resp.json["accepted"] == 1 and resp.json["rejected"] == 1
    assert "status" in resp.json["results"][1]["error"]
    assert [(p["click_id"], p["status"]) for p in stored(redis_client, keys)] == [
        ("C1", "rejected"),
        ("C2", "approved"),
    ]


def test_an_unmapped_unknown_status_is_still_a_400(client, advertiser):
    resp = client.simulate_get(f"/postback/{KEY}", query_string="aff_sub=C1&status=2")
    assert resp.status_code == 400
    assert resp.json["error"].startswith("status: must be one of")


def test_a_source_without_a_dialect_keeps_unknown_names_as_custom_data(
    client, source, redis_client, keys
):
    resp = client.simulate_get(f"/postback/{source.key}", query_string="click_id=C1&aff_sub=x")
    assert resp.status_code == 200
    [(_, fields)] = redis_client.xrange(keys.input_stream(keys.partition_of(source.key)))
    assert orjson.loads(fields["params"])["custom"] == {"aff_sub": "x"}


def test_a_change_takes_effect_on_the_next_postback_on_every_edge_process(
    settings, store, redis_client, keys
):
    """Two apps are two edge processes, each with its own cache."""
    store.add_source(Source.build(name="Late adopter", key=KEY))
    edges = [testing.TestClient(create_app(settings)) for _ in range(2)]
    try:
        for edge in edges:  # both caches now hold "no dialect"
            assert (
                edge.simulate_get(f"/postback/{KEY}", query_string="click_id=C0").status_code == 200
            )
            assert (
                edge.simulate_get(
                    f"/postback/{KEY}", query_string="aff_sub=C0&status=1"
                ).status_code
                == 400
            )

        store.update_source(KEY, params={"click_id": "aff_sub"}, status_map={"1": "approved"})
        for i, edge in enumerate(edges):
            resp = edge.simulate_get(f"/postback/{KEY}", query_string=f"aff_sub=C{i + 1}&status=1")
            assert resp.status_code == 200, resp.text
        # and back: the alias is no longer read, so no click_id
        store.update_source(KEY, params={}, status_map={})
        for edge in edges:
            resp = edge.simulate_get(f"/postback/{KEY}", query_string="aff_sub=C9")
            assert resp.status_code == 400 and resp.json["error"] == "click_id required"
            resp = edge.simulate_get(f"/postback/{KEY}", query_string="click_id=C9&aff_sub=x")
            assert resp.status_code == 200
    finally:
        for edge in edges:
            edge.app.ctx.redis.close()
    assert [p["click_id"] for p in stored(redis_client, keys)] == [
        "C0",
        "C0",
        "C1",
        "C2",
        "C9",
        "C9",
    ]
    assert stored(redis_client, keys)[-1]["custom"] == {"aff_sub": "x"}


def test_a_steady_dialect_costs_one_script_call_a_postback(client, advertiser, monkeypatch):
    """The cache is kept, not re-read: after the first postback, one round trip each."""
    from storage.scripts import Scripts

    calls = []
    real_run, real_packed = Scripts.run, Scripts.run_packed

    def run(self, client_, name, keys_, args=()):
        calls.append(args) if name == "ingest" else None
        return real_run(self, client_, name, keys_, args)

    def run_packed(self, client_, name, many):
        calls.extend(args for _, args in many) if name == "ingest" else None
        return real_packed(self, client_, name, many)

    monkeypatch.setattr(Scripts, "run", run)
    monkeypatch.setattr(Scripts, "run_packed", run_packed)
    for i in range(3):
        resp = client.simulate_get(f"/postback/{KEY}", query_string=f"aff_sub=C{i}&status=1")
        assert resp.status_code == 200
    assert len(calls) == 4  # one stale answer to fill the cache, then one each
