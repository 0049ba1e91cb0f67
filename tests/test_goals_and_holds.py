"""Offer goals and hold periods, pure: which payout model a postback's goal gets, how a
hold period is written, and the refusals of bad ones (SPEC §4, §8)."""

from __future__ import annotations

import pytest

from core.offers import Offer, parse_hold
from core.payouts import OfferPayouts, partner_payout_cents
from core.validation import ValidationError

GOALS = {"install": {"fixed": "1.00"}, "Purchase": {"revshare": "50"}}


@pytest.mark.parametrize(
    ("goal", "upstream", "expected"),
    [
        ("install", 999_00, 100),  # fixed 1.00 whatever the upstream pays
        ("purchase", 10_00, 5_00),  # 50 % of 10.00
        (" PURCHASE ", 10_01, 5_01),  # trimmed, case-insensitive; 5.005 → 5.01 half-up
        ("", 10_00, 8_00),  # no goal: the offer's own revshare 80
        ("signup", 10_00, 8_00),  # a goal without a model of its own: the offer's
    ],
)
def test_a_goal_with_its_own_model_overrides_the_offers(goal, upstream, expected):
    offer = Offer.build("O", revshare="80", goals=GOALS)
    assert partner_payout_cents(offer, upstream, goal) == expected
    assert OfferPayouts.for_offer(offer).rule(goal).partner_cents(upstream) == expected


def test_an_offer_without_goals_pays_its_own_model_for_every_goal():
    offer = Offer.build("O", fixed="2.00")
    assert partner_payout_cents(offer, 50_00, "install") == 200


def test_goals_are_shown_and_stored_as_spec_section_7_writes_them():
    offer = Offer.build("O", revshare="80", goals=GOALS)
    assert offer.public()["goals"] == {"install": {"fixed": "1.00"}, "purchase": {"revshare": "50"}}
    assert Offer.from_redis(offer.to_redis()).goals == offer.goals


def test_setting_one_goal_keeps_the_others():
    offer = Offer.build("O", revshare="80", goals=GOALS).with_goal("install", revshare="10")
    assert offer.goals == {"install": {"revshare": "10"}, "purchase": {"revshare": "50"}}


@pytest.mark.parametrize(
    ("goals", "message"),
    [
        ({"install": {"fixed": "1", "revshare": "5"}}, "goals.install: give exactly one"),
        ({"install": {}}, "goals.install: give exactly one"),
        ({"install": {"revshare": "150"}}, "goals.install.revshare:"),
        ({"install": {"fixed": "-1"}}, "goals.install.fixed:"),
        ({"install": {"percent": "5"}}, "goals.install: must be"),
        ({"bad goal": {"fixed": "1"}}, "goal: 1-128 characters"),
        ({"a": {"fixed": "1"}, "A": {"fixed": "2"}}, "goals: goal 'a' given twice"),
        (["install"], "goals: must be an object"),
    ],
)
def test_bad_goals_are_refused_naming_the_goal(goals, message):
    with pytest.raises(ValidationError) as caught:
        Offer.build("O", revshare="80", goals=goals)
    assert str(caught.value).startswith(message)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("7d", 604_800),
        ("12h", 43_200),
        ("30m", 1_800),
        ("45s", 45),
        ("90", 90),
        (604800, 604_800),
        ("", 0),
        (0, 0),
    ],
)
def test_hold_periods(text, seconds):
    assert parse_hold(text) == seconds
    assert Offer.build("O", fixed="1", hold=text).hold_s == seconds


@pytest.mark.parametrize("text", ["7w", "-1d", "1.5h", "d", True, 1.5, "400d"])
def test_bad_hold_periods_are_refused_naming_the_field(text):
    with pytest.raises(ValidationError, match="^hold: "):
        Offer.build("O", fixed="1", hold=text)
    with pytest.raises(ValidationError, match="^hold_s: "):
        Offer.build("O", fixed="1", hold_s=text)


def test_hold_is_stored_and_shown_in_seconds():
    offer = Offer.build("O", fixed="1", hold="7d")
    assert offer.public()["hold_s"] == 604_800
    assert Offer.from_redis(offer.to_redis()).hold_s == 604_800
    assert Offer.from_redis({**offer.to_redis(), "hold_s": ""}).hold_s == 0
