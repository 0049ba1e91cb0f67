"""Exact money: ``Decimal`` at the edges, integer cents in storage and arithmetic.

>>> parse_amount("5.005")
Decimal('5.01')
>>> to_cents(Decimal("4.00")), format_cents(280)
(400, '2.80')
"""

from __future__ import annotations

import re
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

CENT = Decimal("0.01")
MAX_AMOUNT = Decimal("1000000")
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]{1,4})?", re.ASCII)


class AmountError(ValueError):
    """An amount that is not a decimal number in range."""


def parse_amount(raw: object, *, maximum: Decimal = MAX_AMOUNT) -> Decimal:
    """A decimal from 0 to ``maximum``, rounded half-up to the cent.

    Accepts strings and ints; a JSON float is taken by its shortest repr (``3.5`` →
    ``"3.5"``), never by its binary value. Booleans are refused.
    """
    if isinstance(raw, bool) or raw is None:
        raise AmountError("must be a decimal number")
    if isinstance(raw, float):
        raw = repr(raw)
    text = str(raw).strip()
    # Decimal() also reads "1_000", Arabic-Indic and fullwidth digits: a sender's typo or
    # trick, never a payout format. Only ASCII digits, one point, an exponent.
    if not _DECIMAL.fullmatch(text):
        raise AmountError("must be a decimal number")
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise AmountError("must be a decimal number") from None
    if not value.is_finite():
        raise AmountError("must be a decimal number")
    if value < 0:
        raise AmountError("must not be negative")
    if value > maximum:
        raise AmountError(f"must be at most {maximum}")
    # "-0" is zero, stored and shown as "0.00" (not "-0.00").
    return value.quantize(CENT, rounding=ROUND_HALF_UP).copy_abs()


def to_cents(amount: Decimal) -> int:
    return int(amount.quantize(CENT, rounding=ROUND_HALF_UP) * 100)


def format_cents(cents: int) -> str:
    """Cents as a string with two decimals: 280 → '2.80', -400 → '-4.00'."""
    cents = int(cents)
    sign = "-" if cents < 0 else ""
    whole, frac = divmod(abs(cents), 100)
    return f"{sign}{whole}.{frac:02d}"


def parse_percent(raw: object) -> Decimal:
    """A revenue-share percentage from 0 to 100 (up to 4 decimals)."""
    try:
        value = Decimal(str(raw).strip())
    except InvalidOperation:
        raise AmountError("must be a number from 0 to 100") from None
    if not value.is_finite() or value < 0 or value > 100:
        raise AmountError("must be a number from 0 to 100")
    if value != value.quantize(Decimal("0.0001")):
        raise AmountError("at most 4 decimals")
    return Decimal(format(value.normalize(), "f"))  # "80.00" → 80, never "8E+1"
