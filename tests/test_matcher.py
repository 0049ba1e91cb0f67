"""The matcher on a real Redis: matching, payouts, points, transitions, forwards, logs.

Postbacks are written to the input stream the way the edge writes them
(``storage.formats``), with :func:`post`; the matcher is driven one batch at a time.
The helpers here are shared by the other ``test_matcher_*`` files.
"""

from __future__ import annotations

import orjson
import pytest

from core.clicks import Click
from core.conversions import conversion_id
from core.offers import Offer
from core.partners import Partner
from processors.matcher.step import GROUP, Matcher
from storage.keys import Keys
from storage.repositories import Store, now_ms

SOURCE = "srcKEY-abcdefghijklmnop"
DAY_MS = 86_400_000
KNOWN = ("click_id", "status", "payout", "currency", "transaction_id", "offer_id")
EXTRA = ("survey_id", "goal", "reason")


# -- helpers (imported by the other matcher tests) -------------------------------------
def post(client, keys: Keys, *, source: str = SOURCE, method: str = "GET", **given) -> str:
    """XADD a postback as the edge would (validated params JSON); returns its log_id."""
    params: dict = {"status": "approved"}
    custom = given.pop("custom", {})
    for name, value in given.items():
        if name in KNOWN or name in EXTRA:
            params[name] = value
        else:
            custom[name] = value
    params["custom"] = custom
    fields = {"source": source, "method": method, "ip": "198.51.100.7"}
    fields["params"] = orjson.dumps(params).decode()
    return client.xadd(keys.input_stream(keys.partition_of(source)), fields)


def add_partner(store: Store, partner_id: str, scope: str = "own") -> Partner:
    partner = Partner.build(
        partner_id,
        url=f"http://127.0.0.1:9/{partner_id}?cid={{click_id}}",
        scope=scope,
        name=f"Partner {partner_id}",
        email=f"{partner_id.lower()}@example.com",
        allow_private=True,
    )
    return store.add_partner(partner)


def add_click(store: Store, click_id: str, offer_id: str = "REV80", **extra) -> Click:
    extra.setdefault("partner_id", "PUB")
    extra.setdefault("user_id", "u1")
    return store.add_click(offer_id=offer_id, click_id=click_id, **extra)


def old_click(store: Store, click_id: str, offer_id: str, age_ms: int, **extra) -> None:
    """A click recorded ``age_ms`` ago (written directly: the store stamps now)."""
    created = now_ms() - age_ms
    click = Click(click_id, offer_id, extra.get("partner_id", "PUB"), extra.get("user_id", "u1"))
    click.created = created
    store.r.hset(store.keys.click(click_id), mapping=click.to_redis())
    store.r.zadd(store.keys.offer_clicks(offer_id), {click_id: created})


def drain(matcher: Matcher) -> int:
    """Process batches of every partition until a round finds nothing; entries handled."""
    total = 0
    while True:
        step = sum(matcher.process_batch(n) for n in matcher.keys.all_partitions())
        if not step:
            return total
        total += step


def jobs(client, keys: Keys, n: int = 0) -> list[dict]:
    return [orjson.loads(f["job"]) for _, f in client.xrange(keys.forward_stream(n))]


def received(client, keys: Keys, n: int = 0) -> list[dict]:
    return [f for _, f in client.xrange(keys.received_log(n))]


def conversions(client, keys: Keys, store: Store, n: int = 0) -> list[dict]:
    return [store.get_conversion(c) for c in client.zrange(keys.conversion_index(n), 0, -1)]


def pending(client, keys: Keys, n: int = 0) -> list[dict]:
    return client.xpending_range(keys.input_stream(n), GROUP, "-", "+", 100)


def points(store: Store, user_id: str = "u1") -> str:
    return store.user(user_id)["points"]


@pytest.fixture
def world(store: Store) -> Store:
    """Offers REV80 (80% share), FIXED50 (fixed 50.00), EU (90%, EUR); partner PUB (own),
    NET (scope all), OTHER (own, sends no clicks here)."""
    store.add_offer(Offer.build("REV80", revshare=80))
    store.add_offer(Offer.build("FIXED50", fixed="50"))
    store.add_offer(Offer.build("EU", revshare=90, currency="EUR"))
    add_partner(store, "PUB")
    add_partner(store, "NET", scope="all")
    add_partner(store, "OTHER")
    return store


@pytest.fixture
def matcher(redis_client, settings) -> Matcher:
    return Matcher(redis_client, settings, consumer="test-matcher")


# -- matching ------------------------------------------------------------------------
def test_approved_postback_creates_credits_forwards_logs_and_acks(
    world, matcher, redis_client, keys
):
    add_click(world, "CLK-1", subs={"sub1": "campaign-7", "sub3": "x"})
    log_id = post(
        redis_client, keys, click_id="CLK-1", payout="5.00", transaction_id="TXN-1", age=28
    )

    assert drain(matcher) == 1

    assert points(world) == "4.00"
    [conversion] = conversions(redis_client, keys, world)
    assert conversion["status"] == "approved"
    assert (conversion["payout"], conversion["partner_payout"], conversion["credited"]) == (
        "5.00",
        "4.00",
        "4.00",
    )
    assert conversion["click_id"] == "CLK-1" and conversion["matched_by"] == "click_id"
    assert conversion["custom"] == {"age": 28}
    assert [step["effect"] for step in conversion["history"]] == ["created"]
    assert sorted(j["partner_id"] for j in jobs(redis_client, keys)) == ["NET", "PUB"]
    [entry] = received(redis_client, keys)
    assert entry["log_id"] == log_id and entry["outcome"] == "matched"
    assert entry["conversion_id"] == conversion["conversion_id"]
    assert (entry["source"], entry["method"], entry["status"]) == (SOURCE, "GET", "approved")
    assert "reason" not in entry
    stream = keys.input_stream(0)
    assert redis_client.xlen(stream) == 0
    assert redis_client.xpending(stream, GROUP)["pending"] == 0
    assert redis_client.hget(keys.stats(0), "outcome:matched") == "1"


def test_forward_payload_carries_partner_payout_subs_and_custom_fields(
    world, matcher, redis_client, keys
):
    add_click(world, "CLK-P", subs={"sub1": "s-one", "sub5": "s-five"}, user_id="user-9")
    log_id = post(
        redis_client,
        keys,
        click_id="CLK-P",
        payout="3.50",
        transaction_id="TXN-P",
        survey_id="DEMO-001",
        user_country="US",
        completion_time_seconds=180,
        empty_field="",
        echo_key=SOURCE,
    )
    drain(matcher)

    [job] = [j for j in jobs(redis_client, keys) if j["partner_id"] == "PUB"]
    payload = job["payload"]
    [conversion] = conversions(redis_client, keys, world)
    assert payload == {
        "click_id": "CLK-P",
        "status": "approved",
        "payout": "2.80",
        "currency": "USD",
        "offer_id": "REV80",
        "transaction_id": "TXN-P",
        "conversion_id": conversion["conversion_id"],
        "user_id": "user-9",
        "sub1": "s-one",
        "sub5": "s-five",
        "timestamp": int(log_id.split("-")[0]) // 1000,
        "survey_id": "DEMO-001",
        "user_country": "US",
        "completion_time_seconds": 180,
    }
    assert SOURCE not in orjson.dumps(job).decode()
    assert (job["log_id"], job["conversion_id"], job["attempt"]) == (
        log_id,
        conversion["conversion_id"],
        1,
    )


def test_unknown_click_is_unmatched_and_nothing_else(world, matcher, redis_client, keys):
    post(redis_client, keys, click_id="CLK-NOPE", payout="5.00")
    drain(matcher)

    [entry] = received(redis_client, keys)
    assert entry["outcome"] == "unmatched"
    assert entry["reason"] == "unknown click_id CLK-NOPE"
    assert entry["click_id"] == "CLK-NOPE"
    assert conversions(redis_client, keys, world) == []
    assert jobs(redis_client, keys) == []
    assert redis_client.hgetall(keys.points(0)) == {}
    assert redis_client.xlen(keys.input_stream(0)) == 0


def test_click_older_than_the_attribution_window_is_unmatched(world, matcher, redis_client, keys):
    old_click(world, "CLK-OLD", "REV80", age_ms=31 * DAY_MS)
    post(redis_client, keys, click_id="CLK-OLD", payout="5.00")
    drain(matcher)

    [entry] = received(redis_client, keys)
    assert entry["outcome"] == "unmatched" and "conversion_id" not in entry
    assert "outside offer REV80's 30-day attribution window" in entry["reason"]
    assert conversions(redis_client, keys, world) == [] and jobs(redis_client, keys) == []
    assert points(world) == "0.00"


def test_update_of_a_conversion_created_in_time_applies_after_the_window(
    world, matcher, redis_client, keys
):
    old_click(world, "CLK-LATE", "REV80", age_ms=29 * DAY_MS)
    post(redis_client, keys, click_id="CLK-LATE", status="pending", payout="10.00")
    drain(matcher)
    # two days later the click is 31 days old; the approval still credits
    world.r.hset(world.keys.click("CLK-LATE"), "created", now_ms() - 31 * DAY_MS)
    post(redis_client, keys, click_id="CLK-LATE", status="approved", payout="10.00")
    drain(matcher)

    assert points(world) == "8.00"
    assert [e["outcome"] for e in received(redis_client, keys)] == ["matched", "matched"]


def test_click_whose_offer_no_longer_exists_is_unmatched(world, matcher, redis_client, keys):
    world.add_offer(Offer.build("GONE", revshare=50))
    add_click(world, "CLK-G", offer_id="GONE")
    redis_client.delete(keys.offer("GONE"))
    redis_client.srem(keys.offers_index(), "GONE")
    redis_client.incr(keys.config_version())
    post(redis_client, keys, click_id="CLK-G", payout="5.00")
    drain(matcher)

    [entry] = received(redis_client, keys)
    assert entry["outcome"] == "unmatched"
    assert entry["reason"] == "offer GONE of click CLK-G no longer exists"
    assert conversions(redis_client, keys, world) == [] and points(world) == "0.00"


def test_deactivated_offer_refuses_new_conversions_from_the_next_batch(
    world, matcher, redis_client, keys
):
    add_click(world, "CLK-A")
    add_click(world, "CLK-B")
    post(redis_client, keys, click_id="CLK-A", payout="1.00")
    drain(matcher)  # caches the offers
    world.set_active("offer", "REV80", False)
    post(redis_client, keys, click_id="CLK-B", payout="1.00")
    drain(matcher)

    entries = received(redis_client, keys)
    outcomes = [(e["outcome"], e.get("reason")) for e in entries]
    assert outcomes == [("matched", None), ("unmatched", "offer REV80 is not active")]
    assert "conversion_id" not in entries[1]  # no conversion exists behind it
    assert (entries[1]["click_id"], entries[1]["user_id"]) == ("CLK-B", "u1")
    assert points(world) == "0.80"


def test_deactivated_partner_gets_no_forward_from_the_next_batch(
    world, matcher, redis_client, keys
):
    add_click(world, "CLK-A")
    add_click(world, "CLK-B")
    post(redis_client, keys, click_id="CLK-A", payout="1.00")
    drain(matcher)
    world.set_active("partner", "NET", False)
    post(redis_client, keys, click_id="CLK-B", payout="1.00")
    drain(matcher)

    by_click = [(j["payload"]["click_id"], j["partner_id"]) for j in jobs(redis_client, keys)]
    assert sorted(by_click) == [("CLK-A", "NET"), ("CLK-A", "PUB"), ("CLK-B", "PUB")]


def test_scope_all_partner_that_sent_the_click_gets_one_delivery(
    world, matcher, redis_client, keys
):
    add_click(world, "CLK-N", partner_id="NET")
    post(redis_client, keys, click_id="CLK-N", payout="2.00")
    drain(matcher)
    assert [j["partner_id"] for j in jobs(redis_client, keys)] == ["NET"]


def test_offer_fallback_matches_the_most_recent_click_with_a_warning(
    world, matcher, redis_client, keys
):
    old_click(world, "CLK-EARLIER", "REV80", age_ms=20 * 60_000, user_id="u-early")
    old_click(world, "CLK-RECENT", "REV80", age_ms=5 * 60_000, user_id="u-recent")
    post(redis_client, keys, offer_id="REV80", payout="7.00", transaction_id="TXN-NOCLICKID")
    drain(matcher)

    [conversion] = conversions(redis_client, keys, world)
    assert conversion["click_id"] == "CLK-RECENT"
    assert conversion["matched_by"] == "offer_fallback"
    assert "no click_id sent" in conversion["warning"]
    [entry] = received(redis_client, keys)
    assert entry["outcome"] == "matched" and entry["matched_by"] == "offer_fallback"
    assert "no click_id sent" in entry["warning"]
    assert points(world, "u-recent") == "5.60" and points(world, "u-early") == "0.00"


def test_offer_fallback_ignores_clicks_older_than_the_fallback_window(
    world, matcher, redis_client, keys
):
    old_click(world, "CLK-2H", "REV80", age_ms=2 * 3600_000)
    post(redis_client, keys, offer_id="REV80", payout="7.00")
    drain(matcher)

    [entry] = received(redis_client, keys)
    assert entry["outcome"] == "unmatched"
    assert entry["reason"] == "no click on offer REV80 in the 3600 s before the postback"
    assert conversions(redis_client, keys, world) == []


# -- identity and transitions --------------------------------------------------------
def test_identity_is_transaction_id_else_click_and_goal(world, matcher, redis_client, keys):
    add_click(world, "CLK-I")
    post(redis_client, keys, click_id="CLK-I", goal="install", payout="1.00")
    post(redis_client, keys, click_id="CLK-I", goal="purchase", payout="2.00")
    post(redis_client, keys, click_id="CLK-I", goal="purchase", payout="2.00")
    post(redis_client, keys, click_id="CLK-I", transaction_id="T-1", payout="3.00")
    post(redis_client, keys, click_id="CLK-I", transaction_id="T-1", goal="x", payout="3.00")
    drain(matcher)

    outcomes = [e["outcome"] for e in received(redis_client, keys)]
    assert outcomes == ["matched", "matched", "duplicate", "matched", "duplicate"]
    assert len(conversions(redis_client, keys, world)) == 3
    assert points(world) == "4.80"  # (1 + 2 + 3) × 80%


def test_pending_then_approved_credits_the_approving_payout(world, matcher, redis_client, keys):
    add_click(world, "CLK-PA")
    post(
        redis_client, keys, click_id="CLK-PA", status="pending", payout="10.00", transaction_id="T"
    )
    drain(matcher)
    assert points(world) == "0.00"
    post(
        redis_client, keys, click_id="CLK-PA", status="approved", payout="12.50", transaction_id="T"
    )
    drain(matcher)

    assert points(world) == "10.00"
    [conversion] = conversions(redis_client, keys, world)
    assert (conversion["status"], conversion["payout"], conversion["partner_payout"]) == (
        "approved",
        "12.50",
        "10.00",
    )
    assert conversion["credited"] == "10.00"
    assert [s["effect"] for s in conversion["history"]] == ["created", "credited"]
    statuses = [(j["payload"]["status"], j["payload"]["payout"]) for j in jobs(redis_client, keys)]
    assert statuses.count(("pending", "8.00")) == 2 and statuses.count(("approved", "10.00")) == 2


def test_approval_without_payout_credits_the_stored_partner_payout(
    world, matcher, redis_client, keys
):
    add_click(world, "CLK-NP")
    post(
        redis_client, keys, click_id="CLK-NP", status="pending", payout="10.00", transaction_id="T"
    )
    post(redis_client, keys, click_id="CLK-NP", status="approved", transaction_id="T")
    drain(matcher)

    assert points(world) == "8.00"
    [conversion] = conversions(redis_client, keys, world)
    assert (conversion["payout"], conversion["partner_payout"]) == ("10.00", "8.00")
    approved = [j for j in jobs(redis_client, keys) if j["payload"]["status"] == "approved"]
    assert {j["payload"]["payout"] for j in approved} == {"8.00"}


def test_pending_then_rejected_credits_nothing_and_forwards(world, matcher, redis_client, keys):
    add_click(world, "CLK-PR")
    post(
        redis_client, keys, click_id="CLK-PR", status="pending", payout="10.00", transaction_id="T"
    )
    post(redis_client, keys, click_id="CLK-PR", status="rejected", payout="0", transaction_id="T")
    drain(matcher)

    assert points(world) == "0.00"
    assert [j["payload"]["status"] for j in jobs(redis_client, keys)].count("rejected") == 2
    [conversion] = conversions(redis_client, keys, world)
    assert conversion["status"] == "rejected" and conversion["credited"] == "0.00"


def test_reversal_debits_exactly_what_was_credited(world, matcher, redis_client, keys):
    add_click(world, "CLK-R")
    add_click(world, "CLK-KEEP")
    post(redis_client, keys, click_id="CLK-KEEP", payout="1.00")
    post(redis_client, keys, click_id="CLK-R", payout="5.00", transaction_id="T")
    post(
        redis_client,
        keys,
        click_id="CLK-R",
        status="rejected",
        payout="0.00",
        transaction_id="T",
        reason="fraud_detected",
    )
    drain(matcher)

    assert points(world) == "0.80"  # 0.80 + 4.00 - 4.00
    conversion = [c for c in conversions(redis_client, keys, world) if c["click_id"] == "CLK-R"][0]
    assert conversion["status"] == "rejected" and conversion["credited"] == "0.00"
    assert conversion["history"][-1]["effect"] == "reversed"
    assert conversion["history"][-1]["reason"] == "fraud_detected"
    reversal = [j for j in jobs(redis_client, keys) if j["payload"]["status"] == "rejected"]
    # the partner learns which payout is reversed, not the rejecting postback's 0.00
    assert {j["payload"]["payout"] for j in reversal} == {"4.00"}
    assert {j["payload"]["reason"] for j in reversal} == {"fraud_detected"}


@pytest.mark.parametrize(
    ("first", "then"),
    [("rejected", "approved"), ("approved", "pending"), ("rejected", "pending")],
)
def test_other_moves_are_kept_in_history_only(world, matcher, redis_client, keys, first, then):
    add_click(world, "CLK-M")
    post(redis_client, keys, click_id="CLK-M", status=first, payout="5.00", transaction_id="T")
    drain(matcher)
    balance, forwarded = points(world), len(jobs(redis_client, keys))
    post(redis_client, keys, click_id="CLK-M", status=then, payout="5.00", transaction_id="T")
    drain(matcher)

    assert points(world) == balance
    assert len(jobs(redis_client, keys)) == forwarded
    [conversion] = conversions(redis_client, keys, world)
    assert conversion["status"] == first
    assert conversion["history"][-1] | {"at": 0} == {
        "status": then,
        "at": 0,
        "log_id": conversion["history"][-1]["log_id"],
        "payout": "5.00",
        "partner_payout": "4.00",
        "effect": "kept",
    }
    last = received(redis_client, keys)[-1]
    assert last["outcome"] == "matched"
    assert last["reason"] == f"status move {first}→{then} kept in history only"


def test_same_status_again_is_a_duplicate_not_forwarded(world, matcher, redis_client, keys):
    add_click(world, "CLK-D")
    for _ in range(3):
        post(redis_client, keys, click_id="CLK-D", payout="5.00", transaction_id="T")
    drain(matcher)

    assert points(world) == "4.00"
    assert len(jobs(redis_client, keys)) == 2
    assert [e["outcome"] for e in received(redis_client, keys)] == [
        "matched",
        "duplicate",
        "duplicate",
    ]
    assert redis_client.hget(keys.stats(0), "outcome:duplicate") == "2"


def test_currency_is_the_postbacks_else_the_offers(world, matcher, redis_client, keys):
    add_click(world, "CLK-EU", offer_id="EU")
    add_click(world, "CLK-GBP", offer_id="EU")
    post(redis_client, keys, click_id="CLK-EU", payout="10.00")
    post(redis_client, keys, click_id="CLK-GBP", payout="10.00", currency="GBP")
    drain(matcher)

    by_click = {c["click_id"]: c["currency"] for c in conversions(redis_client, keys, world)}
    assert by_click == {"CLK-EU": "EUR", "CLK-GBP": "GBP"}
    currencies = {
        (j["payload"]["click_id"], j["payload"]["currency"]) for j in jobs(redis_client, keys)
    }
    assert currencies == {("CLK-EU", "EUR"), ("CLK-GBP", "GBP")}


# -- test postbacks ------------------------------------------------------------------
def test_test_postback_forwards_to_scope_all_and_the_clicks_partner_only(
    world, matcher, redis_client, keys
):
    add_click(world, "CLK-T")
    post(redis_client, keys, click_id="CLK-T", status="test", payout="1.00")
    drain(matcher)

    assert conversions(redis_client, keys, world) == [] and points(world) == "0.00"
    sent = {j["partner_id"]: j["payload"] for j in jobs(redis_client, keys)}
    assert sorted(sent) == ["NET", "PUB"]  # OTHER (own, not its click) gets nothing
    assert {p["status"] for p in sent.values()} == {"test"}
    assert {p["payout"] for p in sent.values()} == {"0.80"}  # the partner's payout
    assert all("conversion_id" not in p for p in sent.values())
    [entry] = received(redis_client, keys)
    assert entry["outcome"] == "test" and entry["partner_id"] == "PUB"


def test_test_postback_with_unknown_click_sends_the_payout_given(
    world, matcher, redis_client, keys
):
    post(
        redis_client,
        keys,
        click_id="TEST-INTEGRATION-001",
        status="test",
        payout="1.00",
        offer_id="TEST-OFFER",
    )
    drain(matcher)

    [job] = jobs(redis_client, keys)
    assert job["partner_id"] == "NET"
    assert job["payload"]["payout"] == "1.00"
    assert job["payload"]["click_id"] == "TEST-INTEGRATION-001"
    assert received(redis_client, keys)[0]["outcome"] == "test"


# -- atomic step -----------------------------------------------------------------------
def capture_calls(matcher: Matcher) -> list:
    """Plan the pending batch without running it: the match.lua calls it would make."""
    captured: list = []

    class Recorder:
        def send(self, calls):
            captured.extend(calls)

        def receive(self):
            return ["planned"] * len(captured)

    real = matcher._pipe
    matcher._pipe = Recorder()
    try:
        matcher.process_batch(0)
    finally:
        matcher._pipe = real
    return captured


def test_redelivered_entry_is_a_no_op(world, matcher, redis_client, keys):
    add_click(world, "CLK-X")
    post(redis_client, keys, click_id="CLK-X", payout="5.00")
    [call] = capture_calls(matcher)

    first = matcher.scripts.run_many(redis_client, "match", [call, call])
    again = matcher.scripts.run_many(redis_client, "match", [call])  # a re-sent pipeline

    assert first == ["matched", "already-processed"] and again == ["already-processed"]
    assert points(world) == "4.00"
    assert len(jobs(redis_client, keys)) == 2 and len(received(redis_client, keys)) == 1


def test_entry_processed_twice_by_two_matchers_credits_once(world, redis_client, settings, keys):
    add_click(world, "CLK-Y")
    post(redis_client, keys, click_id="CLK-Y", payout="5.00")
    slow = Matcher(redis_client, settings, consumer="slow")
    [call] = capture_calls(slow)  # read by "slow", which stalls before applying it
    redis_client.xclaim(keys.input_stream(0), GROUP, "fast", 0, [call[1][1]])
    fast = Matcher(redis_client, settings, consumer="fast")
    drain(fast)  # reads its own pending (the claimed entry) and applies it

    assert slow.scripts.run_many(redis_client, "match", [call]) == ["already-processed"]
    assert points(world) == "4.00" and len(received(redis_client, keys)) == 1


def test_malformed_plan_is_refused_before_any_write(world, matcher, redis_client, keys):
    add_click(world, "CLK-Z")
    post(redis_client, keys, click_id="CLK-Z", payout="5.00")
    [(call_keys, args)] = capture_calls(matcher)
    broken = list(args)
    broken[15] = str(int(broken[15]) + 1)  # one forward job more than sent

    [result] = matcher.scripts.run_many(redis_client, "match", [(call_keys, broken)])

    assert isinstance(result, Exception) and "argument count" in str(result)
    assert redis_client.xpending(keys.input_stream(0), GROUP)["pending"] == 1
    assert jobs(redis_client, keys) == [] and received(redis_client, keys) == []
    assert redis_client.hgetall(keys.points(0)) == {}


def test_corrupt_conversion_status_is_refused_before_any_write(world, matcher, redis_client, keys):
    add_click(world, "CLK-C")
    post(redis_client, keys, click_id="CLK-C", payout="5.00", transaction_id="T")
    [(call_keys, args)] = capture_calls(matcher)
    redis_client.hset(call_keys[1], "status", "paid")

    [result] = matcher.scripts.run_many(redis_client, "match", [(call_keys, args)])

    assert "unknown status" in str(result)
    assert redis_client.xpending(keys.input_stream(0), GROUP)["pending"] == 1
    assert received(redis_client, keys) == [] and redis_client.hgetall(keys.points(0)) == {}


def test_invalid_entry_of_a_chunk_does_not_hold_back_the_others(world, matcher, redis_client, keys):
    for name in ("A", "B", "C"):  # one batch, so one match.lua call for the three
        add_click(world, f"CLK-{name}")
        post(redis_client, keys, click_id=f"CLK-{name}", payout="5.00", transaction_id=name)
    corrupt = keys.conversion(0, conversion_id(0, SOURCE, transaction_id="B"))
    redis_client.hset(corrupt, "status", "paid")

    drain(matcher)

    assert points(world) == "8.00"  # A and C: 4.00 each
    assert [e["click_id"] for e in received(redis_client, keys)] == ["CLK-A", "CLK-C"]
    [(stuck_id, fields)] = redis_client.xrange(keys.input_stream(0))
    assert orjson.loads(fields["params"])["click_id"] == "CLK-B"
    assert [e["message_id"] for e in pending(redis_client, keys)] == [stuck_id]


def test_chunk_skips_an_entry_already_processed_and_applies_the_rest(
    world, matcher, redis_client, keys
):
    add_click(world, "CLK-P")
    post(redis_client, keys, click_id="CLK-P", status="pending", payout="5.00", transaction_id="P")
    [first] = capture_calls(matcher)
    post(redis_client, keys, click_id="CLK-P", status="approved", payout="5.00", transaction_id="P")
    capture_calls(matcher)  # delivered too
    matcher.restart()  # own pending again: both entries, in one call
    [both] = capture_calls(matcher)

    assert matcher.scripts.run_many(redis_client, "match", [first]) == ["matched"]
    assert matcher.scripts.run_many(redis_client, "match", [both]) == ["already-processed matched"]
    [conversion] = conversions(redis_client, keys, world)
    assert conversion["status"] == "approved" and points(world) == "4.00"
    assert [e["status"] for e in received(redis_client, keys)] == ["pending", "approved"]
    assert pending(redis_client, keys) == []


def test_received_log_is_trimmed_by_age(world, settings, redis_client, keys):
    log_key = keys.received_log(0)
    pipe = redis_client.pipeline()
    for i in range(1, 251):  # 250 entries from 1970: far older than any retention
        pipe.xadd(log_key, {"outcome": "matched"}, id=f"{i}-0")
    pipe.execute()
    matcher = Matcher(redis_client, settings.with_overrides(log_retention_days=1), consumer="t")
    post(redis_client, keys, click_id="CLK-NONE")
    drain(matcher)

    remaining = redis_client.xrange(log_key)
    assert remaining[-1][1]["outcome"] == "unmatched"
    assert len(remaining) < 100  # whole old nodes are dropped (approximate MINID trim)


def test_partitions_each_have_their_own_stream_and_ledger(redis_client, settings, namespace):
    from storage.redis_client import ensure_groups

    settings = settings.with_overrides(partitions=3)
    keys = Keys(namespace, 3)
    ensure_groups(redis_client, keys)
    store = Store(redis_client, keys)
    store.add_offer(Offer.build("REV80", revshare=80))
    add_partner(store, "PUB")
    sources = [f"source-key-{i:04d}-abcdef" for i in range(12)]
    assert len({keys.partition_of(s) for s in sources}) == 3
    for i, source in enumerate(sources):
        add_click(store, f"CLK-{i}")
        post(redis_client, keys, source=source, click_id=f"CLK-{i}", payout="1.00")
    matcher = Matcher(redis_client, settings, consumer="parts")

    assert drain(matcher) == 12
    assert store.points_cents("u1") == 12 * 80
    total_logs = sum(redis_client.xlen(keys.received_log(n)) for n in range(3))
    assert total_logs == 12
    for source in sources:
        n = keys.partition_of(source)
        assert redis_client.xlen(keys.input_stream(n)) == 0
