"""Partners (downstream publishers): where and how conversions are forwarded (SPEC §2, §5)."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

from core.addresses import Resolver, check_partner_url
from core.dialects import PartnerDialect
from core.records import Record, stored_in
from core.validation import ValidationError, check_id


@dataclass
class Partner(Record):
    partner_id: str
    url: str
    name: str = ""
    email: str = ""
    method: str = "GET"
    scope: str = "own"  # own | all
    secret: str = ""
    active: bool = True
    allow_private: bool = False
    created: int = 0
    #: The partner's own names ``{field: name}`` and status values ``{status: value}``.
    #: Stored together as one field, "dialect" (see ``core.records.stored_in``).
    params: dict[str, str] = field(default_factory=dict, metadata=stored_in("dialect"))
    status_map: dict[str, str] = field(default_factory=dict, metadata=stored_in("dialect"))

    @classmethod
    def build(
        cls,
        partner_id: str,
        *,
        url: str,
        method: str = "GET",
        scope: str = "own",
        secret: str = "",
        name: str = "",
        email: str = "",
        allow_private: bool = False,
        params: object = None,
        status_map: object = None,
        resolve: Resolver | None = None,
    ) -> Partner:
        """A validated partner. ``resolve`` looks the URL's host name up (see
        :func:`is_private_host`); the admin API and ``postback admin`` pass one."""
        check_id("partner_id", partner_id)
        method = str(method or "GET").upper()
        if method not in ("GET", "POST"):
            raise ValidationError("method", "must be GET or POST")
        scope = str(scope or "own").lower()
        if scope not in ("own", "all"):
            raise ValidationError("scope", "must be own or all")
        if email and not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", email):
            raise ValidationError("email", f"{email!r} is not an email address")
        dialect = PartnerDialect.build(params, status_map)
        return cls(
            params=dialect.params,
            status_map=dialect.status_map,
            partner_id=partner_id,
            url=check_partner_url(url, allow_private=allow_private, resolve=resolve),
            name=name or partner_id,
            email=email,
            method=method,
            scope=scope,
            secret=secret or "",
            allow_private=allow_private,
        )

    @property
    def dialect(self):
        """The partner's :class:`core.dialects.PartnerDialect`."""
        return PartnerDialect(self.params, self.status_map)

    def public(self) -> dict:
        """The fields shown by ``--json`` and the admin API: ``has_secret``, never the secret."""
        out = asdict(self)
        out["has_secret"] = bool(out.pop("secret"))
        return out
