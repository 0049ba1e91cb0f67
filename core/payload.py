"""What partners receive for a conversion event, and which partners receive it (SPEC §5).

Plain functions over plain values: the matcher builds one payload per event and one
forward job per recipient (``match.lua`` wraps the payload in each job); the admin
test distribution builds the same payload shape.

    >>> build_payload(click_id="CLK-1", status="approved", payout="4.00", currency="USD",
    ...               timestamp=1700000000)
    {'click_id': 'CLK-1', 'status': 'approved', 'payout': '4.00', 'currency': 'USD', 'timestamp': 1700000000}
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from core.clicks import SUB_IDS
from core.partners import Partner

#: Extra postback fields passed on to partners when the source sent them.
EXTRA_FIELDS = ("survey_id", "goal", "reason")


def build_payload(
    *,
    status: str,
    payout: str,
    timestamp: int,
    click_id: str = "",
    currency: str = "",
    offer_id: str = "",
    transaction_id: str = "",
    conversion_id: str = "",
    user_id: str = "",
    subs: Mapping[str, str] | None = None,
    extras: Mapping[str, object] | None = None,
    custom: Mapping[str, object] | None = None,
    source_key: str = "",
) -> dict:
    """The payload of one conversion event; empty values are left out.

    Standard fields come first and win over custom fields of the same name. ``payout``
    is the partner's payout ("4.00"), never the upstream one. The source key never
    leaves the system: a custom value equal to it is dropped.
    """
    standard = {
        "click_id": click_id,
        "status": status,
        "payout": payout,
        "currency": currency,
        "offer_id": offer_id,
        "transaction_id": transaction_id,
        "conversion_id": conversion_id,
        "user_id": user_id,
    }
    payload = {name: value for name, value in standard.items() if value}
    if subs:
        for name in SUB_IDS:
            value = subs.get(name)
            if value:
                payload[name] = value
    payload["timestamp"] = timestamp
    if extras:
        for name in EXTRA_FIELDS:
            value = extras.get(name)
            if value is not None and value != "":
                payload[name] = value
    if custom:
        for name, value in custom.items():
            if name in payload or value is None or value == "":
                continue
            if source_key and value == source_key:
                continue
            payload[name] = value
    return payload


@dataclass(frozen=True)
class PartnerDirectory:
    """The active partners, and those with scope ``all``, as of one config version."""

    active: dict[str, Partner] = field(default_factory=dict)
    broadcast: tuple[str, ...] = ()
    _memo: dict = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def build(cls, partners: Iterable[Partner]) -> PartnerDirectory:
        active = {p.partner_id: p for p in partners if p.active}
        broadcast = tuple(sorted(pid for pid, p in active.items() if p.scope == "all"))
        return cls(active, broadcast)

    def recipients(self, click_partner_id: str = "", *, test: bool = False) -> tuple[str, ...]:
        """Partners that get one delivery of an event, no partner twice.

        Every active partner with scope ``all``, plus the click's partner when it is
        active and its scope is ``own`` (a ``test`` event reaches it whatever its scope).
        """
        key = (click_partner_id, test)
        found = self._memo.get(key)
        if found is None:
            partner = self.active.get(click_partner_id) if click_partner_id else None
            found = self.broadcast
            wanted = partner is not None and (test or partner.scope == "own")
            if wanted and partner.partner_id not in found:
                found = (*found, partner.partner_id)
            self._memo[key] = found
        return found
