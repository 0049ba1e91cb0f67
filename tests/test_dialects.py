"""Source and partner dialects, pure: aliases, status maps, refusals, the request sent."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

import orjson
import pytest

from core.delivery_request import build_request
from core.dialects import PartnerDialect, SourceDialect, merge_pairs, parse_pairs
from core.partners import Partner
from core.postback import PostbackError, validate
from core.signature import verify_signature
from core.sources import Source
from core.validation import ValidationError

ADVERTISER = SourceDialect.build(
    {"click_id": "aff_sub", "payout": "sum", "transaction_id": "tid"},
    {"1": "approved", "0": "rejected", "Sale": "approved"},
)


def test_aliased_names_are_read_as_their_fields_and_not_kept_as_custom_data():
    postback = validate(ADVERTISER.apply({"aff_sub": "C1", "sum": "2.5", "tid": "T9", "x": "y"}))
    assert postback == {
        "click_id": "C1",
        "status": "approved",
        "payout": "2.50",
        "transaction_id": "T9",
        "custom": {"x": "y"},
    }


def test_a_fields_own_name_still_works_and_wins_over_its_alias():
    assert validate(ADVERTISER.apply({"click_id": "C1"}))["click_id"] == "C1"
    both = validate(ADVERTISER.apply({"click_id": "OWN", "aff_sub": "ALIAS"}))
    assert both["click_id"] == "OWN" and both["custom"] == {}


@pytest.mark.parametrize(
    ("sent", "status"),
    [
        ("1", "approved"),
        (1, "approved"),
        ("0", "rejected"),
        (" sale ", "approved"),
        ("SALE", "approved"),
        ("pending", "pending"),
    ],
)
def test_status_map_is_applied_before_the_status_rule(sent, status):
    assert validate(ADVERTISER.apply({"aff_sub": "C1", "status": sent}))["status"] == status


def test_an_unmapped_unknown_status_is_still_refused():
    with pytest.raises(PostbackError, match="status: must be one of"):
        validate(ADVERTISER.apply({"aff_sub": "C1", "status": "7"}))


def test_no_dialect_changes_nothing():
    params = {"aff_sub": "C1", "click_id": "C2", "status": "1"}
    assert SourceDialect().apply(params) == params
    assert not SourceDialect()
    assert Source.build(name="S").to_redis()["dialect"] == ""  # stored as nothing at all


@pytest.mark.parametrize(
    ("params", "status_map", "message"),
    [
        ({"clickid": "x"}, None, "params: unknown field 'clickid'"),
        (
            None,
            {"1": "paid"},
            "status_map: status 'paid' is not one of approved, pending, rejected, test",
        ),
        (
            {"click_id": "sub", "transaction_id": "sub"},
            None,
            "params: alias 'sub' given for both click_id and transaction_id",
        ),
        ({"click_id": "payout"}, None, "params: alias 'payout' of click_id is itself a field"),
        (None, {"Sale": "approved", "sale": "rejected"}, "status_map: value 'sale' given twice"),
        ({"click_id": ""}, None, "params: 'click_id': names must be 1-128 characters"),
        ("aff_sub", None, "params: must be an object of names to names"),
    ],
)
def test_bad_source_mappings_are_refused_with_one_line_naming_them(params, status_map, message):
    with pytest.raises(ValidationError) as caught:
        Source.build(name="S", params=params, status_map=status_map)
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


def test_bad_partner_mappings_are_refused_with_one_line_naming_them():
    url = "https://pub.example/pb"
    with pytest.raises(ValidationError, match="params: unknown field 'clickid'"):
        Partner.build("P", url=url, params={"clickid": "subid"})
    with pytest.raises(ValidationError, match="status_map: status 'paid' is not one of"):
        Partner.build("P", url=url, status_map={"paid": "1"})
    with pytest.raises(ValidationError, match="alias 'x' given for both"):
        Partner.build("P", url=url, params={"click_id": "x", "payout": "x"})


def test_command_line_pairs_refuse_a_field_given_twice_and_a_missing_equals():
    assert parse_pairs("param", ["click_id=aff_sub", "payout = sum"]) == {
        "click_id": "aff_sub",
        "payout": "sum",
    }
    with pytest.raises(ValidationError, match="param: 'click_id' given twice"):
        parse_pairs("param", ["click_id=a", "click_id=b"])
    with pytest.raises(ValidationError, match="must look like NAME=VALUE"):
        parse_pairs("status_map", ["1approved"])
    with pytest.raises(ValidationError, match="must look like NAME=VALUE"):
        parse_pairs("param", ["click_id="])
    assert parse_pairs("param", ["click_id="], removing=True) == {"click_id": ""}
    assert merge_pairs({"click_id": "a", "payout": "s"}, {"click_id": "", "goal": "g"}) == {
        "payout": "s",
        "goal": "g",
    }


def test_dialects_survive_storage():
    source = Source.build(name="S", params={"click_id": "aff_sub"}, status_map={"1": "approved"})
    again = Source.from_redis(source.to_redis())
    assert again.dialect == source.dialect
    assert SourceDialect.from_json(source.to_redis()["dialect"]) == source.dialect
    assert again.public()["params"] == {"click_id": "aff_sub"}
    assert again.public()["status_map"] == {"1": "approved"}


# -- partners ---------------------------------------------------------------------------
PUBLISHER = PartnerDialect.build(
    {"click_id": "subid", "payout": "amount"}, {"approved": "1", "rejected": "0"}
)
PAYLOAD = {
    "click_id": "C 1",
    "status": "approved",
    "payout": "2.80",
    "user_id": "u1",
    "timestamp": 1,
}


def test_partner_get_query_carries_its_names_and_values_and_the_signature_covers_it():
    request = build_request(
        "https://pub.example/pb?k=1", "GET", PAYLOAD, secret="s3cret", now=100, dialect=PUBLISHER
    )
    query = dict(parse_qsl(urlsplit(request.url).query))
    assert query == {
        "k": "1",
        "subid": "C 1",
        "status": "1",
        "amount": "2.80",
        "user_id": "u1",
        "timestamp": "1",
    }
    header = request.headers["X-Postback-Signature"]
    assert verify_signature("s3cret", header, urlsplit(request.url).query.encode(), now=100)


def test_partner_post_body_carries_its_names_and_values_and_the_signature_covers_it():
    request = build_request(
        "https://pub.example/pb", "POST", PAYLOAD, secret="s3cret", now=100, dialect=PUBLISHER
    )
    assert orjson.loads(request.body) == {
        "subid": "C 1",
        "status": "1",
        "amount": "2.80",
        "user_id": "u1",
        "timestamp": 1,
    }
    assert verify_signature(
        "s3cret", request.headers["X-Postback-Signature"], request.body, now=100
    )


def test_partner_macros_take_the_mapped_values_and_are_not_sent_twice():
    request = build_request(
        "https://pub.example/pb/{click_id}?s={status}&subid={click_id}",
        "GET",
        PAYLOAD,
        dialect=PUBLISHER,
    )
    parts = urlsplit(request.url)
    assert parts.path == "/pb/C%201"
    pairs = parse_qsl(parts.query)
    assert ("s", "1") in pairs
    assert [value for name, value in pairs if name == "subid"] == ["C 1"]  # not appended again
    assert ("status", "1") in pairs and ("amount", "2.80") in pairs


def test_a_status_the_partner_did_not_map_is_sent_as_is():
    request = build_request(
        "https://pub.example/pb", "POST", {**PAYLOAD, "status": "pending"}, dialect=PUBLISHER
    )
    assert orjson.loads(request.body)["status"] == "pending"
