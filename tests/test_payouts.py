"""Partner payouts: revenue share or fixed, integer cents, half-up (SPEC §4)."""

from __future__ import annotations

import random
from decimal import ROUND_HALF_UP, Decimal

import pytest

from core.offers import Offer
from core.payouts import PayoutRule, partner_payout_cents, partner_share_cents, upstream_cents


def revshare(percent: str, upstream: str) -> int:
    return partner_payout_cents(Offer.build("O", revshare=percent), upstream_cents(upstream))


def test_revshare_80_percent_of_3_50_is_2_80():
    assert revshare("80", "3.50") == 280


def test_revshare_80_percent_of_100_is_80_00():
    assert revshare("80", "100.00") == 8000


def test_fixed_50_whatever_the_upstream_pays():
    offer = Offer.build("O", fixed="50")
    assert partner_payout_cents(offer, upstream_cents("100.00")) == 5000
    assert partner_payout_cents(offer, 0) == 5000


def test_one_cent_at_33_percent_rounds_down_to_zero():
    assert revshare("33", "0.01") == 0


def test_half_a_cent_rounds_up():
    # 0.05 × 50% = 0.025 → 0.03; 0.03 × 50% = 0.015 → 0.02
    assert revshare("50", "0.05") == 3
    assert revshare("50", "0.03") == 2


def test_fractional_percent_with_four_decimals():
    # 123.45 × 12.3456% = 15.2406... → 15.24
    assert revshare("12.3456", "123.45") == 1524


def test_zero_and_hundred_percent():
    assert revshare("0", "999.99") == 0
    assert revshare("100", "999.99") == 99999


def revshare_cents(upstream_cents: int, percent: Decimal) -> int:
    """The Decimal reference: ``upstream × percent / 100``, half-up to the cent."""
    exact = Decimal(int(upstream_cents)) * percent / 100
    return int(exact.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def test_integer_arithmetic_equals_decimal_reference():
    rng = random.Random(7)
    for _ in range(5000):
        upstream = rng.randrange(0, 100_000_000)
        percent = Decimal(rng.randrange(0, 1_000_001)) / 10_000
        rule = PayoutRule.revshare(percent)
        assert rule.partner_cents(upstream) == revshare_cents(upstream, percent), (
            upstream,
            percent,
        )


def test_rule_refuses_more_than_four_decimals_or_out_of_range():
    with pytest.raises(ValueError):
        PayoutRule.revshare(Decimal("12.34567"))
    with pytest.raises(ValueError):
        PayoutRule.revshare(Decimal("100.01"))
    with pytest.raises(ValueError):
        PayoutRule.fixed(-1)
    with pytest.raises(ValueError):
        partner_share_cents(-1, 800_000)


@pytest.mark.parametrize(
    ("text", "cents"),
    [("5.00", 500), ("0.01", 1), ("1000000.00", 100_000_000), ("0.5", 50), ("7", 700)],
)
def test_upstream_cents_reads_the_edge_format_and_other_spellings(text, cents):
    assert upstream_cents(text) == cents


@pytest.mark.parametrize("text", ["-1.00", "abc", "1000000.01", "1e3x", "NaN"])
def test_upstream_cents_refuses_bad_amounts(text):
    with pytest.raises(ValueError):
        upstream_cents(text)
