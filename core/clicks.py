"""Clicks: what the network recorded when it sent a user to an offer."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from core.records import Record, spread

SUB_IDS = ("sub1", "sub2", "sub3", "sub4", "sub5")


@dataclass
class Click(Record):
    click_id: str
    offer_id: str
    partner_id: str
    user_id: str
    ip: str = ""
    created: int = 0
    #: Stored as hash fields of their own, ``sub1``..``sub5``.
    subs: dict[str, str] = field(default_factory=dict, metadata=spread(SUB_IDS))

    def public(self) -> dict:
        out = {k: v for k, v in asdict(self).items() if k != "subs"}
        out.update(self.subs)
        return out
