"""One partner's trouble stays its own: slot caps, slow partners, pause and probe."""

from __future__ import annotations

import threading
import time

import orjson

from core.partners import Partner
from storage import partner_health
from storage.partner_health import paused_partners
from tests.sink import (  # noqa: F401 - fixtures
    Reply,
    enqueue_job,
    forwarded,
    make_forwarder_fixture,
    retry_jobs,
    sample_payload,
    sink_fixture,
    until,
)


def add_partner(store, sink, partner_id: str) -> None:
    store.add_partner(Partner.build(partner_id, url=sink.url(f"/{partner_id}"), allow_private=True))


def test_a_slow_partner_does_not_hold_up_another(store, redis_client, keys, sink, make_forwarder):
    add_partner(store, sink, "slow")
    add_partner(store, sink, "fast")
    sink.respond("/slow", Reply(200, delay=5))
    enqueue_job(redis_client, keys, "slow")  # first in the stream
    enqueue_job(redis_client, keys, "fast")
    forwarder = make_forwarder()

    until(
        lambda: forwarded(redis_client, keys) and sink.received("/slow"),
        step=forwarder.process_batch,
    )
    entries = forwarded(redis_client, keys)
    [slow_request] = sink.received("/slow")
    assert [e["partner_id"] for e in entries] == ["fast"]
    assert entries[0]["result"] == "delivered"
    assert not slow_request.done  # the slow partner is still answering


def test_a_partner_gets_at_most_its_share_of_the_slots(
    store, redis_client, keys, settings, sink, make_forwarder
):
    add_partner(store, sink, "slow")
    add_partner(store, sink, "fast")
    sink.respond("/slow", Reply(200, delay=5))
    for i in range(20):
        enqueue_job(redis_client, keys, "slow", sample_payload(click_id=f"S{i}"))
    for i in range(3):
        enqueue_job(redis_client, keys, "fast", sample_payload(click_id=f"F{i}"))
    forwarder = make_forwarder(
        settings=settings.with_overrides(partner_max_inflight=2), concurrency=4
    )

    until(lambda: len(forwarded(redis_client, keys)) >= 3, step=forwarder.process_batch)
    assert {e["partner_id"] for e in forwarded(redis_client, keys)} == {"fast"}
    for _ in range(5):
        forwarder.process_batch(block=False)
    assert len(sink.received("/slow")) == 2  # its cap, however many are queued
    # The surplus waits in the retry set without spending an attempt.
    deferred = [job for job, _ in retry_jobs(redis_client, keys) if job["partner_id"] == "slow"]
    assert deferred and all(job["attempt"] == 1 for job in deferred)


def test_a_busy_fast_partner_is_refilled_from_memory_never_via_the_retry_set(
    store, redis_client, keys, settings, sink, make_forwarder
):
    add_partner(store, sink, "fast")
    sink.respond("/fast", Reply(200, delay=0.005))
    for i in range(40):  # five times what this forwarder holds at once
        enqueue_job(redis_client, keys, "fast", sample_payload(click_id=f"F{i}"))
    forwarder = make_forwarder(
        settings=settings.with_overrides(partner_max_inflight=2), concurrency=4
    )
    detours = []

    def step() -> None:
        forwarder.process_batch(block=False)
        detours.extend(retry_jobs(redis_client, keys))

    until(lambda: len(forwarded(redis_client, keys)) >= 40, step=step, timeout=30)
    assert detours == []
    assert len(sink.received("/fast")) == 40
    results = {(e["result"], e["attempt"]) for e in forwarded(redis_client, keys)}
    assert results == {("delivered", "1")}


def test_ten_failures_in_a_row_pause_a_partner_and_a_probe_2xx_resumes_it(
    store, redis_client, keys, settings, sink, make_forwarder
):
    add_partner(store, sink, "p1")
    sink.respond("/p1", 503)
    settings = settings.with_overrides(
        retry_schedule=(3600,), probe_interval_s=60.0, partner_max_inflight=1
    )
    for i in range(14):
        enqueue_job(redis_client, keys, "p1", sample_payload(click_id=f"C{i}"))
    forwarder = make_forwarder(settings=settings)

    until(lambda: paused_partners(redis_client, keys), step=forwarder.process_batch)
    [paused] = paused_partners(redis_client, keys)
    assert paused["partner_id"] == "p1" and paused["failures"] == 10
    assert paused["next_probe"] - paused["paused_since"] == 60_000
    assert paused["last_error"] == "HTTP 503"
    # Jobs not yet tried wait for the probe without spending attempts.
    until(
        lambda: redis_client.xlen(keys.forward_stream(0)) == 0 and not forwarder.busy,
        step=forwarder.process_batch,
    )
    assert len(sink.received("/p1")) == 10
    waiting = [job for job, _ in retry_jobs(redis_client, keys)]
    assert sorted(job["attempt"] for job in waiting) == [1] * 4 + [2] * 10

    # A minute passes: the probe slot frees and every job is due. The probe takes a
    # second to answer: meanwhile no other job goes.
    sink.respond("/p1", Reply(200, delay=1.0), 200)
    redis_client.delete(keys.partner_probe("p1"))
    due_now = {member: 0 for member in redis_client.zrange(keys.retry_queue(0), 0, -1)}
    redis_client.zadd(keys.retry_queue(0), due_now)

    until(lambda: len(sink.received("/p1")) >= 11, step=forwarder.process_batch)
    for _ in range(3):
        forwarder.process_batch(block=False)
    assert len(sink.received("/p1")) == 11  # one probe, the others wait for its answer
    until(lambda: not paused_partners(redis_client, keys), step=forwarder.process_batch)
    assert redis_client.hget(keys.partner_health("p1"), "failures") == "0"

    # Resumed: the whole backlog is due at once, the 3600 s retries included (issue #8,
    # defect 7: part of it used to wait one more probe interval).
    delivered = until(
        lambda: (
            len(found := [e for e in forwarded(redis_client, keys) if e["success"] == "1"]) >= 14
            and found
        ),
        step=forwarder.process_batch,
    )
    assert sorted(orjson.loads(e["payload"])["click_id"] for e in delivered) == sorted(
        f"C{i}" for i in range(14)
    )
    assert len(sink.received("/p1")) == 24  # 10 failures, the probe, 13 more: none twice


def test_only_one_probe_per_interval_across_processes(redis_client, keys):
    taken = [
        partner_health.take_probe(redis_client, keys, "p1", probe_interval_s=60, now_ms=1000)
        for _ in range(3)
    ]
    assert taken == [True, False, False]
    assert redis_client.pttl(keys.partner_probe("p1")) > 59_000


def test_a_2xx_between_failures_restarts_the_count():
    tally = partner_health.Tally()
    for result in ["retry"] * 9 + ["delivered"] + ["retry"] * 3 + ["failed"]:
        tally.add(result, "HTTP 500")
    assert tally.succeeded and tally.failures == 3


def pause(redis_client, keys, partner_id: str, now_ms: int, error: str) -> None:
    """What a forwarder records after a partner's tenth failure in a row: paused, its
    probe slot taken for 60 s."""
    partner_health.record(
        redis_client,
        keys,
        {partner_id: partner_health.Tally(failures=10, last_error=error)},
        pause_after=10,
        probe_interval_s=60,
        now_ms=now_ms,
    )


def test_a_paused_partner_is_resumed_by_hand(redis_client, keys, store, sink):
    add_partner(store, sink, "p1")
    pause(redis_client, keys, "p1", now_ms=1000, error="HTTP 500")
    assert [p["partner_id"] for p in paused_partners(redis_client, keys)] == ["p1"]
    partner_health.resume(redis_client, keys, "p1")
    assert paused_partners(redis_client, keys) == []


def test_jobs_of_a_partner_paused_elsewhere_wait_for_its_probe(
    store, redis_client, keys, settings, sink, make_forwarder
):
    add_partner(store, sink, "p1")
    # Another forwarder process paused it a moment ago; its probe slot is taken.
    now_ms = int(time.time() * 1000)
    pause(redis_client, keys, "p1", now_ms=now_ms, error="HTTP 502")
    for i in range(3):
        enqueue_job(redis_client, keys, "p1", sample_payload(click_id=f"C{i}"))
    forwarder = make_forwarder()
    until(
        lambda: redis_client.zcard(keys.retry_queue(0)) == 3 and not forwarder.busy,
        step=forwarder.process_batch,
    )
    assert sink.received() == []
    assert forwarded(redis_client, keys) == []  # no attempt made, none logged
    waiting = retry_jobs(redis_client, keys)
    assert [job["attempt"] for job, _ in waiting] == [1, 1, 1]
    assert all(due >= now_ms + 60_000 for _, due in waiting)


def test_a_job_written_while_deliveries_are_in_flight_is_taken_at_once(
    store, redis_client, keys, sink, make_forwarder, monkeypatch
):
    # Results of a busy step may gather for a long while; a new job must not wait for it.
    monkeypatch.setattr("processors.forwarder.worker.BATCH_WAIT_S", 30.0)
    add_partner(store, sink, "slow")
    add_partner(store, sink, "fast")
    sink.respond("/slow", Reply(200, delay=4))
    enqueue_job(redis_client, keys, "slow")
    forwarder = make_forwarder()
    until(lambda: sink.received("/slow"), step=forwarder.process_batch)  # now in flight

    step = threading.Thread(target=forwarder.process_batch)
    step.start()
    enqueue_job(redis_client, keys, "fast")
    step.join(10)
    assert not step.is_alive(), "the step waited out its timer instead of taking the job"
    until(lambda: sink.received("/fast"), timeout=5)
    assert not sink.received("/slow")[0].done
    until(lambda: len(forwarded(redis_client, keys)) == 2, step=forwarder.process_batch)
