"""Clicks: what the network recorded when it sent a user to an offer."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

SUB_IDS = ("sub1", "sub2", "sub3", "sub4", "sub5")


@dataclass
class Click:
    click_id: str
    offer_id: str
    partner_id: str
    user_id: str
    ip: str = ""
    created: int = 0
    subs: dict[str, str] = field(default_factory=dict)

    def to_redis(self) -> dict[str, str]:
        out = {
            "click_id": self.click_id,
            "offer_id": self.offer_id,
            "partner_id": self.partner_id,
            "user_id": self.user_id,
            "ip": self.ip,
            "created": str(self.created),
        }
        out.update({k: v for k, v in self.subs.items() if v})
        return out

    @classmethod
    def from_redis(cls, data: dict[str, str]) -> Click:
        return cls(
            click_id=data["click_id"],
            offer_id=data.get("offer_id", ""),
            partner_id=data.get("partner_id", ""),
            user_id=data.get("user_id", ""),
            ip=data.get("ip", ""),
            created=int(data.get("created") or 0),
            subs={k: data[k] for k in SUB_IDS if data.get(k)},
        )

    def public(self) -> dict:
        out = {k: v for k, v in asdict(self).items() if k != "subs"}
        out.update(self.subs)
        return out
