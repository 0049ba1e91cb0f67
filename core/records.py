"""Records as Redis hashes: one typed conversion for every dataclass kept in one.

A record class derives from :class:`Record` and gets ``to_redis()`` (a ``{field: text}``
mapping for HSET) and ``from_redis(data)`` (from HGETALL's answer), driven by its
fields' annotations:

============  =====================================  ===================================
annotation    stored as                              read back ("" or missing →)
============  =====================================  ===================================
``str``       as is                                  missing: the default
``int``       decimal digits                         the default
``bool``      ``"1"`` / ``"0"``                      true only as a word of
                                                     ``core.flags.TRUE``; missing: false
``Decimal``   ``str()``                              the default
``X | None``  ``""`` for None, else as ``X``         None
``dict``      canonical JSON (sorted keys);          the default (empty)
              ``""`` when empty
``list[str]`` comma-joined (no entry holds a comma)  the default (empty)
============  =====================================  ===================================

A field without a default reads as the type's empty value when missing. Hash fields the
record does not name are ignored. Two layouts are chosen in a field's metadata:

- ``stored_in(NAME)``: the dict fields sharing NAME are kept together as one canonical
  JSON object under NAME (``""`` when all are empty): a source's or partner's dialect,
  which ``storage/lua/ingest.lua`` compares as one value.
- ``spread(KEYS)``: a dict field whose non-empty entries are hash fields of their own
  (a click's sub-ids); reading takes the KEYS present.

    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class Tag(Record):
    ...     name: str
    ...     weight: int = 1
    ...     hidden: bool = False
    >>> Tag("a", 3).to_redis()
    {'name': 'a', 'weight': '3', 'hidden': '0'}
    >>> Tag.from_redis({"name": "a", "weight": "", "hidden": "1"})
    Tag(name='a', weight=1, hidden=True)
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal

import orjson

from core.flags import is_true

_STORED_IN = "records.stored_in"
_SPREAD = "records.spread"


def stored_in(name: str) -> dict:
    """Field metadata: keep this dict field inside the JSON object stored under ``name``."""
    return {_STORED_IN: name}


def spread(keys: Iterable[str]) -> dict:
    """Field metadata: store this dict field's entries as hash fields of their own."""
    return {_SPREAD: tuple(keys)}


@dataclasses.dataclass(frozen=True)
class _Codec:
    encode: Callable[[object], str]
    decode: Callable[[str], object]
    empty: Callable[[], object]  # a field without a default, missing from the hash
    optional: bool = False  # "" is None


def _json(value: object) -> str:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode() if value else ""


def _join(values: Iterable[str]) -> str:
    values = list(values)
    if any("," in v or not v for v in values):
        raise ValueError(f"list entries to store must be non-empty and hold no comma: {values}")
    return ",".join(values)


_STR = _Codec(str, str, str)
_INT = _Codec(lambda v: str(int(v)), int, int)
_BOOL = _Codec(lambda v: "1" if v else "0", is_true, bool)
_DECIMAL = _Codec(str, Decimal, Decimal)
_DICT = _Codec(_json, lambda text: orjson.loads(text), dict)
_LIST = _Codec(_join, lambda text: [part for part in text.split(",") if part], list)


def _optional(codec: _Codec) -> _Codec:
    return _Codec(lambda v: "" if v is None else codec.encode(v), codec.decode, lambda: None, True)


def _codec(annotation: object, where: str) -> _Codec:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType) and len(args) == 2 and type(None) in args:
        inner = args[0] if args[1] is type(None) else args[1]
        return _optional(_codec(inner, where))
    if annotation is bool:  # before int: a bool is an int too
        return _BOOL
    simple = {str: _STR, int: _INT, Decimal: _DECIMAL}
    if annotation in simple:
        return simple[annotation]
    if annotation is dict or origin is dict:
        return _DICT
    if origin is list and args == (str,):
        return _LIST
    raise TypeError(f"{where}: no stored form for {annotation!r}")


@dataclasses.dataclass(frozen=True)
class _Field:
    name: str
    codec: _Codec
    default: Callable[[], object]
    stored_in: str | None
    spread: tuple[str, ...] | None


@functools.cache
def _schema(cls: type) -> tuple[_Field, ...]:
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        codec = _codec(hints[f.name], f"{cls.__name__}.{f.name}")
        if f.default is not dataclasses.MISSING:
            default = functools.partial(lambda value: value, f.default)
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory
        else:
            default = codec.empty
        group, keys = f.metadata.get(_STORED_IN), f.metadata.get(_SPREAD)
        if (group or keys) and codec is not _DICT:
            raise TypeError(f"{cls.__name__}.{f.name}: only a dict can be stored in or spread")
        out.append(_Field(f.name, codec, default, group, keys))
    return tuple(out)


def to_redis(record: object) -> dict[str, str]:
    """``record`` as the text fields of a Redis hash (see the module docstring)."""
    out: dict[str, str] = {}
    groups: dict[str, dict[str, object]] = {}
    for f in _schema(type(record)):
        value = getattr(record, f.name)
        if f.spread is not None:
            out.update({str(k): str(v) for k, v in value.items() if v})
        elif f.stored_in is not None:
            if f.stored_in not in groups:
                groups[f.stored_in] = {}
                out[f.stored_in] = ""  # its place among the fields
            groups[f.stored_in][f.name] = value
        else:
            out[f.name] = f.codec.encode(value)
    for name, members in groups.items():
        out[name] = _json(members) if any(members.values()) else ""
    return out


R = typing.TypeVar("R")


def from_redis(cls: type[R], data: Mapping[str, str]) -> R:
    """A ``cls`` from a Redis hash's fields (see the module docstring)."""
    values: dict[str, object] = {}
    groups: dict[str, dict] = {}
    for f in _schema(cls):
        if f.spread is not None:
            values[f.name] = {k: data[k] for k in f.spread if data.get(k)}
        elif f.stored_in is not None:
            if f.stored_in not in groups:
                text = data.get(f.stored_in)
                groups[f.stored_in] = orjson.loads(text) if text else {}
            values[f.name] = dict(groups[f.stored_in].get(f.name) or f.default())
        else:
            text = data.get(f.name)
            if f.codec is _BOOL:
                values[f.name] = is_true(text)
            elif text == "" and f.codec.optional:
                values[f.name] = None
            elif text is None or (text == "" and f.codec is not _STR):
                values[f.name] = f.default()
            else:
                values[f.name] = f.codec.decode(text)
    return cls(**values)


class Record:
    """A dataclass stored as a Redis hash: ``to_redis()`` and ``from_redis(data)``."""

    def to_redis(self) -> dict[str, str]:
        return to_redis(self)

    @classmethod
    def from_redis(cls: type[R], data: Mapping[str, str]) -> R:
        return from_redis(cls, data)
