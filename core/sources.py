"""Sources (upstream): their secret postback key, allow-list and dialect (SPEC §2, §3)."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field

from core.dialects import SourceDialect, dialect_fields
from core.flags import is_true
from core.validation import ValidationError, check_networks, without_secret


def new_source_key() -> str:
    """24 random URL-safe characters, the first never ``-`` (which a command line would
    take for an option: ``postback admin source deactivate -Xy…``)."""
    while True:
        key = secrets.token_urlsafe(18)
        if not key.startswith("-"):
            return key


@dataclass
class Source:
    key: str
    name: str
    active: bool = True
    allow: list[str] = field(default_factory=list)
    secret: str = ""
    created: int = 0
    #: Parameter aliases ``{field: name the source sends}`` and status map ``{value: status}``.
    params: dict[str, str] = field(default_factory=dict)
    status_map: dict[str, str] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        *,
        name: str,
        key: str | None = None,
        allow_ip=(),
        secret: str = "",
        params: object = None,
        status_map: object = None,
    ) -> Source:
        if not name or not str(name).strip():
            raise ValidationError("name", "required")
        if key is None:
            key = new_source_key()
        elif not re.fullmatch(r"[A-Za-z0-9_\-]{16,128}", key):
            raise ValidationError(
                "key", "at least 16 URL-safe characters (letters, digits, '-', '_')"
            )
        dialect = SourceDialect.build(params, status_map)
        return cls(
            key=key,
            name=str(name).strip(),
            allow=check_networks(list(allow_ip)),
            secret=secret,
            params=dialect.params,
            status_map=dialect.status_map,
        )

    @property
    def dialect(self):
        """The source's :class:`core.dialects.SourceDialect`."""
        return SourceDialect(self.params, self.status_map)

    def to_redis(self) -> dict[str, str]:
        return {
            "key": self.key,
            "name": self.name,
            "active": "1" if self.active else "0",
            "allow": ",".join(self.allow),
            "secret": self.secret,
            "created": str(self.created),
            # One field, canonical JSON, "" for none: the ingest script compares it with
            # the edge's cached copy (storage/lua/ingest.lua).
            "dialect": self.dialect.to_json(),
        }

    @classmethod
    def from_redis(cls, data: dict[str, str]) -> Source:
        return cls(
            key=data["key"],
            name=data.get("name", ""),
            active=is_true(data.get("active", "0")),
            allow=[a for a in data.get("allow", "").split(",") if a],
            secret=data.get("secret", ""),
            created=int(data.get("created") or 0),
            **dialect_fields(data.get("dialect")),
        )

    def public(self) -> dict:
        """The fields shown by ``--json`` and the admin API (the secret stays hidden)."""
        return without_secret(self)
