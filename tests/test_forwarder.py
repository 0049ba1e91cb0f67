"""Delivering forward jobs to partners: the requests, the forwarded log, worker discipline."""

from __future__ import annotations

import hashlib
import hmac
import os
import subprocess
import sys
import threading
import time
from urllib.parse import urlsplit

import orjson
import pytest

from core.partners import Partner
from core.signature import verify_signature
from storage.keys import FORWARDER_GROUP, Keys
from storage.redis_client import connect, ensure_groups
from tests.procs import child_env, stop
from tests.sink import (  # noqa: F401 - fixtures
    Reply,
    enqueue_job,
    forwarded,
    make_forwarder_fixture,
    sample_payload,
    sink_fixture,
    until,
)

LOG_FIELDS = {
    "partner_id", "partner_name", "partner_email", "url", "method", "success", "status_code",
    "response_body", "response_ms", "attempt", "error", "log_id", "conversion_id", "payload",
    "time", "result",
}  # fmt: skip


def add_partner(store, sink, partner_id="p1", path="/p1", **fields) -> Partner:
    fields.setdefault("name", f"Partner {partner_id}")
    fields.setdefault("email", f"{partner_id}@example.com")
    return store.add_partner(
        Partner.build(partner_id, url=sink.url(path), allow_private=True, **fields)
    )


def deliver_all(forwarder, client, keys, count: int, timeout: float = 10.0) -> list[dict]:
    """Run the forwarder until ``count`` attempts are in the forwarded log."""
    return until(
        lambda: (entries := forwarded(client, keys)) and len(entries) >= count and entries,
        step=forwarder.process_batch,
        timeout=timeout,
        message=f"{count} forwarded-log entries",
    )


def test_get_appends_the_payload_to_the_partner_query(
    store, redis_client, keys, sink, make_forwarder
):
    add_partner(store, sink, path="/p1?token=abc")
    job = enqueue_job(redis_client, keys, "p1")
    [entry] = deliver_all(make_forwarder(), redis_client, keys, 1)

    [request] = sink.received("/p1")
    assert request.method == "GET"
    assert request.query.startswith("token=abc&")
    assert request.params == {"token": "abc", **{k: str(v) for k, v in job["payload"].items()}}
    assert request.params["payout"] == "4.00"
    assert request.params["sub1"] == "camp a"

    assert set(entry) == LOG_FIELDS
    assert entry["result"] == "delivered" and entry["success"] == "1"
    assert entry["url"] == sink.url("/p1?") + request.query  # with the parameters, for GET
    assert entry["method"] == "GET" and entry["status_code"] == "200"
    assert entry["partner_name"] == "Partner p1" and entry["partner_email"] == "p1@example.com"
    assert entry["response_body"] == "ok" and entry["error"] == ""
    assert int(entry["response_ms"]) >= 0 and int(entry["time"]) > 0
    assert entry["attempt"] == "1"
    assert entry["log_id"] == job["log_id"] and entry["conversion_id"] == job["conversion_id"]
    assert orjson.loads(entry["payload"]) == job["payload"]
    # The job is done: acknowledged and gone from the stream.
    assert redis_client.xpending(keys.forward_stream(0), FORWARDER_GROUP)["pending"] == 0
    assert redis_client.xlen(keys.forward_stream(0)) == 0


def test_post_sends_a_json_body_and_logs_the_base_url(
    store, redis_client, keys, sink, make_forwarder
):
    add_partner(store, sink, method="POST")
    job = enqueue_job(redis_client, keys, "p1", sample_payload(custom_flag=True, extra={"a": 1}))
    [entry] = deliver_all(make_forwarder(), redis_client, keys, 1)

    [request] = sink.received("/p1")
    assert request.method == "POST"
    assert request.headers["Content-Type"] == "application/json"
    assert request.json() == job["payload"]
    assert request.query == ""
    assert entry["url"] == sink.url("/p1") and entry["method"] == "POST"
    assert entry["result"] == "delivered"


def test_the_source_key_and_upstream_payout_never_reach_the_partner(
    store, redis_client, keys, sink, make_forwarder
):
    # The matcher builds the payload; the forwarder sends exactly it, nothing more.
    add_partner(store, sink, method="POST")
    job = enqueue_job(redis_client, keys, "p1")
    deliver_all(make_forwarder(), redis_client, keys, 1)
    body = sink.received("/p1")[0].json()
    assert body == job["payload"]
    assert "source" not in body and "key" not in body


def test_url_macros_are_filled_url_encoded(store, redis_client, keys, sink, make_forwarder):
    add_partner(
        store, sink, path="/cb/{click_id}?amt={payout}&s={sub1}&tx={transaction_id}&s5={sub5}"
    )
    enqueue_job(redis_client, keys, "p1", sample_payload(click_id="C 1/2"))
    deliver_all(make_forwarder(), redis_client, keys, 1)
    [request] = sink.wait_for(1)
    assert request.path == "/cb/C%201%2F2"
    assert request.query.startswith("amt=4.00&s=camp%20a&tx=TXN-12345&s5=&")
    assert request.multi_params["transaction_id"] == ["TXN-12345"]


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_the_signature_verifies_with_the_documented_recipe(
    method, store, redis_client, keys, sink, make_forwarder
):
    add_partner(store, sink, path="/p1?k=v", method=method, secret="shh-123")
    enqueue_job(redis_client, keys, "p1")
    deliver_all(make_forwarder(), redis_client, keys, 1)
    [request] = sink.received("/p1")
    header = request.headers["X-Postback-Signature"]
    # The recipe, as a partner would write it: HMAC-SHA256 over "<t>." + body or query.
    parts = dict(part.split("=", 1) for part in header.split(","))
    signed = request.body if method == "POST" else request.query.encode()
    expected = hmac.new(b"shh-123", parts["t"].encode() + b"." + signed, hashlib.sha256)
    assert hmac.compare_digest(parts["v1"], expected.hexdigest())
    assert abs(int(parts["t"]) - time.time()) < 60
    assert verify_signature("shh-123", header, signed)
    assert not verify_signature("wrong", header, signed)


def test_a_huge_answer_is_cut_and_the_next_delivery_still_goes(
    store, redis_client, keys, sink, make_forwarder
):
    add_partner(store, sink)
    sink.respond("/p1", Reply(200, body="é" * 300_000), 200)
    enqueue_job(redis_client, keys, "p1")
    enqueue_job(redis_client, keys, "p1")
    entries = deliver_all(make_forwarder(), redis_client, keys, 2)
    assert sorted(e["response_body"] for e in entries) == ["ok", "é" * 500]
    assert [e["result"] for e in entries] == ["delivered", "delivered"]


def test_an_inactive_partner_gets_nothing_and_the_drop_is_logged(
    store, redis_client, keys, sink, make_forwarder
):
    add_partner(store, sink)
    store.set_active("partner", "p1", False)
    enqueue_job(redis_client, keys, "p1")
    enqueue_job(redis_client, keys, "ghost")
    entries = deliver_all(make_forwarder(), redis_client, keys, 2)
    assert sink.received() == []
    by_partner = {e["partner_id"]: e for e in entries}
    assert by_partner["p1"]["result"] == "failed"
    assert by_partner["p1"]["error"] == "partner inactive"
    assert by_partner["ghost"]["error"] == "partner not found"
    assert redis_client.zcard(keys.retry_queue(0)) == 0


def test_partner_changes_apply_at_the_next_delivery(
    store, redis_client, keys, sink, make_forwarder
):
    add_partner(store, sink, path="/old")
    forwarder = make_forwarder()
    enqueue_job(redis_client, keys, "p1")
    deliver_all(forwarder, redis_client, keys, 1)
    store.update_partner("p1", Partner.build("p1", url=sink.url("/new"), allow_private=True))
    enqueue_job(redis_client, keys, "p1")
    deliver_all(forwarder, redis_client, keys, 2)
    assert [r.path for r in sink.received()] == ["/old", "/new"]


def test_a_host_resolving_to_a_private_address_is_refused_at_send_time(
    store, redis_client, keys, sink, make_forwarder
):
    # Saved as if its name had pointed elsewhere at creation (DNS rebinding).
    store.add_partner(Partner(partner_id="p1", url=sink.url("/p1"), allow_private=False))
    enqueue_job(redis_client, keys, "p1")
    [entry] = deliver_all(make_forwarder(), redis_client, keys, 1)
    assert sink.received() == []
    assert entry["result"] == "failed" and "private address" in entry["error"]


def test_stats_count_results_and_a_cumulative_latency_histogram(
    store, redis_client, keys, sink, make_forwarder
):
    add_partner(store, sink)
    for _ in range(3):
        enqueue_job(redis_client, keys, "p1")
    deliver_all(make_forwarder(), redis_client, keys, 3)
    stats = redis_client.hgetall(keys.stats(0))
    assert stats["delivery:p1:delivered"] == "3"
    assert stats["latency_count"] == "3"
    assert stats["latency_bucket:30000"] == "3"  # every attempt is under the top bucket
    counts = [int(stats.get(f"latency_bucket:{le}", 0)) for le in (5, 10, 25, 50, 100, 30000)]
    assert counts == sorted(counts)


def test_a_record_redis_refuses_does_not_hold_back_the_rest_of_its_batch(
    store, redis_client, keys, settings
):
    # One delivery_done call records a whole batch; Redis refusing one of its records
    # (here a time that is not a number) must cost only that record.
    from core.delivery import DELIVERED, Outcome
    from processors.forwarder.bookkeeping import Finished, Held, Recorder
    from storage.scripts import default_scripts

    for click in ("A", "B", "C"):
        enqueue_job(redis_client, keys, "p1", sample_payload(click_id=click))
    [(_stream, entries)] = redis_client.xreadgroup(
        FORWARDER_GROUP, "fw-test", {keys.forward_stream(0): ">"}, count=10
    )
    held = [Held(0, entry_id, f["job"], orjson.loads(f["job"]), 0.0) for entry_id, f in entries]
    ok = Outcome(DELIVERED, status_code=200, response_ms=3)
    batch = [Finished(item, None, None, ok, int(time.time() * 1000)) for item in held]
    batch[1].time_ms = "soon"  # type: ignore[assignment]
    recorder = Recorder(
        redis_client,
        keys,
        default_scripts(),
        schedule=settings.retry_schedule,
        retention_ms=settings.retention_ms,
    )
    answers = [answer for _finished, answer in recorder.record(batch, int(time.time() * 1000))]

    assert answers[0] == 1 and answers[2] == 1 and isinstance(answers[1], Exception)
    assert [orjson.loads(e["payload"])["click_id"] for e in forwarded(redis_client, keys)] == [
        "A",
        "C",
    ]
    pending = redis_client.xpending(keys.forward_stream(0), FORWARDER_GROUP)
    assert pending["pending"] == 1 and pending["min"] == held[1].entry_id


def test_a_malformed_job_becomes_a_dead_letter(store, redis_client, keys, make_forwarder):
    redis_client.xadd(keys.forward_stream(0), {"job": "not json"})
    forwarder = make_forwarder()
    until(lambda: redis_client.xlen(keys.dead_letters(0)), step=forwarder.process_batch)
    [(_id, letter)] = redis_client.xrange(keys.dead_letters(0))
    assert letter["kind"] == "delivery" and letter["data"] == "not json"
    assert letter["error"] == "malformed job"


def test_own_pending_jobs_are_delivered_first_after_a_restart(
    store, redis_client, keys, sink, make_forwarder
):
    add_partner(store, sink)
    enqueue_job(redis_client, keys, "p1", sample_payload(click_id="A"))
    # A previous run of consumer "fw-1" read the job and died before delivering it.
    redis_client.xreadgroup(FORWARDER_GROUP, "fw-1", {keys.forward_stream(0): ">"}, count=10)
    forwarder = make_forwarder("fw-1")
    deliver_all(forwarder, redis_client, keys, 1)
    assert sink.received()[0].params["click_id"] == "A"


def test_a_dead_consumers_jobs_are_claimed(
    store, redis_client, keys, settings, sink, make_forwarder
):
    add_partner(store, sink)
    for click in ("A", "B", "C"):
        enqueue_job(redis_client, keys, "p1", sample_payload(click_id=click))
    redis_client.xreadgroup(FORWARDER_GROUP, "dead-one", {keys.forward_stream(0): ">"}, count=10)
    forwarder = make_forwarder("alive", settings=settings.with_overrides(claim_idle_ms=1))
    deliver_all(forwarder, redis_client, keys, 3)
    assert sorted(r.params["click_id"] for r in sink.received()) == ["A", "B", "C"]
    assert redis_client.xpending(keys.forward_stream(0), FORWARDER_GROUP)["pending"] == 0


def test_two_forwarders_side_by_side_deliver_each_job_once(
    store, redis_client, keys, sink, make_forwarder
):
    add_partner(store, sink)
    for i in range(40):
        enqueue_job(redis_client, keys, "p1", sample_payload(click_id=f"C{i}"))
    first, second = make_forwarder("fw-a"), make_forwarder("fw-b")

    def both():
        first.process_batch(block=False)
        second.process_batch(block=False)

    until(lambda: len(forwarded(redis_client, keys)) >= 40, step=both)
    clicks = [r.params["click_id"] for r in sink.received()]
    assert sorted(clicks) == sorted(f"C{i}" for i in range(40))


def test_a_forwarder_reading_many_partitions_holds_no_more_than_its_capacity(
    store, redis_client, settings, sink, make_forwarder
):
    settings = settings.with_overrides(partitions=8)
    keys = Keys(settings.namespace, settings.partitions)
    ensure_groups(redis_client, keys)
    add_partner(store, sink)
    sink.respond("/p1", Reply(200, delay=0.05))
    for i in range(24):
        enqueue_job(redis_client, keys, "p1", sample_payload(click_id=f"C{i}"), partition=i % 8)
    forwarder = make_forwarder(settings=settings, concurrency=1)  # holds 2 jobs at most
    most = 0

    def step():
        nonlocal most
        forwarder.process_batch(block=False)
        # What it holds is what another forwarder would deliver again were it killed now.
        pending = sum(
            redis_client.xpending(keys.forward_stream(n), FORWARDER_GROUP)["pending"]
            for n in keys.all_partitions()
        )
        most = max(most, pending)

    until(lambda: len(forwarded(redis_client, keys)) >= 24, step=step, timeout=30)
    assert most <= 2
    assert sorted(r.params["click_id"] for r in sink.received()) == sorted(
        f"C{i}" for i in range(24)
    )


def test_stop_finishes_the_delivery_in_hand(store, redis_client, keys, sink, make_forwarder):
    add_partner(store, sink)
    sink.respond("/p1", Reply(200, delay=1.0))
    enqueue_job(redis_client, keys, "p1")
    forwarder = make_forwarder()
    runner = threading.Thread(target=forwarder.run)
    runner.start()
    sink.wait_for(1, path="/p1")
    forwarder.stop()  # what SIGTERM does
    runner.join(timeout=15)
    assert not runner.is_alive()
    [entry] = forwarded(redis_client, keys)
    assert entry["result"] == "delivered"
    assert redis_client.xpending(keys.forward_stream(0), FORWARDER_GROUP)["pending"] == 0


def test_the_command_delivers_and_exits_0_on_sigterm(store, redis_client, keys, settings, sink):
    add_partner(store, sink)
    enqueue_job(redis_client, keys, "p1")
    env = child_env(settings, POSTBACK_LEASE_MS=str(settings.lease_ms), POSTBACK_BLOCK_MS="100")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "scripts.cli",
            "forwarder",
            "--consumer",
            "cli-1",
            "--concurrency",
            "4",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    try:
        until(lambda: forwarded(redis_client, keys), timeout=20, message="the command's delivery")
        assert stop(proc, 15) == 0, proc.stderr.read().decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    assert len(sink.received("/p1")) == 1


def waiting(client, keys, consumer: str, quiet_ms: int = 300) -> bool:
    """True once ``consumer`` has read none of the streams for ``quiet_ms``: it is in its
    wait for new jobs (a step reads every partition, a few times a second while busy)."""
    idle = [
        c["idle"]
        for n in keys.all_partitions()
        for c in client.xinfo_consumers(keys.forward_stream(n), FORWARDER_GROUP)
        if c["name"] == consumer
    ]
    return len(idle) == keys.partitions and min(idle) >= quiet_ms


#: A wait far longer than the deadlines below. On a cluster a forwarder used to block on
#: one partition at a time for a share of it (100 s each, past the deadline).
LONG_BLOCK_MS = 400_000


@pytest.mark.timeout(400)
def test_an_idle_forwarder_takes_a_job_on_any_partition_at_once(store, settings, sink):
    settings = settings.with_overrides(partitions=4)
    keys = Keys(settings.namespace, settings.partitions)
    client = connect(settings)
    ensure_groups(client, keys)
    add_partner(store, sink)
    env = {
        **os.environ,
        "REDIS_URL": settings.redis_url,
        "POSTBACK_NAMESPACE": settings.namespace,
        "POSTBACK_PARTITIONS": "4",
        "POSTBACK_BLOCK_MS": str(LONG_BLOCK_MS),
        "POSTBACK_LEASE_MS": str(LONG_BLOCK_MS * 4),  # long enough not to cut the wait
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "scripts.cli", "forwarder", "--consumer", "idle-1"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    try:
        # Each job while the forwarder waits, idle, for the next; not in partition order,
        # so that no round-robin over the partitions happens to read each one in time.
        order = [0, 2, 1, 3]
        for i, n in enumerate(order):
            if i:
                until(lambda: waiting(client, keys, "idle-1"), timeout=60, message="idle")
            enqueue_job(client, keys, "p1", sample_payload(click_id=f"P{n}"), partition=n)
            sink.wait_for(i + 1, timeout=90)
        assert [r.params["click_id"] for r in sink.received()] == [f"P{n}" for n in order]
    finally:  # (SIGTERM would wait for the long read to end)
        proc.kill()
        proc.wait()
        client.close()


def test_the_command_refuses_bad_arguments_and_an_unreachable_redis():
    cli = [sys.executable, "-m", "scripts.cli", "forwarder"]
    bad = subprocess.run([*cli, "--concurrency", "0"], capture_output=True, text=True, timeout=30)
    assert bad.returncode != 0 and "concurrency" in bad.stderr
    env = {**os.environ, "REDIS_URL": "redis://127.0.0.1:1/0"}
    down = subprocess.run(cli, capture_output=True, text=True, timeout=30, env=env)
    assert down.returncode != 0 and "Redis unreachable" in down.stderr
    assert len(down.stderr.strip().splitlines()) == 1


def test_the_command_refuses_a_cpu_it_may_not_use(capsys):
    from scripts.cli import build_parser

    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["forwarder", "--cpu", "100000"])
    assert exited.value.code == 2 and "--cpu" in capsys.readouterr().err


@pytest.mark.skipif(
    not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
    reason="pinning needs Linux and two CPUs to tell",
)
def test_a_pinned_forwarder_delivers_from_that_cpu_only(store, redis_client, keys, settings, sink):
    from processors.forwarder.cli import pin_to_cpu
    from processors.forwarder.worker import Forwarder

    cpu = max(os.sched_getaffinity(0))
    made = []

    def start() -> None:  # in a thread of its own: pinning must not touch the test process
        pin_to_cpu(cpu)
        made.append(Forwarder(settings, redis_client, consumer="fw-pinned"))

    starter = threading.Thread(target=start)
    starter.start()
    starter.join()
    [forwarder] = made
    try:
        threads = [t for t in threading.enumerate() if t.name.startswith("deliver-")]
        assert len(threads) >= forwarder.concurrency
        pinned = [t for t in threads if os.sched_getaffinity(t.native_id) == {cpu}]
        assert len(pinned) == forwarder.concurrency
        add_partner(store, sink)
        enqueue_job(redis_client, keys, "p1")
        [entry] = deliver_all(forwarder, redis_client, keys, 1)
        assert entry["result"] == "delivered"
    finally:
        forwarder.close()


def test_the_worker_rides_out_a_redis_restart(tmp_path, sink):
    from core.config import Settings
    from scripts.embedded_redis import find_redis_server, free_port, start_redis_server
    from storage.keys import Keys
    from storage.redis_client import connect, ensure_groups
    from storage.repositories import Store
    from tests.sink import enqueue_job as enqueue

    binary = find_redis_server()
    if binary is None:
        pytest.skip("no redis-server binary to restart")
    port = free_port()
    server = start_redis_server(binary, port)
    settings = Settings(redis_url=server.url, namespace="restart", block_ms=100, claim_idle_ms=1000)
    keys = Keys(settings.namespace)
    client = connect(settings)
    try:
        ensure_groups(client, keys)
        store = Store(client, keys)
        add_partner(store, sink)
        from processors.forwarder.worker import Forwarder

        forwarder = Forwarder(settings, consumer="fw-restart")
        runner = threading.Thread(target=forwarder.run)
        runner.start()
        enqueue(client, keys, "p1", sample_payload(click_id="before"))
        sink.wait_for(1)
        server.stop()  # Redis goes away (and, without persistence, loses everything)
        server = start_redis_server(binary, port)
        add_partner(store, sink)
        enqueue(client, keys, "p1", sample_payload(click_id="after"))
        sink.wait_for(2, timeout=20)
        forwarder.stop()
        runner.join(timeout=15)
        assert not runner.is_alive()
        forwarder.close()
        assert [r.params["click_id"] for r in sink.received()] == ["before", "after"]
        assert urlsplit(forwarded(client, keys)[-1]["url"]).path == "/p1"
    finally:
        client.close()
        server.stop()
