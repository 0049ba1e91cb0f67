"""The system on a three-master Redis Cluster (SPEC §9): the checks of "done when".

The cluster is the session's (``cluster`` fixture: three ``redis-server
--cluster-enabled yes`` on loopback joined by ``redis-cli --cluster create``).
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections import Counter

import orjson
import pytest
import redis
from falcon import testing
from redis.cluster import RedisCluster

from core.clicks import Click
from core.offers import Offer
from core.partners import Partner
from core.sources import Source
from edge.app import create_app
from processors.leases import holders
from processors.matcher.step import GROUP, Matcher
from scripts import lag
from scripts.cli import main as cli_main
from storage.keys import Keys
from storage.redis_client import connect, delete_namespace, ensure_groups, is_cluster
from storage.repositories import Store
from tests.procs import child_env
from tests.sink import Reply, enqueue_job, forwarded, sample_payload, sink_fixture  # noqa: F401
from tests.test_matcher_worker import Worker, wait_for


@pytest.fixture
def cluster_settings(settings, cluster):
    return settings.with_overrides(redis_url=cluster.url, partitions=16)


@pytest.fixture
def cluster_client(cluster_settings):
    client = connect(cluster_settings)
    yield client
    delete_namespace(client, cluster_settings.namespace)
    client.close()


@pytest.fixture
def cluster_store(cluster_client, cluster_settings) -> Store:
    keys = Keys(cluster_settings.namespace, cluster_settings.partitions)
    ensure_groups(cluster_client, keys)
    return Store(cluster_client, keys)


def test_the_same_url_setting_finds_a_cluster_by_itself(cluster_settings, cluster):
    client = connect(cluster_settings)
    assert is_cluster(client) and isinstance(client, RedisCluster)
    assert len(client.get_primaries()) == 3
    # Any node will do as the seed.
    other = connect(
        cluster_settings.with_overrides(redis_url=f"redis://127.0.0.1:{cluster.ports[2]}/0")
    )
    assert is_cluster(other)
    other.close()
    client.close()


def test_a_single_redis_gets_a_plain_client(settings):
    client = connect(settings)
    if is_cluster(client):
        pytest.skip("this run's REDIS_URL is the cluster")
    assert type(client) is redis.Redis


def test_one_busy_source_spreads_over_partitions_and_every_node(
    cluster_settings, cluster_client, cluster_store
):
    source = cluster_store.add_source(Source.build(name="busy"))
    app = create_app(cluster_settings, cluster_client)
    body = b"\n".join(
        orjson.dumps({"click_id": f"CLK-{i}", "payout": "1.00", "transaction_id": f"T{i}"})
        for i in range(3000)
    )
    reply = testing.TestClient(app).simulate_post(
        f"/postback/{source.key}/batch", body=body, content_type="application/x-ndjson"
    )
    assert reply.status_code == 200, reply.text
    assert reply.json["accepted"] == 3000

    keys = cluster_store.keys
    lengths = {n: cluster_client.xlen(keys.input_stream(n)) for n in keys.all_partitions()}
    assert sum(lengths.values()) == 3000  # before any matcher ran
    used = [n for n, length in lengths.items() if length]
    assert len(used) >= 8
    nodes = {cluster_client.get_node_from_key(keys.input_stream(n)).name for n in used}
    assert nodes == {node.name for node in cluster_client.get_primaries()}
    log_ids = {r["log_id"] for r in reply.json["results"]}
    assert len(log_ids) == 3000


# -- the whole system on 16 partitions over three nodes ----------------------------------------
def _world(store: Store, clicks: int) -> Source:
    store.add_offer(Offer.build("REV", revshare=50))
    store.add_partner(
        Partner.build("PUB", url="http://127.0.0.1:9/pb", scope="own", allow_private=True)
    )
    created = store.get_offer("REV").created
    pipe = store.r.pipeline(transaction=False)
    for i in range(clicks):
        click = Click(f"CLK-{i}", "REV", "PUB", f"user-{i % 50}", created=created)
        pipe.hset(store.keys.click(click.click_id), mapping=click.to_redis())
    pipe.execute()
    return store.add_source(Source.build(name="busy"))


def _post_batch(app, source: Source, items: range) -> None:
    body = b"\n".join(
        orjson.dumps(
            {"click_id": f"CLK-{i}", "payout": f"{1 + i % 9}.00", "transaction_id": f"T{i}"}
        )
        for i in items
    )
    reply = testing.TestClient(app).simulate_post(
        f"/postback/{source.key}/batch", body=body, content_type="application/x-ndjson"
    )
    assert reply.status_code == 200 and reply.json["accepted"] == len(items), reply.text


def _expected_cents(items: range) -> dict[str, int]:
    expected: dict[str, int] = {}
    for i in items:
        user = f"user-{i % 50}"
        expected[user] = expected.get(user, 0) + (1 + i % 9) * 100 // 2
    return expected


def _received(client, keys: Keys) -> int:
    return sum(client.xlen(keys.received_log(n)) for n in keys.all_partitions())


def test_when_one_of_two_matchers_dies_the_other_takes_its_partitions_and_drains_them(
    cluster_settings, cluster_client, cluster_store, tmp_path
):
    keys = cluster_store.keys
    source = _world(cluster_store, 3000)
    env = {"POSTBACK_CLAIM_IDLE_MS": "60000", "POSTBACK_MATCHER_BATCH": "100"}
    first = Worker(cluster_settings, tmp_path / "a.log", "--consumer", "m-a", **env)
    second = Worker(cluster_settings, tmp_path / "b.log", "--consumer", "m-b", **env)
    try:
        wait_for(
            lambda: Counter(holders(cluster_client, keys, GROUP).values()) == {"m-a": 8, "m-b": 8},
            timeout=30,
            what="the two matchers to share the 16 partitions",
        )
        app = create_app(cluster_settings, cluster_client)
        _post_batch(app, source, range(3000))
        wait_for(lambda: _received(cluster_client, keys) >= 300, timeout=60, what="a start")
        first.stop(signal.SIGKILL, timeout=10)  # dies mid-stream, entries left pending

        wait_for(
            lambda: set(holders(cluster_client, keys, GROUP).values()) == {"m-b"},
            timeout=30,
            what="the survivor to take every partition",
        )
        wait_for(
            lambda: (
                _received(cluster_client, keys) >= 3000
                and not any(
                    cluster_client.xlen(keys.input_stream(n)) for n in keys.all_partitions()
                )
            ),
            timeout=120,
            what="every postback to be processed",
        )
    finally:
        for worker in (first, second):
            if worker.proc.poll() is None:
                worker.stop(signal.SIGTERM, timeout=20)
    assert _received(cluster_client, keys) == 3000  # none lost, none applied twice
    balances = {u: cluster_store.points_cents(u) for u in _expected_cents(range(3000))}
    assert balances == _expected_cents(range(3000))
    for n in keys.all_partitions():
        assert cluster_client.xpending(keys.input_stream(n), GROUP)["pending"] == 0


def test_lag_export_and_admin_api_see_every_partition(
    cluster_settings, cluster_client, cluster_store, monkeypatch, capsys
):
    keys = cluster_store.keys
    source = _world(cluster_store, 400)
    settings = cluster_settings.with_overrides(admin_token="s3cret-admin-token-16")
    app = create_app(settings, cluster_client)
    _post_batch(app, source, range(400))

    report = lag.collect(cluster_client, keys)
    matcher_rows = [g for g in report["groups"] if g["group"] == GROUP]
    assert len(matcher_rows) == 16
    assert sum(g["lag"] for g in matcher_rows) == 400

    matcher = Matcher(cluster_client, settings, consumer="m-1")
    while sum(matcher.process_batch(n) for n in keys.all_partitions()):
        pass
    report = lag.collect(cluster_client, keys)
    assert sum(g["lag"] + g["pending"] for g in report["groups"] if g["group"] == GROUP) == 0
    assert sum(g["lag"] for g in report["groups"] if g["group"] == "forwarder") == 400

    client = testing.TestClient(app)
    reply = client.simulate_get(
        "/api/admin/received-postbacks",
        params={"per_page": 50},
        headers={"Authorization": "Bearer s3cret-admin-token-16"},
    )
    assert reply.status_code == 200 and reply.json["total"] == 400
    times = [row["time_ms"] for row in reply.json["logs"]]
    assert times == sorted(times, reverse=True)

    monkeypatch.setenv("REDIS_URL", settings.redis_url)
    monkeypatch.setenv("POSTBACK_NAMESPACE", settings.namespace)
    monkeypatch.setenv("POSTBACK_PARTITIONS", "16")
    assert cli_main(["export", "--log", "received", "--format", "jsonl"]) == 0
    rows = [orjson.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 400
    assert [r["time_ms"] for r in rows] == sorted(r["time_ms"] for r in rows)
    assert {r["outcome"] for r in rows} == {"matched"}
    assert cli_main(["export", "--log", "conversions", "--format", "jsonl"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 400
    assert {cluster_store.get_conversion(r["conversion_id"])["status"] for r in rows} == {
        "approved"
    }


def test_an_edge_started_before_the_cluster_answered_switches_to_a_cluster_client(
    cluster_settings, cluster_client, cluster_store
):
    source = cluster_store.add_source(Source.build(name="late"))
    # What EdgeContext.build makes when the node did not answer at start: a plain
    # client, and a note to find out once Redis answers.
    plain = redis.Redis.from_url(cluster_settings.redis_url, decode_responses=True)
    app = create_app(cluster_settings, plain)
    app.ctx.redetect, app.ctx.groups_ready = True, False
    client = testing.TestClient(app)
    replies = [
        client.simulate_get(f"/postback/{source.key}", query_string=f"click_id=C{i}")
        for i in range(20)
    ]
    assert [r.status_code for r in replies] == [200] * 20
    assert is_cluster(app.ctx.redis)
    plain.close()
    app.ctx.redis.close()


def _forwarder(settings, consumer: str, log_path) -> subprocess.Popen:
    env = child_env(
        settings,
        POSTBACK_LEASE_MS=str(settings.lease_ms),
        POSTBACK_BLOCK_MS="100",
        POSTBACK_CLAIM_IDLE_MS="60000",  # a take-over, not the idle claim, must do it
    )
    with open(log_path, "ab") as log_file:
        return subprocess.Popen(
            [sys.executable, "-m", "scripts.cli", "forwarder", "--consumer", consumer]
            + ["--concurrency", "8"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log_file,
        )


def test_a_sigkilled_forwarder_loses_nothing_and_nothing_is_recorded_twice(
    cluster_settings, cluster_client, cluster_store, sink, tmp_path
):
    keys = cluster_store.keys
    cluster_store.add_partner(
        Partner.build("p1", url=sink.url("/p1"), scope="all", allow_private=True)
    )
    sink.respond("/p1", Reply(200, delay=0.02))
    jobs = 600
    for i in range(jobs):
        payload = sample_payload(conversion_id=f"cv{i % 16}-{i:024d}", transaction_id=f"T{i}")
        enqueue_job(cluster_client, keys, "p1", payload, partition=i % 16)
    first = _forwarder(cluster_settings, "f-a", tmp_path / "a.log")
    second = _forwarder(cluster_settings, "f-b", tmp_path / "b.log")
    try:
        wait_for(lambda: len(sink.received("/p1")) >= 150, timeout=60, what="deliveries")
        first.kill()  # SIGKILL: its jobs in flight stay pending under its name
        first.wait(10)

        def delivered() -> set[str]:
            log = [e for n in keys.all_partitions() for e in forwarded(cluster_client, keys, n)]
            return {e["conversion_id"] for e in log if e["result"] == "delivered"}

        wait_for(lambda: len(delivered()) == jobs, timeout=90, what="every job recorded")
        wait_for(
            lambda: set(holders(cluster_client, keys, "forwarder").values()) == {"f-b"},
            timeout=30,
            what="the survivor to hold every partition",
        )
    finally:
        for proc in (first, second):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(20)
    log = [e for n in keys.all_partitions() for e in forwarded(cluster_client, keys, n)]
    recorded = Counter(e["conversion_id"] for e in log if e["result"] == "delivered")
    assert len(recorded) == jobs and set(recorded.values()) == {1}  # each recorded once
    sent = Counter(
        r.params.get("conversion_id") or r.json()["conversion_id"] for r in sink.received("/p1")
    )
    assert set(sent) == set(recorded)  # nothing lost
    # At least once: only jobs the dead one held (delivered, not yet recorded: at most
    # its capacity, twice its concurrency of 8) can have been sent twice.
    assert sum(sent.values()) - jobs <= 16
    for n in keys.all_partitions():
        assert cluster_client.xpending(keys.forward_stream(n), "forwarder")["pending"] == 0
