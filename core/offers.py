"""Offers: payout model (revshare or fixed), goals, hold period, attribution window."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal

from core.money import AmountError, format_cents, parse_amount, parse_percent, to_cents
from core.records import Record
from core.validation import ValidationError, check_currency, check_http_url, check_id


def check_payout_model(field_name: str, revshare: object, fixed: object) -> dict[str, str]:
    """``{"revshare": "50"}`` or ``{"fixed": "1.00"}``: exactly one, validated."""
    if (revshare is None) == (fixed is None):
        raise ValidationError(
            field_name, "give exactly one of revshare (percent) or fixed (amount)"
        )
    if revshare is not None:
        try:
            return {"revshare": str(parse_percent(revshare))}
        except AmountError as exc:
            raise ValidationError(
                "revshare" if field_name == "payout" else f"{field_name}.revshare", str(exc)
            ) from None
    try:
        return {"fixed": format_cents(to_cents(parse_amount(fixed)))}
    except AmountError as exc:
        raise ValidationError(
            "fixed" if field_name == "payout" else f"{field_name}.fixed", str(exc)
        ) from None


def check_goal_name(goal: object) -> str:
    """A goal's name as offers keep it: an id, lower case."""
    return check_id("goal", goal.strip() if isinstance(goal, str) else goal).lower()


def check_goals(goals: object) -> dict[str, dict[str, str]]:
    """``{"install": {"fixed": "1.00"}, "purchase": {"revshare": "50"}}`` (SPEC §7)."""
    if goals is None or goals == {}:
        return {}
    if not isinstance(goals, dict):
        raise ValidationError("goals", 'must be an object such as {"install": {"fixed": "1.00"}}')
    out: dict[str, dict[str, str]] = {}
    for goal, model in goals.items():
        name = check_goal_name(goal)
        if name in out:
            raise ValidationError("goals", f"goal {name!r} given twice")
        if not isinstance(model, dict) or set(model) - {"revshare", "fixed"}:
            raise ValidationError(
                f"goals.{name}", 'must be {"revshare": PERCENT} or {"fixed": AMOUNT}'
            )
        out[name] = check_payout_model(f"goals.{name}", model.get("revshare"), model.get("fixed"))
    return out


_DURATION = re.compile(r"^(\d{1,9})\s*([dhms]?)$")
_UNIT_S = {"d": 86400, "h": 3600, "m": 60, "s": 1, "": 1}
MAX_HOLD_S = 366 * 86400


def parse_hold(value: object, field_name: str = "hold_s") -> int:
    """A hold period in seconds: a whole number of seconds, or ``7d``, ``12h``, ``30m``, ``45s``.

    >>> parse_hold("7d"), parse_hold(90), parse_hold("")
    (604800, 90, 0)
    """
    if value is None or value == "":
        return 0
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValidationError(field_name, "must be a whole number of seconds or like 7d, 12h")
    match = _DURATION.match(str(value).strip().lower())
    if not match:
        raise ValidationError(
            field_name, f"{value!r} is not a duration such as 7d, 12h, 30m or 45s"
        )
    seconds = int(match.group(1)) * _UNIT_S[match.group(2)]
    if seconds > MAX_HOLD_S:
        raise ValidationError(field_name, "must be at most 366 days")
    return seconds


@dataclass
class Offer(Record):
    offer_id: str
    name: str = ""
    payout_model: str = "revshare"  # revshare | fixed
    revshare_percent: Decimal | None = None
    fixed_cents: int | None = None
    currency: str = "USD"
    url: str = ""
    window_days: int = 30
    active: bool = True
    created: int = 0
    #: Per-goal payout models, ``{goal: {"revshare": "50"} | {"fixed": "1.00"}}`` (goal
    #: names lower case: a postback's ``goal`` is looked up case-insensitively).
    goals: dict[str, dict[str, str]] = field(default_factory=dict)
    #: Seconds an approval's points are held before they are credited; 0 = none.
    hold_s: int = 0

    @classmethod
    def build(
        cls,
        offer_id: str,
        *,
        revshare: object = None,
        fixed: object = None,
        currency: str = "USD",
        url: str = "",
        window_days: object = 30,
        name: str = "",
        goals: object = None,
        hold_s: object = 0,
        hold: object = None,
    ) -> Offer:
        check_id("offer_id", offer_id)
        model = check_payout_model("payout", revshare, fixed)
        offer = cls(offer_id=offer_id, name=name or offer_id, currency=check_currency(currency))
        offer.payout_model = next(iter(model))
        if "revshare" in model:
            offer.revshare_percent = Decimal(model["revshare"])
        else:
            offer.fixed_cents = to_cents(Decimal(model["fixed"]))
        offer.goals = check_goals(goals)
        offer.hold_s = parse_hold(hold, "hold") if hold is not None else parse_hold(hold_s)
        if url:
            offer.url = check_http_url("url", url)
        try:
            offer.window_days = int(str(window_days))
        except ValueError:
            raise ValidationError("window_days", "must be a whole number of days") from None
        if not 1 <= offer.window_days <= 3650:
            raise ValidationError("window_days", "must be from 1 to 3650")
        return offer

    def with_goal(self, goal: str, *, revshare: object = None, fixed: object = None) -> Offer:
        """This offer with ``goal``'s own payout model set (replacing any it had)."""
        name = check_goal_name(goal)
        goals = dict(self.goals)
        goals[name] = check_payout_model(f"goals.{name}", revshare, fixed)
        self.goals = goals
        return self

    def public(self) -> dict:
        return {
            "offer_id": self.offer_id,
            "name": self.name,
            "payout_model": self.payout_model,
            "revshare": None if self.revshare_percent is None else str(self.revshare_percent),
            "fixed": None if self.fixed_cents is None else format_cents(self.fixed_cents),
            "currency": self.currency,
            "url": self.url,
            "window_days": self.window_days,
            "goals": self.goals,
            "hold_s": self.hold_s,
            "active": self.active,
            "created": self.created,
        }
