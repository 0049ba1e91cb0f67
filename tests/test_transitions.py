"""The status table (SPEC §4): which moves credit, debit, forward, or are kept in history."""

from __future__ import annotations

import pytest

from core.transitions import (
    CREDIT,
    CURRENT_STATUSES,
    DEBIT,
    FLAG_BITS,
    SPECS,
    decide,
    effects,
    refuse_new,
)


@pytest.mark.parametrize(
    ("incoming", "points"), [("approved", CREDIT), ("pending", ""), ("rejected", "")]
)
def test_first_postback_creates_the_conversion_with_its_status(incoming, points):
    effect = decide("", incoming)
    assert effect.create and effect.forward and effect.outcome == "matched"
    assert effect.points == points


def test_pending_to_approved_credits_and_forwards():
    effect = decide("pending", "approved")
    assert (effect.set_status, effect.points, effect.forward) == (True, CREDIT, True)


def test_pending_to_rejected_has_nothing_to_credit():
    effect = decide("pending", "rejected")
    assert (effect.set_status, effect.points, effect.forward) == (True, "", True)


def test_approved_to_rejected_is_a_reversal():
    effect = decide("approved", "rejected")
    assert (effect.set_status, effect.points, effect.forward) == (True, DEBIT, True)
    assert effect.history == "reversed"


@pytest.mark.parametrize("status", ["pending", "approved", "rejected"])
def test_same_status_again_is_a_duplicate_without_effect(status):
    effect = decide(status, status)
    assert effect.outcome == "duplicate"
    assert not (effect.create or effect.set_status or effect.keep_history or effect.forward)
    assert effect.points == ""


@pytest.mark.parametrize(
    ("current", "incoming"),
    [("rejected", "approved"), ("approved", "pending"), ("rejected", "pending")],
)
def test_other_moves_are_kept_in_history_only(current, incoming):
    effect = decide(current, incoming)
    assert effect.outcome == "matched" and effect.keep_history
    assert not (effect.set_status or effect.forward) and effect.points == ""
    assert effect.reason == f"status move {current}→{incoming} kept in history only"


def test_no_move_credits_a_conversion_twice():
    # Only creation and pending→approved credit; approved is never reached again
    # from rejected, so a conversion's credit can be applied at most once in a row.
    credits = {
        (current, incoming)
        for current in CURRENT_STATUSES
        for incoming in ("pending", "approved", "rejected")
        if decide(current, incoming).points == CREDIT
    }
    assert credits == {("", "approved"), ("pending", "approved")}


def test_test_status_and_unknown_statuses_are_refused():
    with pytest.raises(ValueError):
        decide("", "test")
    with pytest.raises(ValueError):
        decide("paid", "approved")


def test_refusing_new_keeps_updates_of_existing_conversions():
    table = effects("approved", new=refuse_new("outside the window"))
    assert table[0].outcome == "unmatched" and table[0].reason == "outside the window"
    assert not table[0].create and table[0].points == ""
    assert table[1] == decide("pending", "approved")


def test_specs_encode_actions_as_one_flag_character():
    spec = SPECS["approved"][1]  # pending → approved
    flags = ord(spec[0]) - 64
    assert flags == FLAG_BITS["set_status"] + FLAG_BITS["credit"] + FLAG_BITS["forward"]
    assert spec[1:] == "matched|credited|"
    assert SPECS["rejected"][2][1:] == "matched|reversed|"
    assert ord(SPECS["approved"][2][0]) == 64  # duplicate: no action at all
