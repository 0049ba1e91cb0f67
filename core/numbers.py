"""Numbers a person typed (a setting, a command-line option), read with errors in our words.

>>> whole_number("8")
8
>>> whole_number("abc")
Traceback (most recent call last):
ValueError: must be a positive whole number
>>> as_argument(positive_number)("-1")
Traceback (most recent call last):
argparse.ArgumentTypeError: '-1': must be a positive number, e.g. 2.5
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def whole_number(raw: str, *, minimum: int = 1, maximum: int | None = None, what: str = "") -> int:
    """``raw`` as a whole number from ``minimum`` (to ``maximum``); else a ValueError
    saying what was expected: ``what``, or the range in words."""
    expected = what or _whole_range(minimum, maximum)
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"must be {expected}") from None
    if value < minimum or (maximum is not None and value > maximum):
        raise ValueError(f"must be {expected}")
    return value


def positive_number(raw: str, *, maximum: float | None = None, what: str = "") -> float:
    """``raw`` as a finite number above 0 (and at most ``maximum``); else a ValueError."""
    expected = what or (
        f"a number above 0 and at most {maximum:g}" if maximum else "a positive number, e.g. 2.5"
    )
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"must be {expected}") from None
    if not (value > 0 and math.isfinite(value)) or (maximum is not None and value > maximum):
        raise ValueError(f"must be {expected}")
    return value


def as_argument(parse: Callable[..., T], **options) -> Callable[[str], T]:
    """``parse`` (with ``options``) as an argparse ``type=``: its ValueError becomes the
    usage error argparse prints, naming the option and the value given."""

    def convert(raw: str) -> T:
        try:
            return parse(raw, **options)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{raw!r}: {exc}") from None

    return convert


def _whole_range(minimum: int, maximum: int | None) -> str:
    if maximum is not None:
        return f"a whole number from {minimum} to {maximum}"
    return "a positive whole number" if minimum == 1 else f"a whole number from {minimum}"
