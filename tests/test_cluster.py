"""The system on a three-master Redis Cluster (SPEC §9): the checks of "done when".

The cluster is the session's (``cluster`` fixture: three ``redis-server
--cluster-enabled yes`` on loopback joined by ``redis-cli --cluster create``).
"""

from __future__ import annotations

import orjson
import pytest
import redis
from falcon import testing
from redis.cluster import RedisCluster

from core.entities import Source
from edge.app import create_app
from storage.keys import Keys
from storage.redis_client import connect, delete_namespace, ensure_groups, is_cluster
from storage.repositories import Store


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
    other = cluster_settings.with_overrides(redis_url=f"redis://127.0.0.1:{cluster.ports[2]}/0")
    assert is_cluster(connect(other))
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
