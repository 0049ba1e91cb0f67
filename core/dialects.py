"""How a source or a partner names things: parameter aliases and status values (SPEC §3, §5).

Plain functions over plain values. A **source dialect** is applied by the edge to a
postback's raw parameters before validation; a **partner dialect** is applied by the
forwarder to a payload before the request is built (and signed).

    >>> source = SourceDialect.build({"click_id": "aff_sub", "payout": "sum"}, {"1": "approved"})
    >>> source.apply({"aff_sub": "C1", "sum": "2.5", "status": "1", "x": "y"})
    {'x': 'y', 'click_id': 'C1', 'payout': '2.5', 'status': 'approved'}
    >>> partner = PartnerDialect.build({"click_id": "subid"}, {"approved": "1"})
    >>> partner.rename(partner.map_status({"click_id": "C1", "status": "approved"}))
    {'subid': 'C1', 'status': '1'}

Choices where the SPEC is silent (listed in the README): when a postback carries both
a field's own name and its alias, the own name wins and the alias is dropped; status
values are matched trimmed and case-insensitively (``Sale`` is ``sale``), and a JSON
number ``1`` is the value ``1``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import orjson

from core.clicks import SUB_IDS
from core.postback import KNOWN_FIELDS, STATUSES
from core.validation import ValidationError

#: What a partner may rename: every field of the payload (SPEC §5), extras included.
PAYLOAD_FIELDS = frozenset(
    (
        "click_id",
        "status",
        "payout",
        "currency",
        "offer_id",
        "transaction_id",
        "conversion_id",
        "user_id",
        *SUB_IDS,
        "timestamp",
        "survey_id",
        "goal",
        "reason",
    )
)
_MAX_NAME = 128


def parse_pairs(option: str, pairs: Iterable[str], *, removing: bool = False) -> dict[str, str]:
    """``["FIELD=NAME", ...]`` from the command line as a dict; a repeat is refused.
    With ``removing``, ``FIELD=`` is kept as ``{"FIELD": ""}`` (see :func:`merge_pairs`).

    >>> parse_pairs("param", ["click_id=aff_sub"])
    {'click_id': 'aff_sub'}
    """
    out: dict[str, str] = {}
    for pair in pairs:
        left, sep, right = pair.partition("=")
        left, right = left.strip(), right.strip()
        if not sep or not left or not (right or removing):
            raise ValidationError(option, f"{pair!r} must look like NAME=VALUE")
        if left in out:
            raise ValidationError(option, f"{left!r} given twice ({out[left]!r} and {right!r})")
        out[left] = right
    return out


def merge_pairs(current: Mapping[str, str], changes: Mapping[str, str]) -> dict[str, str]:
    """``current`` with ``changes`` applied: a value sets an entry, "" removes it.

    >>> merge_pairs({"click_id": "a", "payout": "sum"}, {"click_id": "b", "payout": ""})
    {'click_id': 'b'}
    """
    out = dict(current)
    for name, value in changes.items():
        if value:
            out[name] = value
        else:
            out.pop(name, None)
    return out


def _string_map(name: str, value: object) -> dict[str, str]:
    """A JSON object of non-empty strings (numbers allowed as status values)."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValidationError(name, "must be an object of names to names")
    out = {}
    for key, item in value.items():
        if isinstance(item, int) and not isinstance(item, bool):
            item = str(item)
        if not isinstance(key, str) or not isinstance(item, str):
            raise ValidationError(name, f"{key!r}: must map a string to a string")
        key, item = key.strip(), item.strip()
        if not key or not item or len(key) > _MAX_NAME or len(item) > _MAX_NAME:
            raise ValidationError(name, f"{key!r}: names must be 1-{_MAX_NAME} characters")
        out[key] = item
    return out


def check_aliases(aliases: object, fields: frozenset[str]) -> dict[str, str]:
    """``{field: alias}``: every field known, every alias used once and not a field name."""
    aliases = _string_map("params", aliases)
    seen: dict[str, str] = {}
    for field_name, alias in aliases.items():
        if field_name not in fields:
            raise ValidationError(
                "params", f"unknown field {field_name!r}; one of {', '.join(sorted(fields))}"
            )
        if alias in fields and alias != field_name:
            raise ValidationError("params", f"alias {alias!r} of {field_name} is itself a field")
        if alias in seen:
            raise ValidationError(
                "params", f"alias {alias!r} given for both {seen[alias]} and {field_name}"
            )
        seen[alias] = field_name
    return {f: a for f, a in aliases.items() if f != a}


def _status_key(value: object) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value.strip().lower() if isinstance(value, str) else None


def _bad_status(status: str) -> ValidationError:
    return ValidationError("status_map", f"status {status!r} is not one of {', '.join(STATUSES)}")


@dataclass(frozen=True)
class _Dialect:
    params: dict[str, str] = field(default_factory=dict)
    status_map: dict[str, str] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.params or self.status_map)

    @classmethod
    def from_json(cls, text: str):
        """From a record's stored ``dialect`` field (``core.records.stored_in``)."""
        if not text:
            return cls()
        data = orjson.loads(text)
        return cls(dict(data.get("params") or {}), dict(data.get("status_map") or {}))


@dataclass(frozen=True)
class SourceDialect(_Dialect):
    """A source's aliases (``{field: name it sends}``) and status map (``{value: status}``)."""

    @classmethod
    def build(cls, params: object = None, status_map: object = None) -> SourceDialect:
        aliases = check_aliases(params, KNOWN_FIELDS)
        statuses: dict[str, str] = {}
        for value, status in _string_map("status_map", status_map).items():
            key, status = _status_key(value), status.lower()
            if status not in STATUSES:
                raise _bad_status(status)
            if key in statuses:
                raise ValidationError("status_map", f"value {value!r} given twice")
            statuses[key] = status
        return cls(aliases, statuses)

    def apply(self, params: Mapping[str, object]) -> dict:
        """The postback's parameters under our names, its status mapped; the rest as is."""
        out = dict(params)
        for field_name, alias in self.params.items():
            if alias in out:
                value = out.pop(alias)
                out.setdefault(field_name, value)
        if self.status_map and "status" in out:
            mapped = self.status_map.get(_status_key(out["status"]))
            if mapped is not None:
                out["status"] = mapped
        return out


@dataclass(frozen=True)
class PartnerDialect(_Dialect):
    """A partner's names (``{field: name it wants}``) and values (``{status: value}``)."""

    @classmethod
    def build(cls, params: object = None, status_map: object = None) -> PartnerDialect:
        names = check_aliases(params, PAYLOAD_FIELDS)
        values: dict[str, str] = {}
        for status, value in _string_map("status_map", status_map).items():
            if status.lower() not in STATUSES:
                raise _bad_status(status)
            values[status.lower()] = value
        return cls(names, values)

    def map_status(self, payload: Mapping[str, object]) -> dict:
        """The payload with its status as the partner spells it (URL macros use this)."""
        out = dict(payload)
        value = self.status_map.get(str(out.get("status", "")))
        if value is not None:
            out["status"] = value
        return out

    def rename(self, payload: Mapping[str, object]) -> dict:
        """The payload's fields under the partner's names, order kept."""
        if not self.params:
            return dict(payload)
        return {self.params.get(name, name): value for name, value in payload.items()}
