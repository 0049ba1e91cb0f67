"""Property-based tests of the edge's parsing and validation (issue #8, deliverable 4).

Whatever a sender puts in the query, the body or a batch: never a 5xx, never an
exception other than the refusal naming a field, and exactly as many input stream
entries as postbacks answered 200 (a batch's ``accepted`` count included).
"""

from __future__ import annotations

import re
from decimal import ROUND_HALF_UP, Decimal

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.money import MAX_AMOUNT, AmountError, parse_amount
from core.postback import KNOWN_FIELDS, STATUSES, PostbackError, split_batch, validate

FIXTURES_SHARED = settings(
    max_examples=100, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
AMOUNT = re.compile(r"^\d+\.\d{2}$")

field_names = st.sampled_from(
    ["click_id", "status", "payout", "currency", "transaction_id", "offer_id", "goal", "x"]
) | st.text(max_size=12)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)  # what JSON numbers orjson takes
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
    | st.sampled_from(["approved", "PENDING", "5.005", "1_000", "\uff15", "-0", "{click_id}"])
)
json_values = st.recursive(
    scalars.filter(lambda v: not isinstance(v, float) or v == v and abs(v) != float("inf")),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
postbacks = st.dictionaries(field_names, json_values, max_size=8)


@given(postbacks)
def test_validate_returns_a_storable_postback_or_names_the_field(params):
    try:
        out = validate(params)
    except PostbackError as exc:
        assert exc.field and exc.field in exc.message
        return
    assert out["status"] in STATUSES
    assert "click_id" in out or "offer_id" in out
    if "payout" in out:
        assert AMOUNT.match(out["payout"]) and Decimal(out["payout"]) <= MAX_AMOUNT
    assert set(out["custom"]) == {k for k in params if k and k not in KNOWN_FIELDS}
    assert orjson.loads(orjson.dumps(out)) == orjson.loads(orjson.dumps(out, default=str))


@given(st.decimals(min_value=0, max_value=MAX_AMOUNT, places=4, allow_nan=False))
def test_an_amount_in_range_is_rounded_half_up_to_the_cent(amount):
    assert parse_amount(str(amount)) == amount.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


@given(st.text(max_size=20) | scalars)
def test_anything_else_is_an_amount_in_range_or_an_amount_error(raw):
    try:
        value = parse_amount(raw)
    except AmountError:
        return
    assert Decimal(0) <= value <= MAX_AMOUNT and value == value.quantize(Decimal("0.01"))
    assert not value.is_signed()


@given(st.binary(max_size=300), st.sampled_from([None, "application/json", "application/x-ndjson"]))
def test_a_batch_body_splits_or_is_refused(body, content_type):
    try:
        items = split_batch(body, content_type)
    except PostbackError:
        return
    assert isinstance(items, list)


# -- the edge, in-process, on real Redis ---------------------------------------------------
query_parts = st.lists(
    st.tuples(
        field_names,
        st.text(max_size=30)
        | st.sampled_from(["%FF", "%C3%BC", "%7Bclick_id%7D", "%", "+", "%00"]),
    ),
    max_size=6,
)


def answered(redis_client, keys, source, send, *, batch: bool = False) -> None:
    """Send one request; check its answer, and that the stream grew by what it accepted."""
    stream = keys.input_stream(keys.partition_of(source.key))
    before = redis_client.xlen(stream)
    resp = send()
    assert resp.status_code < 500, resp.text
    assert resp.headers["content-type"] == "application/json"
    if resp.status_code == 200:
        accepted = resp.json["accepted"] if batch else 1
        if batch:
            assert resp.json["accepted"] + resp.json["rejected"] == len(resp.json["results"])
    else:
        assert resp.status_code in (400, 413, 414), resp.text
        assert resp.json["status"] == "error" and resp.json["error"]
        accepted = 0
    assert redis_client.xlen(stream) - before == accepted


@FIXTURES_SHARED
@given(query_parts)
def test_any_query_is_accepted_or_refused_never_a_5xx(client, source, redis_client, keys, parts):
    query = "&".join(f"{name}={value}" for name, value in parts)
    answered(
        redis_client,
        keys,
        source,
        lambda: client.simulate_get(f"/postback/{source.key}", query_string=query),
    )


content_types = st.sampled_from(
    [
        None,
        "application/json",
        "application/json; charset=utf-8",
        "application/x-www-form-urlencoded",
        "text/plain",
        "application/x-ndjson",
        "multipart/form-data",
        "application/xml",
    ]
)
bodies = (
    st.binary(max_size=400)
    | postbacks.map(lambda p: orjson.dumps(p, default=str))
    | st.lists(postbacks, max_size=5).map(lambda p: orjson.dumps(p, default=str))
    | st.lists(postbacks, max_size=5).map(
        lambda items: b"\n".join(orjson.dumps(p, default=str) for p in items)
    )
)


def _headers(content_type):
    return {"Content-Type": content_type} if content_type else {}


@FIXTURES_SHARED
@given(bodies, content_types, st.sampled_from(["", "/batch"]))
def test_any_body_or_batch_is_accepted_or_refused_never_a_5xx(
    client, source, redis_client, keys, body, content_type, path
):
    answered(
        redis_client,
        keys,
        source,
        lambda: client.simulate_post(
            f"/postback/{source.key}{path}", body=body, headers=_headers(content_type)
        ),
        batch=bool(path),
    )
