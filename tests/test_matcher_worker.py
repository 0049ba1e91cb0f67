"""The matcher as a worker: own pending first, claiming a dead consumer's entries,
poison entries to the dead letters, signals, and a Redis that goes away and comes back."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
import redis

from core.config import Settings
from core.offers import Offer
from processors.matcher.step import GROUP, Matcher
from scripts.embedded_redis import find_redis_server, free_port, start_redis_server
from storage.keys import Keys
from storage.redis_client import connect, ensure_groups
from storage.repositories import Store
from storage.scripts import ScriptPipe, Scripts
from tests.sink import until
from tests.test_matcher import SOURCE, add_click, add_partner, drain, points, post, received

ROOT = Path(__file__).resolve().parent.parent


def wait_for(predicate, timeout: float = 20.0, what: str = "condition"):
    """Poll ``predicate`` until it returns something truthy (``tests.sink.until`` with the
    longer deadline a child process needs), or fail after ``timeout``."""
    return until(predicate, timeout=timeout, message=what)


def postback_command() -> list[str]:
    exe = shutil.which("postback")
    return [exe] if exe else [sys.executable, "-m", "scripts.cli"]


class Worker:
    """A ``postback matcher`` child process; its stderr goes to a file (never a full pipe)."""

    def __init__(self, settings: Settings, log_path: Path, *args: str, **env: str) -> None:
        environ = dict(os.environ)
        environ.update(
            REDIS_URL=settings.redis_url,
            POSTBACK_NAMESPACE=settings.namespace,
            POSTBACK_PARTITIONS=str(settings.partitions),
            POSTBACK_LEASE_MS=str(settings.lease_ms),
            POSTBACK_BLOCK_MS="100",
        )
        environ.update(env)  # a test's own values win
        self.log_path = log_path
        with open(log_path, "ab") as log_file:
            self.proc = subprocess.Popen(
                [*postback_command(), "matcher", *args],
                cwd=ROOT,
                env=environ,
                stdout=subprocess.DEVNULL,
                stderr=log_file,
            )
        self.pid = self.proc.pid

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def log(self) -> str:
        return self.log_path.read_text()


@pytest.fixture
def offer_and_partner(store):
    store.add_offer(Offer.build("REV80", revshare=80))
    add_partner(store, "PUB")
    return store


def pending_of(client, keys: Keys) -> int:
    return client.xpending(keys.input_stream(0), GROUP)["pending"]


def test_reads_own_pending_entries_before_new_ones(offer_and_partner, redis_client, settings, keys):
    for i in range(3):
        add_click(offer_and_partner, f"CLK-{i}")
    first = post(redis_client, keys, click_id="CLK-0", payout="1.00")
    # a previous run of this consumer read it and died before applying it
    redis_client.xreadgroup(GROUP, "worker-1", {keys.input_stream(0): ">"}, count=10)
    later = [post(redis_client, keys, click_id=f"CLK-{i}", payout="1.00") for i in (1, 2)]
    matcher = Matcher(redis_client, settings.with_overrides(matcher_batch=1), consumer="worker-1")

    assert matcher.process_batch() == 1
    assert [e["log_id"] for e in received(redis_client, keys)] == [first]
    drain(matcher)
    assert [e["log_id"] for e in received(redis_client, keys)] == [first, *later]
    assert pending_of(redis_client, keys) == 0


def test_claims_a_dead_consumers_entries_after_claim_idle(
    offer_and_partner, redis_client, settings, keys
):
    for i in range(7):
        add_click(offer_and_partner, f"CLK-{i}")
        post(redis_client, keys, click_id=f"CLK-{i}", payout="1.00")
    redis_client.xreadgroup(GROUP, "dead-consumer", {keys.input_stream(0): ">"}, count=100)
    live = Matcher(
        redis_client,
        settings.with_overrides(claim_idle_ms=200, matcher_batch=3),  # cursor loops 3 times
        consumer="live",
    )
    assert live.process_batch() == 0  # nothing new; the dead one's entries are not idle yet

    wait_for(lambda: live.claim_stale(0), what="entries to be claimed")

    assert points(offer_and_partner) == "5.60"
    assert pending_of(redis_client, keys) == 0
    assert len(received(redis_client, keys)) == 7


def test_poison_entry_goes_to_dead_letters_and_does_not_block_the_group(
    offer_and_partner, redis_client, settings, keys
):
    add_click(offer_and_partner, "CLK-OK")
    stream = keys.input_stream(0)
    bad = redis_client.xadd(
        stream, {"source": SOURCE, "method": "GET", "ip": "1.2.3.4", "params": "{not json"}
    )
    good = post(redis_client, keys, click_id="CLK-OK", payout="5.00")
    matcher = Matcher(
        redis_client,
        settings.with_overrides(max_deliveries=3, claim_idle_ms=30),
        consumer="m",
    )

    assert matcher.process_batch() == 2  # delivery 1: the bad one fails, the good one passes
    assert points(offer_and_partner) == "4.00"
    assert pending_of(redis_client, keys) == 1
    # deliveries 2 and 3 are claims once it is idle; the third failure moves it
    wait_for(
        lambda: matcher.claim_stale(0) >= 0 and redis_client.xlen(keys.dead_letters(0)),
        what="the dead letter",
    )

    [(_, dead)] = redis_client.xrange(keys.dead_letters(0))
    assert dead["kind"] == "postback" and dead["log_id"] == bad
    assert "decode" in dead["error"]
    assert orjson.loads(dead["data"])["params"] == "{not json"
    entries = {e["log_id"]: e for e in received(redis_client, keys)}
    assert entries[bad]["outcome"] == "dead-lettered" and entries[bad]["reason"] == dead["error"]
    assert entries[good]["outcome"] == "matched"
    assert pending_of(redis_client, keys) == 0 and redis_client.xlen(stream) == 0
    assert redis_client.hget(keys.stats(0), "outcome:dead-lettered") == "1"


def test_entry_whose_script_keeps_failing_is_dead_lettered(
    offer_and_partner, redis_client, settings, keys
):
    add_click(offer_and_partner, "CLK-CORRUPT")
    log_id = post(redis_client, keys, click_id="CLK-CORRUPT", payout="5.00", transaction_id="T")
    matcher = Matcher(redis_client, settings.with_overrides(max_deliveries=1), consumer="m")
    # corrupt the conversion this postback would move
    from core.conversions import conversion_id

    cid = conversion_id(0, SOURCE, transaction_id="T")
    redis_client.hset(keys.conversion(0, cid), "status", "paid")

    matcher.process_batch()

    [(_, dead)] = redis_client.xrange(keys.dead_letters(0))
    assert dead["log_id"] == log_id and "unknown status" in dead["error"]
    assert points(offer_and_partner) == "0.00"
    assert pending_of(redis_client, keys) == 0


def test_pending_entry_deleted_from_the_stream_is_acked(
    offer_and_partner, redis_client, settings, keys
):
    log_id = post(redis_client, keys, click_id="CLK-ANY")
    redis_client.xreadgroup(GROUP, "m", {keys.input_stream(0): ">"}, count=10)
    redis_client.xdel(keys.input_stream(0), log_id)

    assert Matcher(redis_client, settings, consumer="m").process_batch() == 1
    assert pending_of(redis_client, keys) == 0
    assert received(redis_client, keys) == []


def test_sigterm_finishes_the_batch_in_hand_and_exits_0(
    offer_and_partner, redis_client, settings, keys, tmp_path
):
    add_click(offer_and_partner, "CLK-S")
    pipe = redis_client.pipeline(transaction=False)
    for i in range(3000):
        pipe.xadd(
            keys.input_stream(0),
            {
                "source": SOURCE,
                "method": "GET",
                "ip": "1.2.3.4",
                "params": orjson.dumps(
                    {"click_id": "CLK-S", "status": "approved", "payout": "0.01",
                     "transaction_id": f"T{i}", "custom": {}}
                ).decode(),
            },
        )  # fmt: skip
    pipe.execute()
    worker = Worker(
        settings, tmp_path / "matcher.log", "--consumer", "sig-test", POSTBACK_MATCHER_BATCH="100"
    )
    try:
        wait_for(lambda: redis_client.xlen(keys.received_log(0)), what="the first batch")
        assert worker.stop(signal.SIGTERM) == 0, worker.log()
    finally:
        worker.kill()
    # every batch it read was applied and acked: nothing left pending, no half batch
    assert pending_of(redis_client, keys) == 0
    done = redis_client.xlen(keys.received_log(0))
    assert done % 100 == 0 and done > 0
    assert offer_and_partner.points_cents("u1") == done


def test_worker_default_consumer_name_is_host_and_pid(
    offer_and_partner, redis_client, settings, keys, tmp_path
):
    add_click(offer_and_partner, "CLK-W")
    worker = Worker(settings, tmp_path / "matcher.log")
    try:
        post(redis_client, keys, click_id="CLK-W", payout="5.00")
        wait_for(lambda: points(offer_and_partner) == "4.00", what="the postback to be applied")
        names = {c["name"] for c in redis_client.xinfo_consumers(keys.input_stream(0), GROUP)}
        assert names == {f"{socket.gethostname()}-{worker.pid}"}
        assert worker.stop(signal.SIGINT) == 0, worker.log()
    finally:
        worker.kill()


def test_matcher_command_fails_fast_when_redis_is_unreachable(settings):
    closed = f"redis://127.0.0.1:{free_port()}/0"
    result = subprocess.run(
        [*postback_command(), "matcher"],
        cwd=ROOT,
        env={**os.environ, "REDIS_URL": closed, "POSTBACK_NAMESPACE": settings.namespace},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    assert "Redis unreachable" in result.stderr


@pytest.mark.skipif(find_redis_server() is None, reason="needs a redis-server binary")
def test_worker_survives_redis_going_away_and_recreates_its_group(namespace, tmp_path):
    """A private redis-server is stopped and started again, empty (no persistence)."""
    binary = find_redis_server()
    port = free_port()
    server = start_redis_server(binary, port=port)
    settings = Settings(redis_url=server.url, namespace=namespace)
    keys = Keys(namespace)

    def world() -> tuple:
        client = connect(settings)
        ensure_groups(client, keys)
        store = Store(client, keys)
        store.add_offer(Offer.build("REV80", revshare=80))
        add_partner(store, "PUB")
        add_click(store, "CLK-R")
        return client, store

    client, store = world()
    worker = Worker(settings, tmp_path / "matcher.log")
    try:
        post(client, keys, click_id="CLK-R", payout="5.00", transaction_id="before")
        wait_for(lambda: store.points_cents("u1") == 400, what="the first postback")

        server.stop()
        client.close()
        server = start_redis_server(binary, port=port)  # same address, nothing in it
        client, store = world()
        post(client, keys, click_id="CLK-R", payout="10.00", transaction_id="after")

        wait_for(lambda: store.points_cents("u1") == 800, timeout=30, what="the worker to resume")
        assert worker.proc.poll() is None
        assert worker.stop() == 0, worker.log()
        assert "Redis unavailable" in worker.log()
    finally:
        worker.kill()
        client.close()
        server.stop()


def test_replies_lost_with_the_connection_are_recovered_by_rereading_own_pending(
    offer_and_partner, redis_client, settings, keys
):
    for i in range(3):
        add_click(offer_and_partner, f"CLK-{i}")
        post(redis_client, keys, click_id=f"CLK-{i}", payout="5.00")

    class LosingPipe(ScriptPipe):
        """Runs the first batch, then loses its replies with the connection."""

        lost = False

        def _run(self, calls):
            results = super()._run(calls)
            if not LosingPipe.lost:
                LosingPipe.lost = True
                raise redis.ConnectionError("Connection closed by server.")
            return results

    class LosingScripts(Scripts):
        def pipe(self, client, name):
            return LosingPipe(self, client, name)

    matcher = Matcher(redis_client, settings, consumer="m", overlap=True, scripts=LosingScripts())
    assert matcher.process_batch() == 3  # sent; replies not read yet
    wait_for(lambda: pending_of(redis_client, keys) == 0, what="the batch to run")

    with pytest.raises(redis.ConnectionError):
        matcher.flush()
    matcher.restart()  # what the worker does after a lost connection
    post(redis_client, keys, click_id="CLK-0", payout="5.00", transaction_id="later")
    drain(matcher)
    matcher.flush()

    assert points(offer_and_partner) == "16.00"  # 4 conversions × 4.00, none twice
    assert [e["outcome"] for e in received(redis_client, keys)] == ["matched"] * 4


def test_batch_refused_by_redis_stays_pending_without_counting_as_poison(
    offer_and_partner, redis_client, settings, keys
):
    from processors.matcher.step import RedisRefused

    add_click(offer_and_partner, "CLK-OOM")
    post(redis_client, keys, click_id="CLK-OOM", payout="5.00")
    matcher = Matcher(redis_client, settings.with_overrides(max_deliveries=1), consumer="m")

    class OutOfMemory:  # what EVALSHA answers when Redis is at maxmemory
        def send(self, calls):
            self.count = len(calls)

        def receive(self):
            return [
                redis.ResponseError("OOM command not allowed when used memory > 'maxmemory'")
            ] * self.count

        def reset(self):
            pass

    real, matcher._pipe = matcher._pipe, OutOfMemory()
    with pytest.raises(RedisRefused):
        matcher.process_batch()
    assert redis_client.xlen(keys.dead_letters(0)) == 0
    assert pending_of(redis_client, keys) == 1

    matcher._pipe = real
    matcher.restart()
    drain(matcher)
    assert points(offer_and_partner) == "4.00" and pending_of(redis_client, keys) == 0


#: A read far longer than any deadline below: partition 3 served before it could end is
#: served "at once". (A 5 s deadline failed now and then under CPU load: a speed check.)
#: On a cluster a worker used to block on one partition at a time for a share of the
#: wait (here 100 s each, past the deadline), so there too it must not wait its turn.
LONG_BLOCK_MS = 400_000


@pytest.mark.timeout(300)
def test_an_idle_worker_takes_a_postback_on_any_partition_at_once(settings, tmp_path):
    # A long wait (a lease long enough not to cut it short), on a single Redis or a
    # cluster: it must end as soon as any partition gets an entry.
    settings = settings.with_overrides(partitions=4)
    keys = Keys(settings.namespace, settings.partitions)
    client = connect(settings)

    def post_to(n: int, click_id: str) -> None:
        params = {"status": "approved", "click_id": click_id, "custom": {}}
        fields = {"source": SOURCE, "method": "GET", "ip": "198.51.100.7"}
        client.xadd(keys.input_stream(n), {**fields, "params": orjson.dumps(params).decode()})

    worker = Worker(
        settings,
        tmp_path / "matcher.log",
        POSTBACK_BLOCK_MS=str(LONG_BLOCK_MS),
        POSTBACK_LEASE_MS=str(LONG_BLOCK_MS * 4),
    )
    try:
        post_to(0, "NOPE-ready")
        wait_for(lambda: client.xlen(keys.received_log(0)), timeout=90, what="the worker serving")
        post_to(3, "NOPE-later")
        wait_for(lambda: client.xlen(keys.received_log(3)), timeout=90, what="partition 3")
    finally:  # (SIGTERM would wait for the long read to end)
        worker.kill()
        client.close()
