"""Sources (upstream): their secret postback key, allow-list and dialect (SPEC §2, §3)."""

from __future__ import annotations

import re
import secrets
from dataclasses import asdict, dataclass, field

from core.dialects import SourceDialect
from core.records import Record, stored_in
from core.validation import ValidationError, check_networks


def new_source_key() -> str:
    """24 random URL-safe characters, the first never ``-`` (which a command line would
    take for an option: ``postback admin source deactivate -Xy…``)."""
    while True:
        key = secrets.token_urlsafe(18)
        if not key.startswith("-"):
            return key


@dataclass
class Source(Record):
    key: str
    name: str
    active: bool = True
    allow: list[str] = field(default_factory=list)
    created: int = 0
    #: Parameter aliases ``{field: name the source sends}`` and status map ``{value: status}``.
    #: Stored together as one field, "dialect" (see ``core.records.stored_in``).
    params: dict[str, str] = field(default_factory=dict, metadata=stored_in("dialect"))
    status_map: dict[str, str] = field(default_factory=dict, metadata=stored_in("dialect"))

    @classmethod
    def build(
        cls,
        *,
        name: str,
        key: str | None = None,
        allow_ip=(),
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
            params=dialect.params,
            status_map=dialect.status_map,
        )

    @property
    def dialect(self):
        """The source's :class:`core.dialects.SourceDialect`."""
        return SourceDialect(self.params, self.status_map)

    def public(self) -> dict:
        """The fields shown by ``--json`` and the admin API."""
        return asdict(self)
