"""Partner dialects through the real forwarder to a local partner (SPEC §5 "Partner
dialect"): names and status values in the query, the JSON body and the URL macros, and
a signature that verifies over what arrived."""

from __future__ import annotations

from core.partners import Partner
from core.signature import verify_signature
from tests.sink import (  # noqa: F401 - fixtures
    enqueue_job,
    forwarded,
    make_forwarder_fixture,
    sample_payload,
    sink_fixture,
    until,
)

NAMES = {"click_id": "subid", "payout": "amount", "transaction_id": "txid"}
VALUES = {"approved": "1", "rejected": "0"}


def add(store, sink, partner_id: str, **fields) -> None:
    store.add_partner(
        Partner.build(
            partner_id,
            allow_private=True,
            secret="partner-secret",
            params=NAMES,
            status_map=VALUES,
            **{"url": sink.url(f"/{partner_id}"), **fields},
        )
    )


def test_get_partner_receives_its_names_and_values_signed(
    store, redis_client, keys, sink, make_forwarder
):
    add(store, sink, "get", url=sink.url("/get") + "?st={status}&c={click_id}")
    enqueue_job(redis_client, keys, "get", sample_payload(status="approved"))
    forwarder = make_forwarder()
    [request] = until(lambda: sink.received("/get"), step=forwarder.process_batch)
    params = request.params
    assert params["subid"] == params["c"] == "CLK-789ABC"
    assert params["amount"] == "4.00" and params["txid"] == "TXN-12345"
    assert params["status"] == params["st"] == "1"
    assert not {"click_id", "payout", "transaction_id"} & set(params)
    header = request.headers["X-Postback-Signature"]
    assert verify_signature("partner-secret", header, request.query.encode())
    until(lambda: forwarded(redis_client, keys), step=forwarder.process_batch)
    [entry] = forwarded(redis_client, keys)
    assert "subid=CLK-789ABC" in entry["url"] and entry["result"] == "delivered"


def test_post_partner_receives_its_names_and_values_signed(
    store, redis_client, keys, sink, make_forwarder
):
    add(store, sink, "post", method="POST")
    enqueue_job(redis_client, keys, "post", sample_payload(status="rejected"))
    forwarder = make_forwarder()
    [request] = until(lambda: sink.received("/post"), step=forwarder.process_batch)
    body = request.json()
    assert body["subid"] == "CLK-789ABC" and body["amount"] == "4.00"
    assert body["status"] == "0"
    assert "click_id" not in body and "payout" not in body
    assert verify_signature("partner-secret", request.headers["X-Postback-Signature"], request.body)


def test_a_partner_without_a_dialect_gets_our_names(
    store, redis_client, keys, sink, make_forwarder
):
    store.add_partner(Partner.build("plain", url=sink.url("/plain"), allow_private=True))
    enqueue_job(redis_client, keys, "plain", sample_payload())
    forwarder = make_forwarder()
    [request] = until(lambda: sink.received("/plain"), step=forwarder.process_batch)
    assert request.params["click_id"] == "CLK-789ABC" and request.params["status"] == "approved"
