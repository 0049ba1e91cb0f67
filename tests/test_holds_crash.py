"""Crash safety of holds: matchers SIGKILLed while holds come due credit every held
reward exactly once — none lost, none twice (SPEC §4 "Hold")."""

from __future__ import annotations

import signal

import pytest

from core.clicks import Click
from core.offers import Offer
from core.payouts import PayoutRule
from processors.matcher.step import GROUP
from tests.test_matcher import SOURCE, add_partner
from tests.test_matcher_crash import queue_approval
from tests.test_matcher_worker import Worker, wait_for

POSTBACKS = 3000
USERS = 150
#: Offers H1..H6 hold for 1..6 s, so holds come due over six seconds while matchers die.
HOLDS_S = (1, 2, 3, 4, 5, 6)
MATCHERS = 3
KILLS = 5


@pytest.mark.slow
def test_sigkilled_matchers_credit_every_held_reward_exactly_once(
    store, redis_client, settings, keys, tmp_path
):
    for hold in HOLDS_S:
        store.add_offer(Offer.build(f"H{hold}", revshare="72.5", hold=f"{hold}s"))
    add_partner(store, "PUB")
    rule = PayoutRule.revshare(store.get_offer("H1").revshare_percent)
    created = store.get_offer("H1").created
    n = keys.partition_of(SOURCE)
    stream = keys.input_stream(n)
    expected_user: dict[str, int] = {}
    expected: dict[str, int] = {}
    pipe = redis_client.pipeline(transaction=False)
    for i in range(POSTBACKS):
        offer_id = f"H{HOLDS_S[i % len(HOLDS_S)]}"
        user = f"user-{i % USERS}"
        click = Click(f"CLK-{i}", offer_id, "PUB", user, created=created)
        cents = queue_approval(pipe, keys, stream, i, click)
        expected[f"TXN-{i}"] = rule.partner_cents(cents)
        expected_user[user] = expected_user.get(user, 0) + rule.partner_cents(cents)
    pipe.execute()

    env = {"POSTBACK_CLAIM_IDLE_MS": "500", "POSTBACK_MATCHER_BATCH": "200"}
    workers = [Worker(settings, tmp_path / f"m{i}.log", **env) for i in range(MATCHERS)]
    due = keys.holds_due(n)
    try:
        wait_for(
            lambda: redis_client.xlen(keys.received_log(n)) >= POSTBACKS,
            timeout=60,
            what="every postback to be matched",
        )
        # Kill one matcher each time another sixth of the holds has been credited.
        for kill in range(KILLS):
            target = POSTBACKS - (kill + 1) * POSTBACKS // (KILLS + 1)
            wait_for(
                lambda t=target: redis_client.zcard(due) <= t, timeout=30, what=f"{target} due"
            )
            victim = kill % MATCHERS
            workers[victim].stop(signal.SIGKILL, timeout=10)
            workers[victim] = Worker(settings, tmp_path / f"m{kill}-again.log", **env)
        wait_for(lambda: redis_client.zcard(due) == 0, timeout=30, what="every hold credited")
        wait_for(
            lambda: redis_client.xpending(stream, GROUP)["pending"] == 0,
            timeout=30,
            what="no pending entries",
        )
        for worker in workers:
            # a matcher started just now may not handle SIGTERM yet: wait until it serves
            wait_for(lambda w=worker: "serving" in w.log(), what="the matcher to start")
            assert worker.stop() == 0, worker.log()
    finally:
        for worker in workers:
            worker.kill()

    # every balance is its held rewards, to the cent; nothing is held any more
    points = {u: int(v) for u, v in redis_client.hgetall(keys.points(n)).items()}
    assert points == expected_user
    assert {int(v) for v in redis_client.hvals(keys.held(n))} == {0}
    # each conversion credited exactly its partner payout, once
    pipe = redis_client.pipeline(transaction=False)
    ids = redis_client.zrange(keys.conversion_index(n), 0, -1)
    assert len(ids) == POSTBACKS
    for conversion_id in ids:
        pipe.hmget(
            keys.conversion(n, conversion_id),
            "transaction_id",
            "credited_cents",
            "held_cents",
            "hold_until",
            "hold_released",
        )
    for transaction_id, credited, held, hold_until, released in pipe.execute():
        assert int(credited) == expected[transaction_id]
        assert held == "0"
        assert int(released) >= int(hold_until)
    assert redis_client.xlen(keys.dead_letters(n)) == 0
