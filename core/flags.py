"""Yes/no values as people and stored records write them: one vocabulary everywhere.

>>> parse_flag(" Yes "), parse_flag("0")
(True, False)
>>> is_true("1"), is_true(""), is_true(None)
(True, False, False)
"""

from __future__ import annotations

TRUE = ("true", "1", "yes")
FALSE = ("false", "0", "no")


def parse_flag(raw: str) -> bool:
    """A flag typed by a person; anything else raises ValueError("must be true or false")."""
    lowered = raw.strip().lower()
    if lowered in TRUE:
        return True
    if lowered in FALSE:
        return False
    raise ValueError("must be true or false")


def is_true(value: object) -> bool:
    """A flag read back from a record: true only when written as one of :data:`TRUE`."""
    return value is not None and str(value).strip().lower() in TRUE
