"""Single postbacks on the edge (SPEC §3): every row of the response table, on real Redis."""

from __future__ import annotations

import io
import ipaddress

import falcon
import orjson
import pytest
from falcon import testing

from core.sources import Source
from edge import metrics
from edge.app import create_app
from edge.client_ip import client_ip, ip_allowed
from edge.postbacks import read_body

PUBLIC_IP = "198.51.100.7"


def entries(redis_client, keys, source_key):
    return redis_client.xrange(keys.input_stream(keys.partition_of(source_key)))


def get(client, key, query, **kwargs):
    kwargs.setdefault("remote_addr", PUBLIC_IP)
    return client.simulate_get(f"/postback/{key}", query_string=query, **kwargs)


# -- accepted ----------------------------------------------------------------------------


def test_get_is_accepted_and_written_to_the_stream(client, source, redis_client, keys):
    resp = get(
        client,
        source.key,
        "click_id=CLK-789ABC&status=Approved&payout=5.005&survey_id=VBFS6"
        "&transaction_id=TXN-12345&sub1=abc",
    )
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/json"
    body = resp.json
    assert set(body) == {"status", "message", "log_id"}
    assert body["status"] == "success" and body["message"] == "Postback received"

    [(entry_id, fields)] = entries(redis_client, keys, source.key)
    assert entry_id == body["log_id"]
    assert fields["source"] == source.key
    assert fields["method"] == "GET"
    assert fields["ip"] == PUBLIC_IP
    assert orjson.loads(fields["params"]) == {
        "click_id": "CLK-789ABC",
        "status": "approved",
        "payout": "5.01",
        "transaction_id": "TXN-12345",
        "survey_id": "VBFS6",
        "custom": {"sub1": "abc"},
    }


def test_post_json_keeps_decimal_payout_and_custom_types(client, source, redis_client, keys):
    resp = client.simulate_post(
        f"/postback/{source.key}",
        body=b'{"click_id": "c1", "payout": 3.50, "currency": "eur", "n": 7, "ok": true,'
        b' "meta": {"a": [1, "x"]}}',
        content_type="application/json",
    )
    assert resp.status_code == 200, resp.text
    [(entry_id, fields)] = entries(redis_client, keys, source.key)
    assert entry_id == resp.json["log_id"]
    assert fields["method"] == "POST"
    params = orjson.loads(fields["params"])
    assert params["payout"] == "3.50" and params["currency"] == "EUR"
    assert params["custom"] == {"n": 7, "ok": True, "meta": {"a": [1, "x"]}}


def test_post_form_encoded_merges_query_with_body_winning(client, source, redis_client, keys):
    resp = client.simulate_post(
        f"/postback/{source.key}",
        query_string="click_id=from-query&goal=install",
        body="click_id=from-body&status=pending&payout=10",
        content_type="application/x-www-form-urlencoded",
    )
    assert resp.status_code == 200, resp.text
    params = orjson.loads(entries(redis_client, keys, source.key)[0][1]["params"])
    assert params["click_id"] == "from-body"
    assert params["goal"] == "install"
    assert params["status"] == "pending" and params["payout"] == "10.00"


def test_post_with_everything_in_the_query_string(client, source, redis_client, keys):
    resp = client.simulate_post(f"/postback/{source.key}", query_string="click_id=c9")
    assert resp.status_code == 200
    assert orjson.loads(entries(redis_client, keys, source.key)[0][1]["params"])["click_id"] == "c9"


def test_offer_id_alone_is_enough(client, source):
    assert get(client, source.key, "offer_id=OFFER-1&payout=1").status_code == 200


def test_repeated_query_parameter_takes_the_last_value(client, source, redis_client, keys):
    assert get(client, source.key, "click_id=a&click_id=b&sub1=x&sub1=y").status_code == 200
    params = orjson.loads(entries(redis_client, keys, source.key)[0][1]["params"])
    assert params["click_id"] == "b" and params["custom"] == {"sub1": "y"}


def test_accepted_postbacks_are_counted_by_source_name_not_key(client, source):
    labels = {"source": source.name, "status": "pending"}
    before = metrics.REGISTRY.get_sample_value("postback_received_total", labels) or 0
    assert get(client, source.key, "click_id=c&status=pending").status_code == 200
    assert metrics.REGISTRY.get_sample_value("postback_received_total", labels) == before + 1
    assert (
        metrics.REGISTRY.get_sample_value(
            "postback_received_total", {"source": source.key, "status": "pending"}
        )
        is None
    )


# -- refused: 400 ------------------------------------------------------------------------


def test_missing_click_id_and_offer_id(client, source, redis_client, keys):
    resp = get(client, source.key, "status=approved&payout=5")
    assert resp.status_code == 400
    assert resp.json == {"status": "error", "error": "click_id required"}
    assert resp.headers["content-type"] == "application/json"
    assert entries(redis_client, keys, source.key) == []


@pytest.mark.parametrize(
    ("query", "name"),
    [
        ("click_id={click_id}", "click_id"),
        ("click_id=%7Bclick_id%7D", "click_id"),
        ("click_id=%257Bclick_id%257D", "click_id"),
        ("click_id=c1&transaction_id=%7Btransaction_id%7D", "transaction_id"),
        ("click_id=c1&sub2={sub2}", "sub2"),
    ],
)
def test_unfilled_macro_is_refused_naming_the_parameter(
    client, source, redis_client, keys, query, name
):
    resp = get(client, source.key, query)
    assert resp.status_code == 400
    assert resp.json["status"] == "error"
    assert resp.json["error"].startswith(f"{name}: holds the unfilled macro")
    assert entries(redis_client, keys, source.key) == []


def test_unfilled_macro_in_a_json_body(client, source):
    resp = client.simulate_post(f"/postback/{source.key}", json={"click_id": "{click_id}"})
    assert resp.status_code == 400
    assert resp.json["error"].startswith("click_id: holds the unfilled macro")


@pytest.mark.parametrize(
    ("query", "error_start"),
    [
        ("click_id=c&payout=abc", "payout: must be a decimal number"),
        ("click_id=c&payout=-1", "payout: must not be negative"),
        ("click_id=c&payout=1000000.01", "payout: must be at most 1000000"),
        ("click_id=c&status=done", "status: must be one of approved, pending, rejected, test"),
        ("click_id=c&currency=US", "currency: must be a 3-letter code"),
    ],
)
def test_bad_field_is_refused_saying_which_and_why(
    client, source, redis_client, keys, query, error_start
):
    resp = get(client, source.key, query)
    assert resp.status_code == 400
    assert resp.json["error"].startswith(error_start), resp.json
    assert entries(redis_client, keys, source.key) == []


@pytest.mark.parametrize(
    ("body", "error_start"),
    [
        (b'{"click_id": ', "body: invalid JSON"),
        (b'["click_id"]', "body: must be a JSON object, not an array"),
        (b'"c1"', "body: must be a JSON object, not a string"),
    ],
)
def test_invalid_or_non_object_json_is_refused(client, source, body, error_start):
    resp = client.simulate_post(
        f"/postback/{source.key}", body=body, content_type="application/json"
    )
    assert resp.status_code == 400
    assert resp.json["error"].startswith(error_start), resp.json


# -- refused: 404, 403 -------------------------------------------------------------------


@pytest.mark.parametrize("key", ["unknownunknownunknown", "short", "bad key with spaces 12"])
def test_unknown_key(client, store, key):
    resp = get(client, key, "click_id=c")
    assert resp.status_code == 404
    assert resp.json == {"status": "error", "error": "Invalid postback key"}


def test_deactivated_key_is_refused_at_once_and_reactivation_too(
    client, store, source, redis_client, keys
):
    assert get(client, source.key, "click_id=c1").status_code == 200
    store.set_active("source", source.key, False)
    resp = get(client, source.key, "click_id=c2")
    assert resp.status_code == 404
    assert resp.json == {"status": "error", "error": "Invalid postback key"}
    store.set_active("source", source.key, True)
    assert get(client, source.key, "click_id=c3").status_code == 200
    clicks = [
        orjson.loads(f["params"])["click_id"] for _, f in entries(redis_client, keys, source.key)
    ]
    assert clicks == ["c1", "c3"]


def test_ip_outside_the_allow_list_is_forbidden(client, store, redis_client, keys):
    source = store.add_source(Source.build(name="walled", allow_ip=["203.0.113.0/24"]))
    resp = get(client, source.key, "click_id=c", remote_addr=PUBLIC_IP)
    assert resp.status_code == 403
    assert resp.json["status"] == "error" and PUBLIC_IP in resp.json["error"]
    assert get(client, source.key, "click_id=c", remote_addr="203.0.113.40").status_code == 200
    assert len(entries(redis_client, keys, source.key)) == 1


def test_allow_list_changes_take_effect_at_once(client, store, source):
    assert get(client, source.key, "click_id=c", remote_addr=PUBLIC_IP).status_code == 200
    store.update_source(source.key, allow=["203.0.113.0/24"])
    assert get(client, source.key, "click_id=c", remote_addr=PUBLIC_IP).status_code == 403
    store.update_source(source.key, allow=["203.0.113.0/24", f"{PUBLIC_IP}/32"])
    assert get(client, source.key, "click_id=c", remote_addr=PUBLIC_IP).status_code == 200
    store.update_source(source.key, allow=[])
    assert get(client, source.key, "click_id=c", remote_addr="192.0.2.1").status_code == 200


def test_forwarded_for_is_believed_only_from_trusted_proxies(settings, store, redis_client, keys):
    settings = settings.with_overrides(trusted_proxies=(ipaddress.ip_network("10.0.0.0/8"),))
    app = create_app(settings)
    try:
        client = testing.TestClient(app)
        source = store.add_source(Source.build(name="proxied", allow_ip=["203.0.113.5"]))
        xff = {"X-Forwarded-For": "192.0.2.99, 203.0.113.5, 10.0.0.9"}
        resp = get(client, source.key, "click_id=c", remote_addr="10.0.0.2", headers=xff)
        assert resp.status_code == 200
        assert entries(redis_client, keys, source.key)[0][1]["ip"] == "203.0.113.5"
        # The same header from an untrusted peer proves nothing.
        resp = get(client, source.key, "click_id=c", remote_addr=PUBLIC_IP, headers=xff)
        assert resp.status_code == 403
    finally:
        app.ctx.redis.close()


# -- refused: 413 ------------------------------------------------------------------------


def test_single_body_over_64_kib(client, source, redis_client, keys):
    body = b'{"click_id": "c", "pad": "' + b"x" * (64 * 1024) + b'"}'
    resp = client.simulate_post(
        f"/postback/{source.key}", body=body, content_type="application/json"
    )
    assert resp.status_code == 413
    assert resp.json["status"] == "error"
    assert entries(redis_client, keys, source.key) == []


def test_a_body_just_under_64_kib_is_accepted(client, source):
    pad = 64 * 1024 - 40
    body = b'{"click_id": "c", "pad": "' + b"x" * pad + b'"}'
    assert len(body) <= 64 * 1024
    resp = client.simulate_post(
        f"/postback/{source.key}", body=body, content_type="application/json"
    )
    assert resp.status_code == 200


class EndlessBody(io.RawIOBase):
    """A request body that never ends, counting what was read of it."""

    def __init__(self) -> None:
        self.read_bytes = 0

    def readable(self) -> bool:
        return True

    def read(self, size=-1):
        if size is None or size < 0:
            raise AssertionError("the body was read without a bound")
        self.read_bytes += size
        return b"x" * size


def test_a_body_without_content_length_is_read_bounded():
    stream = EndlessBody()
    env = testing.create_environ(method="POST", path="/postback/k")
    env.pop("CONTENT_LENGTH", None)
    env["wsgi.input"] = stream
    with pytest.raises(falcon.HTTPContentTooLarge):
        read_body(falcon.Request(env), 1000)
    assert stream.read_bytes <= 1001


def test_a_declared_oversize_length_is_refused_before_reading():
    stream = EndlessBody()
    env = testing.create_environ(method="POST", path="/postback/k")
    env["CONTENT_LENGTH"] = str(10**9)
    env["wsgi.input"] = stream
    with pytest.raises(falcon.HTTPContentTooLarge):
        read_body(falcon.Request(env), 64 * 1024)
    assert stream.read_bytes == 0


# -- caller IP (pure) --------------------------------------------------------------------

TRUSTED = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8"))


@pytest.mark.parametrize(
    ("peer", "xff", "expected"),
    [
        ("198.51.100.1", "203.0.113.5", "198.51.100.1"),  # untrusted peer: header ignored
        ("10.0.0.1", None, "10.0.0.1"),
        ("10.0.0.1", "203.0.113.5", "203.0.113.5"),
        ("10.0.0.1", "1.1.1.1, 203.0.113.5, 10.0.0.7", "203.0.113.5"),  # right-most untrusted
        ("10.0.0.1", "10.0.0.8, 10.0.0.7", "10.0.0.8"),  # all trusted: left-most
        ("10.0.0.1", "203.0.113.5, garbage", "10.0.0.1"),  # garbage: stop at our proxy
        ("10.0.0.1", "203.0.113.5:4711", "203.0.113.5"),
        ("10.0.0.1", "[2001:db8::1]:443", "2001:db8::1"),
        ("fd00::1", "::ffff:203.0.113.5", "203.0.113.5"),
    ],
)
def test_client_ip(peer, xff, expected):
    assert client_ip(peer, xff, TRUSTED) == expected


def test_no_trusted_proxies_means_the_peer():
    assert client_ip("10.0.0.1", "203.0.113.5", ()) == "10.0.0.1"


@pytest.mark.parametrize(
    ("ip", "allow", "allowed"),
    [
        ("198.51.100.7", "", True),
        ("198.51.100.7", "198.51.100.0/24", True),
        ("198.51.100.7", "203.0.113.0/24,198.51.100.7/32", True),
        ("198.51.100.7", "203.0.113.0/24", False),
        ("::ffff:198.51.100.7", "198.51.100.0/24", True),
        ("2001:db8::5", "2001:db8::/32", True),
        ("2001:db8::5", "198.51.100.0/24", False),
        ("not-an-ip", "198.51.100.0/24", False),
    ],
)
def test_ip_allowed(ip, allow, allowed):
    assert ip_allowed(ip, allow) is allowed
