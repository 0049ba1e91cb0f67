"""Crash safety: matchers killed with SIGKILL at arbitrary instants never lose a postback
and never credit one twice (SPEC §4: all or nothing, redelivery is a no-op)."""

from __future__ import annotations

import signal

import orjson
import pytest

from core.clicks import Click
from core.offers import Offer
from core.payouts import PayoutRule
from processors.matcher.step import GROUP
from tests.test_matcher import SOURCE, add_partner
from tests.test_matcher_worker import Worker, wait_for

POSTBACKS = 20_000
USERS = 500
KILLS = 6


def payout_cents(i: int) -> int:
    return 1 + (i * 7919) % 10_000  # 0.01 .. 100.00, varied


def queue_approval(pipe, keys, stream: str, i: int, click: Click) -> int:
    """Queue click ``i`` and its approval (TXN-i) as the edge writes it; its payout cents."""
    pipe.hset(keys.click(click.click_id), mapping=click.to_redis())
    cents = payout_cents(i)
    params = {
        "click_id": click.click_id,
        "status": "approved",
        "payout": f"{cents // 100}.{cents % 100:02d}",
        "transaction_id": f"TXN-{i}",
        "custom": {},
    }
    fields = {"source": SOURCE, "method": "GET", "ip": "1.2.3.4", "params": orjson.dumps(params)}
    pipe.xadd(stream, fields)
    return cents


@pytest.mark.slow
def test_sigkilled_matchers_credit_every_postback_exactly_once(
    store, redis_client, settings, keys, tmp_path
):
    store.add_offer(Offer.build("REV", revshare="72.5"))
    add_partner(store, "PUB")
    rule = PayoutRule.revshare(store.get_offer("REV").revshare_percent)
    created = store.get_offer("REV").created
    stream = keys.input_stream(0)
    expected: dict[str, int] = {}
    for start in range(0, POSTBACKS, 2000):
        pipe = redis_client.pipeline(transaction=False)
        for i in range(start, start + 2000):
            click = Click(f"CLK-{i}", "REV", "PUB", f"user-{i % USERS}", created=created)
            cents = queue_approval(pipe, keys, stream, i, click)
            expected[f"TXN-{i}"] = rule.partner_cents(cents)
        pipe.execute()

    env = {"POSTBACK_CLAIM_IDLE_MS": "500", "POSTBACK_MATCHER_BATCH": "200"}
    workers = [Worker(settings, tmp_path / f"m{i}.log", **env) for i in range(2)]
    try:
        done = lambda: redis_client.xlen(keys.received_log(0))  # noqa: E731
        for kill in range(KILLS):
            target = (kill + 1) * POSTBACKS // (KILLS + 2)
            wait_for(lambda t=target: done() >= t, timeout=30, what=f"{target} processed")
            victim = workers[kill % 2]
            victim.stop(signal.SIGKILL, timeout=10)
            workers[kill % 2] = Worker(settings, tmp_path / f"m{kill}-again.log", **env)

        def drained() -> bool:
            return (
                redis_client.xlen(stream) == 0
                and redis_client.xpending(stream, GROUP)["pending"] == 0
            )

        wait_for(drained, timeout=40, what="every postback to be processed")
        for worker in workers:
            assert worker.stop() == 0, worker.log()
    finally:
        for worker in workers:
            worker.kill()

    # the ledger: the sum of all balances equals the expected total, to the cent
    balances = [int(v) for v in redis_client.hvals(keys.points(0))]
    assert len(balances) == USERS
    assert sum(balances) == sum(expected.values())
    # each conversion credited exactly its partner payout, once
    conversion_keys = redis_client.zrange(keys.conversion_index(0), 0, -1)
    assert len(conversion_keys) == POSTBACKS
    pipe = redis_client.pipeline(transaction=False)
    for conversion_id in conversion_keys:
        pipe.hmget(
            keys.conversion(0, conversion_id),
            "transaction_id",
            "credited_cents",
            "partner_payout_cents",
            "history",
        )
    seen = set()
    for transaction_id, credited, partner_payout, history in pipe.execute():
        assert int(credited) == int(partner_payout) == expected[transaction_id]
        assert len(orjson.loads(history)) == 1
        seen.add(transaction_id)
    assert seen == set(expected)
    # the received log: exactly one matched entry per postback
    outcomes: dict[str, str] = {}
    for _, entry in redis_client.xrange(keys.received_log(0)):
        assert entry["log_id"] not in outcomes, f"{entry['log_id']} logged twice"
        outcomes[entry["log_id"]] = entry["outcome"]
    assert len(outcomes) == POSTBACKS
    assert set(outcomes.values()) == {"matched"}
    # and one forward job per conversion, no dead letters
    assert redis_client.xlen(keys.forward_stream(0)) == POSTBACKS
    assert redis_client.xlen(keys.dead_letters(0)) == 0
