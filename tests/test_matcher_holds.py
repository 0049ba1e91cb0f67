"""Holds and goals on a real Redis: held points, crediting when due (once), reversals
during and after a hold, and per-goal payouts (SPEC §4)."""

from __future__ import annotations

import time

import pytest

from core.money import format_cents
from core.offers import Offer
from processors.matcher.holds import release_due
from processors.matcher.step import Matcher
from tests.test_matcher import SOURCE, add_click, add_partner, conversions, drain, jobs, post

HOLD_S = 3600


@pytest.fixture
def matcher(redis_client, settings) -> Matcher:
    return Matcher(redis_client, settings, consumer="test-matcher")


@pytest.fixture
def held(store):
    """HELD: 80 % revshare, points held for an hour. GOALS: install fixed 1.00, purchase
    revshare 50, others the offer's 80 %."""
    store.add_offer(Offer.build("HELD", revshare=80, hold="1h"))
    store.add_offer(
        Offer.build(
            "GOALS",
            revshare=80,
            goals={"install": {"fixed": "1.00"}, "purchase": {"revshare": "50"}},
        )
    )
    add_partner(store, "PUB")
    return store


def balances(store, user_id: str = "u1") -> tuple[str, str]:
    user = store.user(user_id)
    return user["points"], user["held"]


def release(redis_client, keys, worker: Matcher, after_s: float) -> int:
    """Credit what is due ``after_s`` seconds from now (a clock moved forward)."""
    now = int((time.time() + after_s) * 1000)
    return release_due(redis_client, worker.scripts, keys, keys.all_partitions(), now_ms=now)


def the_conversion(redis_client, keys, store) -> dict:
    found = [c for n in keys.all_partitions() for c in conversions(redis_client, keys, store, n)]
    assert len(found) == 1
    return found[0]


def test_an_approval_on_a_held_offer_holds_its_points_until_the_period_has_passed(
    held, matcher, redis_client, keys
):
    add_click(held, "CLK-1", "HELD")
    post(redis_client, keys, click_id="CLK-1", payout="5.00", transaction_id="T1")
    drain(matcher)
    assert balances(held) == ("0.00", "4.00")
    conversion = the_conversion(redis_client, keys, held)
    assert conversion["status"] == "approved"
    assert conversion["held"] == "4.00" and conversion["credited"] == "0.00"
    assert conversion["hold_until"] == int(conversion["log_id"].split("-")[0]) + HOLD_S * 1000
    # forwarded at once, as approved, with the partner's payout
    assert [
        j["payload"]["status"] for j in jobs(redis_client, keys, keys.partition_of(SOURCE))
    ] == ["approved"]

    assert release(redis_client, keys, matcher, after_s=HOLD_S - 60) == 0
    assert balances(held) == ("0.00", "4.00")
    assert release(redis_client, keys, matcher, after_s=HOLD_S + 1) == 1
    assert balances(held) == ("4.00", "0.00")
    conversion = the_conversion(redis_client, keys, held)
    assert conversion["credited"] == "4.00" and conversion["held"] == "0.00"
    assert [s["effect"] for s in conversion["history"]] == ["created", "hold ended"]
    # once: again, later, by another matcher: nothing more
    assert release(redis_client, keys, matcher, after_s=HOLD_S * 10) == 0
    assert balances(held) == ("4.00", "0.00")


def test_a_redelivered_approval_holds_nothing_more(held, matcher, redis_client, keys):
    add_click(held, "CLK-1", "HELD")
    post(redis_client, keys, click_id="CLK-1", payout="5.00", transaction_id="T1")
    post(redis_client, keys, click_id="CLK-1", payout="5.00", transaction_id="T1")
    drain(matcher)
    assert balances(held) == ("0.00", "4.00")
    assert release(redis_client, keys, matcher, after_s=HOLD_S + 1) == 1
    assert balances(held) == ("4.00", "0.00")


def test_pending_then_approved_on_a_held_offer_holds_from_the_approval(
    held, matcher, redis_client, keys
):
    add_click(held, "CLK-1", "HELD")
    post(redis_client, keys, click_id="CLK-1", status="pending", payout="5.00", transaction_id="T1")
    drain(matcher)
    assert balances(held) == ("0.00", "0.00")
    approval = post(redis_client, keys, click_id="CLK-1", payout="10.00", transaction_id="T1")
    drain(matcher)
    assert balances(held) == ("0.00", "8.00")
    conversion = the_conversion(redis_client, keys, held)
    assert conversion["hold_until"] == int(approval.split("-")[0]) + HOLD_S * 1000
    assert release(redis_client, keys, matcher, after_s=HOLD_S + 1) == 1
    assert balances(held) == ("8.00", "0.00")
    history = the_conversion(redis_client, keys, held)["history"]
    assert [s["effect"] for s in history] == ["created", "held", "hold ended"]


def test_a_reversal_during_the_hold_releases_the_points_and_debits_nothing(
    held, matcher, redis_client, keys
):
    add_click(held, "CLK-1", "HELD")
    add_click(held, "CLK-2", "HELD")
    post(redis_client, keys, click_id="CLK-1", payout="5.00", transaction_id="T1")
    post(redis_client, keys, click_id="CLK-2", payout="1.00", transaction_id="T2")
    drain(matcher)
    assert balances(held) == ("0.00", "4.80")
    post(redis_client, keys, click_id="CLK-1", status="rejected", transaction_id="T1")
    drain(matcher)
    assert balances(held) == ("0.00", "0.80")
    [first] = [
        c
        for c in conversions(redis_client, keys, held, keys.partition_of(SOURCE))
        if c["transaction_id"] == "T1"
    ]
    assert first["status"] == "rejected" and first["held"] == "0.00"
    assert [s["effect"] for s in first["history"]] == ["created", "released"]
    # when the period has passed, only the one still held is credited
    assert release(redis_client, keys, matcher, after_s=HOLD_S + 1) == 1
    assert balances(held) == ("0.80", "0.00")


def test_a_reversal_after_the_hold_debits_as_without_one(held, matcher, redis_client, keys):
    add_click(held, "CLK-1", "HELD")
    post(redis_client, keys, click_id="CLK-1", payout="5.00", transaction_id="T1")
    drain(matcher)
    release(redis_client, keys, matcher, after_s=HOLD_S + 1)
    assert balances(held) == ("4.00", "0.00")
    post(redis_client, keys, click_id="CLK-1", status="rejected", transaction_id="T1")
    drain(matcher)
    assert balances(held) == ("0.00", "0.00")
    assert the_conversion(redis_client, keys, held)["status"] == "rejected"


def test_an_offer_without_hold_credits_at_once(held, matcher, redis_client, keys):
    add_click(held, "CLK-1", "GOALS")
    post(redis_client, keys, click_id="CLK-1", payout="5.00")
    drain(matcher)
    assert balances(held) == ("4.00", "0.00")
    assert release(redis_client, keys, matcher, after_s=10**6) == 0


def test_a_running_matcher_credits_due_holds_with_no_postback(held, matcher, redis_client, keys):
    held.update_offer("HELD", Offer.build("HELD", revshare=80, hold="1s"))
    add_click(held, "CLK-1", "HELD")
    post(redis_client, keys, click_id="CLK-1", payout="5.00")
    drain(matcher)
    assert balances(held) == ("0.00", "4.00")
    deadline = time.monotonic() + 10
    while balances(held) != ("4.00", "0.00"):
        assert time.monotonic() < deadline, "the hold was never credited"
        matcher.release_holds(keys.all_partitions())
        time.sleep(0.05)
    assert matcher.release_holds(keys.all_partitions()) == 0


@pytest.mark.parametrize(
    ("goal", "payout", "credited"),
    [
        ("install", "99.00", "1.00"),
        ("purchase", "10.00", "5.00"),
        ("Purchase", "10.00", "5.00"),
        ("", "10.00", "8.00"),
        ("signup", "10.00", "8.00"),
    ],
)
def test_each_goal_pays_its_own_model(held, matcher, redis_client, keys, goal, payout, credited):
    add_click(held, "CLK-1", "GOALS")
    post(redis_client, keys, click_id="CLK-1", payout=payout, goal=goal)
    drain(matcher)
    assert balances(held) == (credited, "0.00")
    conversion = the_conversion(redis_client, keys, held)
    assert conversion["partner_payout"] == credited
    [job] = jobs(redis_client, keys, keys.partition_of(SOURCE))
    assert job["payload"]["payout"] == credited


def test_goals_of_one_click_are_separate_conversions_with_their_own_payouts(
    held, matcher, redis_client, keys
):
    add_click(held, "CLK-1", "GOALS")
    post(redis_client, keys, click_id="CLK-1", payout="3.00", goal="install")
    post(redis_client, keys, click_id="CLK-1", payout="20.00", goal="purchase")
    drain(matcher)
    assert balances(held) == ("11.00", "0.00")  # 1.00 fixed + 50 % of 20.00


def test_holds_are_partitioned_and_a_balance_sums_them(redis_client, settings):
    """Each partition has its own held ledger and due set (hash tag {pN}); a user's
    points and held points are summed over every partition."""
    from storage.keys import Keys
    from storage.redis_client import ensure_groups
    from storage.repositories import Store

    settings = settings.with_overrides(partitions=4)
    keys = Keys(settings.namespace, 4)
    ensure_groups(redis_client, keys)
    store = Store(redis_client, keys)
    store.add_offer(Offer.build("HELD", revshare=80, hold="1h"))
    add_partner(store, "PUB")
    sources = {}
    for i in range(100):
        source = f"source-key-{i:04d}-abcdefgh"
        sources.setdefault(keys.partition_of(source), source)
    assert len(sources) >= 2
    for n, source in sources.items():
        add_click(store, f"CLK-{n}", "HELD")
        post(redis_client, keys, source=source, click_id=f"CLK-{n}", payout="1.00")
    worker = Matcher(redis_client, settings, consumer="m4")
    drain(worker)
    for n in sources:
        assert redis_client.hget(keys.held(n), "u1") == "80"
        assert redis_client.zcard(keys.holds_due(n)) == 1
        assert keys.holds_due(n).startswith(f"{settings.namespace}:{{p{n}}}:")
    total = format_cents(80 * len(sources))
    assert balances(store) == ("0.00", total)
    assert release(redis_client, keys, worker, after_s=HOLD_S + 1) == len(sources)
    assert balances(store) == (total, "0.00")


def test_a_broken_due_set_is_logged_and_does_not_stop_the_others(
    held, matcher, redis_client, keys, caplog
):
    add_click(held, "CLK-1", "HELD")
    post(redis_client, keys, click_id="CLK-1", payout="5.00", transaction_id="T1")
    drain(matcher)
    conversion = the_conversion(redis_client, keys, held)
    n = keys.partition_of(SOURCE)
    redis_client.hset(keys.conversion(n, conversion["conversion_id"]), "held_cents", "x")
    assert release(redis_client, keys, matcher, after_s=HOLD_S + 1) == 0
    assert "malformed amount" in caplog.text
    assert balances(held) == ("0.00", "4.00")  # nothing half-done
    redis_client.hset(keys.conversion(n, conversion["conversion_id"]), "held_cents", "400")
    assert release(redis_client, keys, matcher, after_s=HOLD_S + 1) == 1
    assert balances(held) == ("4.00", "0.00")
