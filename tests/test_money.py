from decimal import Decimal

import pytest

from core.money import (
    AmountError,
    format_cents,
    parse_amount,
    parse_percent,
    to_cents,
)
from core.payouts import PayoutRule


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("5.00", "5.00"),
        ("5.005", "5.01"),
        ("0.004", "0.00"),
        (3.5, "3.50"),
        (7, "7.00"),
        ("1000000", "1000000.00"),
    ],
)
def test_parse_amount_rounds_half_up_to_the_cent(raw, expected):
    assert parse_amount(raw) == Decimal(expected)


@pytest.mark.parametrize("raw", ["-1", "abc", "", "NaN", "Infinity", "1000000.01", True, None])
def test_parse_amount_refuses_what_is_not_an_amount_in_range(raw):
    with pytest.raises(AmountError):
        parse_amount(raw)


def test_cents_round_trip_and_format():
    assert to_cents(Decimal("2.80")) == 280
    assert format_cents(280) == "2.80"
    assert format_cents(-400) == "-4.00"
    assert format_cents(5) == "0.05"


@pytest.mark.parametrize(
    ("upstream", "percent", "expected"),
    [
        (350, "80", 280),
        (10000, "80", 8000),
        (1, "33", 0),
        (500, "80", 400),
        (1, "50", 1),
        (3, "50", 2),
    ],
)
def test_revshare_is_half_up_to_the_cent(upstream, percent, expected):
    assert PayoutRule.revshare(parse_percent(percent)).partner_cents(upstream) == expected


@pytest.mark.parametrize("raw", ["120", "-1", "abc", "50.00001"])
def test_percent_out_of_range_is_refused(raw):
    with pytest.raises(AmountError):
        parse_percent(raw)
