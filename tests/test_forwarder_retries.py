"""Retries: what is retried, when, with Retry-After, and the dead letter at the end."""

from __future__ import annotations

import time

import pytest

from core.partners import Partner
from storage.deadletters import list_dead_letters, replay
from tests.sink import (  # noqa: F401 - fixtures
    Reply,
    enqueue_job,
    forwarded,
    make_forwarder_fixture,
    retry_jobs,
    sink_fixture,
    until,
)


@pytest.fixture
def fast_retries(settings):
    """Retries due at once: the schedule is shortened, never slept through."""
    return settings.with_overrides(retry_schedule=(0, 0))


def add_partner(store, url: str, partner_id: str = "p1") -> None:
    store.add_partner(Partner.build(partner_id, url=url, allow_private=True))


def run_until_logged(forwarder, client, keys, count: int) -> list[dict]:
    return until(
        lambda: (entries := forwarded(client, keys)) and len(entries) >= count and entries,
        step=forwarder.process_batch,
        message=f"{count} attempts logged",
    )


def test_a_500_then_200_is_delivered_on_the_retry(
    store, redis_client, keys, sink, make_forwarder, fast_retries
):
    add_partner(store, sink.url("/p1"))
    sink.respond("/p1", Reply(500, body="down for maintenance"), 200)
    enqueue_job(redis_client, keys, "p1")
    first, second = run_until_logged(make_forwarder(settings=fast_retries), redis_client, keys, 2)

    assert (first["attempt"], first["result"], first["success"]) == ("1", "retry", "0")
    assert first["status_code"] == "500" and first["error"] == "HTTP 500"
    assert first["response_body"] == "down for maintenance"
    assert (second["attempt"], second["result"], second["success"]) == ("2", "delivered", "1")
    assert len(sink.received("/p1")) == 2
    assert redis_client.zcard(keys.retry_queue(0)) == 0
    stats = redis_client.hgetall(keys.stats(0))
    assert stats["delivery:p1:retry"] == "1" and stats["delivery:p1:delivered"] == "1"


def test_a_400_is_one_attempt_failed_not_retried(
    store, redis_client, keys, sink, make_forwarder, fast_retries
):
    add_partner(store, sink.url("/p1"))
    sink.respond("/p1", Reply(400, body="unknown click"))
    enqueue_job(redis_client, keys, "p1")
    forwarder = make_forwarder(settings=fast_retries)
    [entry] = run_until_logged(forwarder, redis_client, keys, 1)
    for _ in range(5):  # nothing more happens
        forwarder.process_batch(block=False)
    assert entry["result"] == "failed" and entry["status_code"] == "400"
    assert len(sink.received("/p1")) == 1
    assert redis_client.zcard(keys.retry_queue(0)) == 0
    assert redis_client.xlen(keys.dead_letters(0)) == 0


def test_a_redirect_is_a_failure_and_is_not_followed(
    store, redis_client, keys, sink, make_forwarder, fast_retries
):
    add_partner(store, sink.url("/moved"))
    sink.respond("/moved", Reply(302, headers={"Location": sink.url("/elsewhere")}))
    enqueue_job(redis_client, keys, "p1")
    [entry] = run_until_logged(make_forwarder(settings=fast_retries), redis_client, keys, 1)
    assert entry["result"] == "failed" and "redirect" in entry["error"]
    assert sink.received("/elsewhere") == []


def test_retry_after_is_honoured_when_longer_than_the_schedule(
    store, redis_client, keys, settings, sink, make_forwarder
):
    add_partner(store, sink.url("/p1"))
    sink.respond("/p1", Reply(429, headers={"Retry-After": "120"}))
    enqueue_job(redis_client, keys, "p1")
    before_ms = time.time() * 1000
    [entry] = run_until_logged(
        make_forwarder(settings=settings.with_overrides(retry_schedule=(1, 1))),
        redis_client,
        keys,
        1,
    )
    assert entry["result"] == "retry" and entry["status_code"] == "429"
    [(job, due_ms)] = retry_jobs(redis_client, keys)
    assert job["attempt"] == 2
    assert due_ms >= before_ms + 120_000


def test_the_schedule_sets_the_due_time_with_jitter(
    store, redis_client, keys, settings, sink, make_forwarder
):
    add_partner(store, sink.url("/p1"))
    sink.respond("/p1", 503)
    enqueue_job(redis_client, keys, "p1")
    before_ms = time.time() * 1000
    run_until_logged(
        make_forwarder(settings=settings.with_overrides(retry_schedule=(600, 1800))),
        redis_client,
        keys,
        1,
    )
    [(job, due_ms)] = retry_jobs(redis_client, keys)
    assert job["attempt"] == 2
    assert before_ms + 600_000 * 0.8 <= due_ms <= time.time() * 1000 + 600_000 * 1.2


def test_timeouts_and_refused_connections_are_retried(
    store, redis_client, keys, settings, sink, make_forwarder
):
    add_partner(store, sink.url("/slow"), "slow")
    sink.respond("/slow", Reply(200, delay=5))
    add_partner(store, "http://127.0.0.1:9/closed", "closed")  # the discard port: refused
    enqueue_job(redis_client, keys, "slow")
    enqueue_job(redis_client, keys, "closed")
    quick = settings.with_overrides(forward_timeout=0.3, retry_schedule=(600,))
    entries = run_until_logged(make_forwarder(settings=quick), redis_client, keys, 2)
    by_partner = {e["partner_id"]: e for e in entries}
    assert by_partner["slow"]["result"] == "retry"
    assert "timeout" in by_partner["slow"]["error"] and by_partner["slow"]["status_code"] == ""
    assert by_partner["closed"]["result"] == "retry"
    assert "connection" in by_partner["closed"]["error"]
    assert sorted(job["partner_id"] for job, _ in retry_jobs(redis_client, keys)) == [
        "closed",
        "slow",
    ]


def test_after_the_last_attempt_the_job_is_dead_lettered_and_replay_delivers(
    store, redis_client, keys, sink, make_forwarder, fast_retries
):
    add_partner(store, sink.url("/p1"))
    sink.respond("/p1", 500)
    job = enqueue_job(redis_client, keys, "p1")
    forwarder = make_forwarder(settings=fast_retries)
    entries = run_until_logged(forwarder, redis_client, keys, 3)
    assert [e["result"] for e in entries] == ["retry", "retry", "dead-lettered"]
    assert [e["attempt"] for e in entries] == ["1", "2", "3"]
    for _ in range(5):
        forwarder.process_batch(block=False)
    assert len(forwarded(redis_client, keys)) == 3  # no fourth attempt
    assert redis_client.zcard(keys.retry_queue(0)) == 0

    [letter] = list_dead_letters(redis_client, keys)
    assert letter["kind"] == "delivery" and letter["partner_id"] == "p1"
    assert letter["error"] == "HTTP 500"
    assert letter["data"]["payload"] == job["payload"] and letter["data"]["attempt"] == 3

    sink.respond("/p1", 200)
    assert replay(redis_client, keys, partner="p1") == 1
    assert list_dead_letters(redis_client, keys) == []
    entries = run_until_logged(forwarder, redis_client, keys, 4)
    assert (entries[-1]["result"], entries[-1]["attempt"]) == ("delivered", "1")
    assert len(sink.received("/p1")) == 4
