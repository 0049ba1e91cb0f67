"""Postback parameter rules (SPEC §3), as plain functions: no Redis, no HTTP."""

from __future__ import annotations

import orjson
import pytest
from falcon.uri import parse_query_string
from hypothesis import given
from hypothesis import strategies as st

from core.postback import (
    MAX_BATCH_ITEMS,
    MAX_DEPTH,
    BatchTooLarge,
    PostbackError,
    body_kind,
    check_query_utf8,
    find_macro,
    last_values,
    parse_form,
    parse_json_object,
    split_batch,
    validate,
    validate_item,
)


def test_a_full_postback_is_normalised():
    out = validate(
        {
            "click_id": " CLK-789ABC ",
            "status": "Approved",
            "payout": "5.005",
            "currency": "eur",
            "transaction_id": "TXN-12345",
            "offer_id": "OFFER-1",
            "survey_id": "VBFS6",
            "goal": "install",
            "reason": "ok",
            "sub1": "abc",
        }
    )
    assert out == {
        "click_id": "CLK-789ABC",
        "status": "approved",
        "payout": "5.01",
        "currency": "EUR",
        "transaction_id": "TXN-12345",
        "offer_id": "OFFER-1",
        "survey_id": "VBFS6",
        "goal": "install",
        "reason": "ok",
        "custom": {"sub1": "abc"},
    }


def test_defaults_status_approved_and_leaves_absent_fields_out():
    assert validate({"click_id": "c1"}) == {"click_id": "c1", "status": "approved", "custom": {}}


def test_empty_values_count_as_not_given():
    out = validate({"click_id": "c1", "status": "", "payout": "", "currency": "", "goal": ""})
    assert out == {"click_id": "c1", "status": "approved", "custom": {}}


@pytest.mark.parametrize("status", ["approved", "PENDING", "Rejected", "test", " test "])
def test_status_is_case_insensitive(status):
    assert validate({"click_id": "c", "status": status})["status"] == status.strip().lower()


@pytest.mark.parametrize("status", ["done", "approve", "1", 1, True])
def test_unknown_status_is_refused_naming_the_field(status):
    with pytest.raises(PostbackError) as err:
        validate({"click_id": "c", "status": status})
    assert err.value.field == "status"
    assert str(err.value).startswith("status: must be one of approved, pending, rejected, test")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("5", "5.00"),
        ("3.50", "3.50"),
        ("0.005", "0.01"),
        ("2.675", "2.68"),
        ("0", "0.00"),
        ("1000000", "1000000.00"),
        (3.5, "3.50"),
        (2.675, "2.68"),
        (7, "7.00"),
        ("1E2", "100.00"),
        ("-0", "0.00"),
        ("-0.00", "0.00"),
        ("+2.5", "2.50"),
    ],
)
def test_payout_is_exact_and_rounded_half_up(raw, expected):
    assert validate({"click_id": "c", "payout": raw})["payout"] == expected


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("abc", "must be a decimal number"),
        ("-1", "must not be negative"),
        ("1000000.01", "must be at most 1000000"),
        ("NaN", "must be a decimal number"),
        ("Infinity", "must be a decimal number"),
        ("5,00", "must be a decimal number"),
        (True, "must be a decimal number"),
        ([5], "must be a decimal number"),
        ("1_000", "must be a decimal number"),
        ("\u0661\u0662", "must be a decimal number"),  # Arabic-Indic digits
        ("\uff15", "must be a decimal number"),  # fullwidth 5
    ],
)
def test_bad_payout_is_refused_saying_why(raw, why):
    with pytest.raises(PostbackError) as err:
        validate({"click_id": "c", "payout": raw})
    assert err.value.field == "payout"
    assert str(err.value).startswith(f"payout: {why}")


@pytest.mark.parametrize("currency", ["US", "USDT", "U5D", 840, "€€€"])
def test_bad_currency_is_refused(currency):
    with pytest.raises(PostbackError) as err:
        validate({"click_id": "c", "currency": currency})
    assert str(err.value).startswith("currency: must be a 3-letter code")


def test_click_id_required_unless_offer_id():
    with pytest.raises(PostbackError) as err:
        validate({"status": "approved", "payout": "1"})
    assert str(err.value) == "click_id required"
    assert validate({"offer_id": "OFFER-1"})["offer_id"] == "OFFER-1"


def test_blank_click_id_without_offer_id_is_missing():
    with pytest.raises(PostbackError, match="^click_id required$"):
        validate({"click_id": "  "})


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("click_id", "{click_id}"),
        ("click_id", "%7Bclick_id%7D"),
        ("click_id", "%7bclick_id%7d"),
        ("click_id", "%257Bclick_id%257D"),
        ("transaction_id", "TX-{transaction_id}"),
        ("sub1", "{sub1}"),
        ("payout", "{payout}"),
        ("status", "{status}"),
        ("click_id", "{{click_id}}"),
    ],
)
def test_a_value_still_holding_a_macro_is_refused_naming_the_parameter(name, value):
    params = {"click_id": "c1", name: value}
    with pytest.raises(PostbackError) as err:
        validate(params)
    assert err.value.field == name
    assert str(err.value).startswith(f"{name}: holds the unfilled macro")


def test_macros_inside_nested_json_custom_values_are_found():
    with pytest.raises(PostbackError) as err:
        validate({"click_id": "c1", "extra": {"list": [1, "{user_id}"]}})
    assert err.value.field == "extra"


@pytest.mark.parametrize("value", ["{}", '{"a": 1}', "50%", "100% {", "a}b{c", "%7B%7D"])
def test_braces_and_percent_signs_that_are_not_macros_pass(value):
    assert validate({"click_id": "c1", "note": value})["custom"]["note"] == value


def test_find_macro_reports_what_it_found():
    assert find_macro("x={click_id}") == "{click_id}"
    assert find_macro("%7BCLICK_ID%7D") == "%7BCLICK_ID%7D"
    assert find_macro("plain") is None


def test_custom_fields_keep_their_json_types():
    out = validate({"click_id": "c", "n": 3, "f": 1.5, "b": False, "o": {"k": [1, None]}, "z": ""})
    assert out["custom"] == {"n": 3, "f": 1.5, "b": False, "o": {"k": [1, None]}, "z": ""}


def test_known_string_fields_take_whole_numbers_but_not_other_types():
    assert validate({"click_id": 123, "offer_id": 7})["click_id"] == "123"
    with pytest.raises(PostbackError, match="^transaction_id: must be a string, not an object"):
        validate({"click_id": "c", "transaction_id": {"a": 1}})
    with pytest.raises(PostbackError, match="^goal: must be a string, not a boolean"):
        validate({"click_id": "c", "goal": True})


def test_overlong_or_control_character_ids_are_refused():
    with pytest.raises(PostbackError, match="^click_id: at most 256 characters"):
        validate({"click_id": "x" * 257})
    with pytest.raises(PostbackError, match="^click_id: must not contain control characters"):
        validate({"click_id": "a\nb"})


def test_repeated_parameters_take_the_last_value():
    assert last_values({"a": ["1", "2"], "b": "x"}) == {"a": "2", "b": "x"}
    assert parse_form(b"click_id=a&click_id=b&x=") == {"click_id": "b", "x": ""}


def test_form_body_is_decoded():
    assert parse_form(b"click_id=CLK%201&note=a+b") == {"click_id": "CLK 1", "note": "a b"}
    with pytest.raises(PostbackError, match="^body: form data must be UTF-8"):
        parse_form(b"click_id=\xff")


def test_json_body_must_be_a_valid_object():
    assert parse_json_object(b'{"payout": 3.50}') == {"payout": 3.5}
    with pytest.raises(PostbackError, match=r"^body: invalid JSON \("):
        parse_json_object(b'{"payout": ')
    with pytest.raises(PostbackError, match="^body: must be a JSON object, not an array"):
        parse_json_object(b"[1]")


def test_json_number_payout_keeps_its_decimal_text():
    assert validate(parse_json_object(b'{"click_id": "c", "payout": 3.50}'))["payout"] == "3.50"
    assert validate(parse_json_object(b'{"click_id": "c", "payout": 0.1}'))["payout"] == "0.10"


@pytest.mark.parametrize(
    ("content_type", "body", "kind"),
    [
        ("application/json", b"{}", "json"),
        ("application/json; charset=utf-8", b"{}", "json"),
        ("application/vnd.api+json", b"{}", "json"),
        ("application/x-www-form-urlencoded", b"a=1", "form"),
        (None, b' {"a": 1}', "json"),
        (None, b"a=1", "form"),
        ("text/plain", b"a=1", "form"),
    ],
)
def test_body_kind(content_type, body, kind):
    assert body_kind(content_type, body) == kind


def test_unsupported_media_type_is_refused():
    with pytest.raises(PostbackError, match="^body: Content-Type 'multipart/form-data'"):
        body_kind("multipart/form-data; boundary=x", b"--x")


def test_batch_as_json_array():
    assert split_batch(b'[{"click_id": "a"}, 5]', "application/json") == [{"click_id": "a"}, 5]


def test_batch_as_ndjson_detected_or_declared():
    body = b'{"click_id": "a"}\n\n{"click_id": "b"}\n'
    assert split_batch(body, None) == [{"click_id": "a"}, {"click_id": "b"}]
    assert split_batch(body, "application/x-ndjson") == [{"click_id": "a"}, {"click_id": "b"}]


def test_a_broken_ndjson_line_fails_alone():
    items = split_batch(b'{"click_id": "a"}\n{"click_id": \n{"click_id": "c"}', None)
    assert items[0] == {"click_id": "a"} and items[2] == {"click_id": "c"}
    with pytest.raises(PostbackError, match=r"^invalid JSON \("):
        validate_item(items[1])


@pytest.mark.parametrize("body", [b"", b"   ", b'"text"', b"5", b"hello"])
def test_a_body_that_is_not_a_batch_is_refused(body):
    with pytest.raises(PostbackError, match="^body: "):
        split_batch(body, None)


def test_a_json_object_sent_as_array_batch_is_refused():
    with pytest.raises(PostbackError, match="^body: invalid JSON"):
        split_batch(b"[{", "application/json")


def test_batch_item_limit():
    at_limit = orjson.dumps([{}] * MAX_BATCH_ITEMS)
    assert len(split_batch(at_limit, None)) == MAX_BATCH_ITEMS
    with pytest.raises(BatchTooLarge, match="at most 10000"):
        split_batch(orjson.dumps([{}] * (MAX_BATCH_ITEMS + 1)), None)
    with pytest.raises(BatchTooLarge):
        split_batch(b"{}\n" * (MAX_BATCH_ITEMS + 1), None)


def test_batch_items_must_be_objects():
    with pytest.raises(PostbackError, match="^item: must be a JSON object, not an array"):
        validate_item([1])
    assert validate_item({"click_id": "a"})["click_id"] == "a"


def nested(depth: int) -> object:
    value: object = "leaf"
    for level in range(depth):
        value = {"k": value} if level % 2 else [value]
    return value


def test_custom_values_nested_up_to_32_levels_pass_deeper_ones_are_refused():
    assert validate({"click_id": "c", "tree": nested(MAX_DEPTH)})["custom"]["tree"]
    for depth in (MAX_DEPTH + 1, 253, 1000):
        with pytest.raises(PostbackError) as err:
            validate({"click_id": "c", "tree": nested(depth)})
        assert err.value.field == "tree" and "nested deeper than 32" in str(err.value)


def test_query_bytes_that_are_not_utf8_are_refused_naming_the_parameter():
    check_query_utf8("click_id=c1&name=J%C3%BCrgen&sym=%EF%BF%BD")  # all UTF-8
    with pytest.raises(PostbackError) as err:
        check_query_utf8("click_id=c1&name=J%FCrgen")
    assert err.value.field == "name" and "UTF-8" in str(err.value)


@given(st.text(alphabet=st.sampled_from("ab=&;+% 0123456789ACEFcef\u00e9\x00"), max_size=40))
def test_a_form_body_reads_as_the_edge_reads_a_query_string(text):
    # core parses form bodies with the stdlib; the edge's query strings come from falcon
    assert parse_form(text.encode()) == last_values(parse_query_string(text, keep_blank=True))
