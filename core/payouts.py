"""What the downstream partner earns for a conversion (SPEC §4), in integer cents.

An offer pays its partner either a revenue share of the upstream payout or a fixed
amount whatever the upstream pays. Points are 1:1 with the partner payout in cents.

    >>> rule = PayoutRule.revshare(Decimal("80"))
    >>> rule.partner_cents(350), rule.partner_cents(10000)
    (280, 8000)
    >>> PayoutRule.fixed(5000).partner_cents(10000)
    5000

The matcher applies a rule to every postback, so the arithmetic is integer-only: the
percentage (at most 4 decimals, see ``core.money.parse_percent``) is held as an integer
number of 1/10,000ths of a percent, and the half-up rounding is done on integers. The
result equals the Decimal computation ``upstream × percent / 100`` rounded half-up
exactly (``tests/test_payouts.py`` checks it on random values).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from core.money import MAX_AMOUNT, parse_amount, to_cents
from core.offers import Offer

#: One percent in the rule's integer unit (percent × 10,000).
_PERCENT_UNIT = 10_000
#: Divisor of upstream cents × scaled percent: /100 for the percentage, /10,000 for the scale.
_DIVISOR = 100 * _PERCENT_UNIT
_MAX_CENTS = to_cents(MAX_AMOUNT)


@dataclass(frozen=True)
class PayoutRule:
    """An offer's payout model: ``revshare`` with a scaled percentage, or ``fixed`` cents."""

    model: str
    scaled_percent: int = 0
    fixed_cents: int = 0

    @classmethod
    def revshare(cls, percent: Decimal) -> PayoutRule:
        scaled = percent * _PERCENT_UNIT
        if scaled != scaled.to_integral_value() or not 0 <= scaled <= 100 * _PERCENT_UNIT:
            raise ValueError(f"revshare percent {percent} must be 0-100 with at most 4 decimals")
        return cls("revshare", scaled_percent=int(scaled))

    @classmethod
    def fixed(cls, cents: int) -> PayoutRule:
        if cents < 0:
            raise ValueError("a fixed payout must not be negative")
        return cls("fixed", fixed_cents=int(cents))

    @classmethod
    def for_offer(cls, offer: Offer) -> PayoutRule:
        if offer.payout_model == "fixed":
            return cls.fixed(offer.fixed_cents or 0)
        return cls.revshare(offer.revshare_percent or Decimal(0))

    def partner_cents(self, upstream_cents: int) -> int:
        """The partner's payout for an upstream payout, both in cents, rounded half-up."""
        if self.model == "fixed":
            return self.fixed_cents
        return partner_share_cents(upstream_cents, self.scaled_percent)

    @classmethod
    def from_model(cls, model: dict[str, str]) -> PayoutRule:
        """A rule from an offer goal's model, ``{"revshare": "50"}`` or ``{"fixed": "1.00"}``."""
        if "fixed" in model:
            return cls.fixed(to_cents(Decimal(model["fixed"])))
        return cls.revshare(Decimal(model["revshare"]))


@dataclass(frozen=True)
class OfferPayouts:
    """An offer's payout rules: its own, and one per goal that has its own model.

    >>> payouts = OfferPayouts(PayoutRule.revshare(Decimal(80)), {"install": PayoutRule.fixed(100)})
    >>> payouts.rule("install").partner_cents(999), payouts.rule("purchase").partner_cents(1000)
    (100, 800)
    """

    default: PayoutRule
    goals: dict[str, PayoutRule]

    @classmethod
    def for_offer(cls, offer: Offer) -> OfferPayouts:
        goals = {name: PayoutRule.from_model(model) for name, model in offer.goals.items()}
        return cls(PayoutRule.for_offer(offer), goals)

    def rule(self, goal: str | None) -> PayoutRule:
        """The goal's own rule where the offer has one (goal names are matched trimmed and
        case-insensitively), else the offer's."""
        if goal and self.goals:
            return self.goals.get(goal.strip().lower(), self.default)
        return self.default


def partner_share_cents(upstream_cents: int, scaled_percent: int) -> int:
    """``upstream × percent / 100`` half-up to the cent, with ``scaled_percent = percent × 10⁴``.

    Amounts are never negative, so half-up is ``floor(x + ½)``, done as
    ``(2·n + d) // (2·d)`` to stay in integers.
    """
    if upstream_cents < 0:
        raise ValueError("an upstream payout must not be negative")
    numerator = upstream_cents * scaled_percent
    return (2 * numerator + _DIVISOR) // (2 * _DIVISOR)


def partner_payout_cents(offer: Offer, upstream_cents: int, goal: str = "") -> int:
    """The partner's payout in cents for ``offer`` (and the postback's ``goal``) given the
    upstream payout in cents."""
    return OfferPayouts.for_offer(offer).rule(goal).partner_cents(upstream_cents)


def upstream_cents(text: str) -> int:
    """Cents of a payout as the edge stores it ("5.00"); other spellings go through Decimal.

    >>> upstream_cents("5.00"), upstream_cents("0.5")
    (500, 50)
    """
    whole, dot, frac = text.partition(".")
    if dot and len(frac) == 2 and text.isascii() and whole.isdigit() and frac.isdigit():
        cents = int(whole) * 100 + int(frac)
        if cents <= _MAX_CENTS:
            return cents
    return to_cents(parse_amount(text))
