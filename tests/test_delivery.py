"""The pure parts of a delivery: macros, the request, signing, retries, judging answers."""

from __future__ import annotations

import email.utils
import hashlib
import hmac
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

import orjson
import pytest
import requests

from core import delivery, delivery_request
from core.delivery import (
    DEAD_LETTERED,
    DELIVERED,
    FAILED,
    RETRY,
    classify_status,
    final_result,
    outcome_from_response,
    parse_retry_after,
    retry_delay,
)
from core.delivery_request import build_request, fill_macros
from core.signature import verify_signature

PAYLOAD = {
    "click_id": "CLK-789ABC",
    "status": "approved",
    "payout": "4.00",
    "currency": "USD",
    "offer_id": "VBFS6",
    "transaction_id": "TXN 12345",
    "conversion_id": "cv0-abc",
    "user_id": "u1",
    "sub1": "s/1",
    "timestamp": 1714000000,
    "survey": {"id": 7},
    "vip": True,
}


def test_macros_are_replaced_url_encoded_and_missing_ones_are_empty():
    url = fill_macros(
        "https://p.example/pb/{click_id}?tx={transaction_id}&s={sub1}&s2={sub2}&x={unknown}",
        PAYLOAD,
    )
    assert url == "https://p.example/pb/CLK-789ABC?tx=TXN%2012345&s=s%2F1&s2=&x={unknown}"


def test_every_spec_macro_is_known():
    template = "https://p.example/?" + "&".join(f"{m}={{{m}}}" for m in delivery_request.MACROS)
    payload = {m: f"v-{m}" for m in delivery_request.MACROS}
    params = dict(parse_qsl(urlsplit(fill_macros(template, payload)).query))
    assert params == payload


def test_get_appends_the_payload_keeping_the_partner_query():
    req = build_request("https://p.example/pb?token=abc&x=1", "GET", PAYLOAD)
    parts = urlsplit(req.url)
    pairs = parse_qsl(parts.query)
    assert pairs[:2] == [("token", "abc"), ("x", "1")]
    params = dict(pairs)
    assert params["click_id"] == "CLK-789ABC"
    assert params["payout"] == "4.00"
    assert params["transaction_id"] == "TXN 12345"
    assert params["timestamp"] == "1714000000"
    assert params["survey"] == '{"id":7}'
    assert params["vip"] == "true"
    assert req.body is None
    assert "Content-Type" not in req.headers


def test_get_does_not_repeat_a_parameter_the_partner_url_names():
    req = build_request("https://p.example/pb?click_id={click_id}&amt={payout}", "GET", PAYLOAD)
    pairs = parse_qsl(urlsplit(req.url).query)
    assert [v for k, v in pairs if k == "click_id"] == ["CLK-789ABC"]
    assert ("amt", "4.00") in pairs and ("payout", "4.00") in pairs


@pytest.mark.parametrize(
    "value", ["plain-Value_1.0~", "a b", "s/1&x=2", "100%", "é€", "line\nbreak", "a+b?#"]
)
def test_get_parameters_are_percent_encoded_as_urlencode_does(value):
    req = build_request("https://p.example/pb", "GET", {"click_id": value, "k y": "v"})
    expected = urlencode([("click_id", value), ("k y", "v")], quote_via=quote)
    assert urlsplit(req.url).query == expected
    assert dict(parse_qsl(urlsplit(req.url).query))["click_id"] == value


def test_empty_values_are_left_out():
    req = build_request("https://p.example/pb", "GET", {"click_id": "C1", "sub2": "", "x": None})
    assert urlsplit(req.url).query == "click_id=C1"


def test_post_sends_json_to_the_base_url():
    req = build_request("https://p.example/pb?k={click_id}", "POST", PAYLOAD)
    assert req.url == "https://p.example/pb?k=CLK-789ABC"
    assert req.headers["Content-Type"] == "application/json"
    assert orjson.loads(req.body) == PAYLOAD


def test_an_unknown_method_is_refused():
    with pytest.raises(ValueError, match="method"):
        build_request("https://p.example/", "PUT", PAYLOAD)


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_a_signed_request_verifies_with_the_documented_recipe(method):
    req = build_request(
        "https://p.example/pb?k=1", method, PAYLOAD, secret="s3cret", now=1714000000
    )
    header = req.headers["X-Postback-Signature"]
    stamp, v1 = (part.split("=", 1)[1] for part in header.split(","))
    signed = req.body if method == "POST" else urlsplit(req.url).query.encode()
    expected = hmac.new(b"s3cret", stamp.encode() + b"." + signed, hashlib.sha256).hexdigest()
    assert stamp == "1714000000" and v1 == expected
    assert verify_signature("s3cret", header, signed, now=1714000010)
    assert not verify_signature("other", header, signed, now=1714000010)
    assert not verify_signature("s3cret", header, signed + b"x", now=1714000010)
    assert not verify_signature("s3cret", header, signed, now=1714000000 + 3600)


def test_no_secret_no_signature():
    assert "X-Postback-Signature" not in build_request("https://p.example/", "GET", PAYLOAD).headers


@pytest.mark.parametrize(
    ("code", "result"),
    [(200, DELIVERED), (204, DELIVERED), (301, FAILED), (400, FAILED), (404, FAILED),
     (408, RETRY), (429, RETRY), (500, RETRY), (503, RETRY)],
)  # fmt: skip
def test_status_codes_are_classified(code, result):
    assert classify_status(code) == result


def test_a_redirect_is_a_failure_naming_where_it_pointed():
    outcome = outcome_from_response(302, {"Location": "https://elsewhere/"}, b"", 3)
    assert outcome.result == FAILED
    assert "https://elsewhere/" in outcome.error


def test_the_response_body_is_cut_to_500_characters():
    outcome = outcome_from_response(200, {}, "é".encode() * 2000, 3)
    assert outcome.response_body == "é" * 500
    assert outcome.success


def test_retry_after_is_read_from_a_retryable_answer_only():
    assert outcome_from_response(429, {"Retry-After": "90"}, b"", 1).retry_after_s == 90
    assert outcome_from_response(400, {"Retry-After": "90"}, b"", 1).retry_after_s is None


def test_retry_after_in_seconds_or_an_http_date():
    now = 1714000000.0
    assert parse_retry_after("120", now) == 120
    assert parse_retry_after(email.utils.formatdate(now + 300, usegmt=True), now) == 300
    assert parse_retry_after(email.utils.formatdate(now - 300, usegmt=True), now) == 0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None


@pytest.mark.parametrize(
    ("exc", "result"),
    [
        (requests.exceptions.ConnectTimeout("x"), RETRY),
        (requests.exceptions.ReadTimeout("x"), RETRY),
        (requests.exceptions.ConnectionError("refused"), RETRY),
        (requests.exceptions.InvalidURL("bad"), FAILED),
        (delivery_request.PrivateAddressRefused("10.0.0.1"), FAILED),
    ],
)
def test_exceptions_are_classified(exc, result):
    from processors.forwarder.send import outcome_from_exception

    outcome = outcome_from_exception(exc, 12)
    assert outcome.result == result
    assert outcome.error


def test_retry_delays_follow_the_schedule_with_jitter():
    schedule = (30, 120, 600)
    assert retry_delay(1, schedule, rand=lambda: 0.5) == 30
    assert retry_delay(2, schedule, rand=lambda: 0.0) == pytest.approx(120 * (1 - delivery.JITTER))
    assert retry_delay(3, schedule, rand=lambda: 1.0) == pytest.approx(600 * (1 + delivery.JITTER))
    assert retry_delay(4, schedule) is None
    spread = {round(retry_delay(1, schedule), 3) for _ in range(50)}
    assert len(spread) > 1 and all(25.5 <= d <= 34.5 for d in spread)


def test_retry_after_wins_when_longer_and_is_capped():
    schedule = (30, 120)
    assert retry_delay(1, schedule, retry_after_s=300, rand=lambda: 1.0) == 300
    assert retry_delay(1, schedule, retry_after_s=5, rand=lambda: 0.5) == 30
    assert retry_delay(1, schedule, retry_after_s=10**9) == delivery.RETRY_AFTER_CAP_S


def test_the_last_retryable_failure_is_dead_lettered():
    schedule = (1, 1)
    failed = delivery.Outcome(RETRY, error="HTTP 500")
    assert final_result(failed, 1, schedule) == RETRY
    assert final_result(failed, 3, schedule) == DEAD_LETTERED
    assert final_result(delivery.Outcome(FAILED), 3, schedule) == FAILED
