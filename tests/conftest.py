"""Shared fixtures: a real Redis per test in its own namespace, cleaned up after.

``REDIS_URL`` (default redis://127.0.0.1:6379/0) names the server; every test gets a
fresh key namespace, so tests never see each other's keys, even when run side by side.

``POSTBACK_TEST_CLUSTER=1`` runs the same tests against a three-master Redis Cluster
started for the session (``scripts.local_cluster``) instead: ``.ci/run`` runs the
integration tests of the edge, matcher, forwarder, lag, export and admin that way too.
The ``cluster`` fixture gives the cluster tests (``test_cluster.py``) that cluster in
any run, started on first use.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid

import hypothesis
import pytest
import redis
from falcon import testing

from core.config import Settings
from core.sources import Source
from scripts.embedded_redis import answers, ensure_redis
from scripts.local_cluster import LocalCluster, start_cluster
from storage.keys import Keys
from storage.redis_client import connect, delete_namespace, ensure_groups
from storage.repositories import Store

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
ON_CLUSTER = os.environ.get("POSTBACK_TEST_CLUSTER", "") not in ("", "0")

# Property-based tests (hypothesis, schemathesis) run the same examples every time: a
# test that fails now and then is a defect, and a found failure must fail again on the
# next run. No deadline: a loaded 2-core machine is slow, not wrong.
hypothesis.settings.register_profile(
    "postback", derandomize=True, deadline=None, database=None, print_blob=True
)
hypothesis.settings.load_profile("postback")
_started = None
_STATE_HOME = tempfile.mkdtemp(prefix="postback-test-state-")
_cluster: LocalCluster | None = None


def pytest_configure(config):
    """Start a throwaway redis-server when none answers, so a fresh machine can test;
    with ``POSTBACK_TEST_CLUSTER=1`` start the session's cluster and test against it.

    Child processes (``postback ...`` commands) inherit the test layout: one partition
    and short leases, as the ``settings`` fixture has, unless a test says otherwise."""
    global REDIS_URL, _started
    os.environ.setdefault("POSTBACK_PARTITIONS", "1")
    os.environ.setdefault("POSTBACK_LEASE_MS", "1500")
    # `postback dev` run by a test publishes its Redis for second terminals
    # (scripts/dev_state.py): into a directory of the session's own, never the user's.
    os.environ["POSTBACK_STATE_DIR"] = _STATE_HOME
    if ON_CLUSTER:
        REDIS_URL = os.environ["REDIS_URL"] = _session_cluster().url
        return
    if answers(REDIS_URL):
        return
    _started = ensure_redis(REDIS_URL)
    REDIS_URL = os.environ["REDIS_URL"] = _started.url


def pytest_unconfigure(config):
    shutil.rmtree(_STATE_HOME, ignore_errors=True)
    if _started is not None:
        _started.stop()
    if _cluster is not None:
        _cluster.stop()


def _session_cluster() -> LocalCluster:
    global _cluster
    if _cluster is None:
        _cluster = start_cluster()
    return _cluster


@pytest.fixture(scope="session")
def cluster() -> LocalCluster:
    """A three-master cluster on loopback for the whole session (stopped at the end)."""
    return _session_cluster()


@pytest.fixture
def namespace() -> str:
    return "t" + uuid.uuid4().hex[:12]


@pytest.fixture
def settings(namespace) -> Settings:
    """Settings for a test: its own namespace, short blocks, a fast retry schedule.

    One partition, so a test can name its streams (``keys.input_stream(0)``); the
    partitioned layout has its own tests (``test_partitions``, ``test_cluster``).
    """
    return Settings(
        redis_url=REDIS_URL,
        namespace=namespace,
        partitions=1,
        lease_ms=1500,  # a dead worker's partitions are taken over within ~2 s
        block_ms=100,
        retry_schedule=(1, 1, 1),
        claim_idle_ms=1000,
    )


@pytest.fixture
def redis_client(settings):
    client = connect(settings)
    try:
        client.ping()
    except redis.ConnectionError:
        pytest.fail(f"no Redis at {settings.redis_url}: start one (see README)")
    yield client
    delete_namespace(client, settings.namespace)
    client.close()


@pytest.fixture
def keys(settings) -> Keys:
    return Keys(settings.namespace, settings.partitions)


@pytest.fixture
def store(redis_client, keys) -> Store:
    ensure_groups(redis_client, keys)
    return Store(redis_client, keys)


@pytest.fixture
def app(settings, store):
    """The edge app on the test's namespace (groups created), closed afterwards."""
    from edge.app import create_app

    app = create_app(settings)
    yield app
    app.ctx.redis.close()


@pytest.fixture
def client(app) -> testing.TestClient:
    """falcon's in-process client for ``app``: no sockets."""
    return testing.TestClient(app)


@pytest.fixture
def cli_env(monkeypatch, settings, redis_client):
    """Point the ``postback`` command, run in this process, at this test's namespace."""
    monkeypatch.setenv("REDIS_URL", settings.redis_url)
    monkeypatch.setenv("POSTBACK_NAMESPACE", settings.namespace)
    monkeypatch.setenv("POSTBACK_PARTITIONS", str(settings.partitions))
    return redis_client


@pytest.fixture
def admin(cli_env, store, capsys):
    """``postback admin ARGS...`` in this process: ``(exit code, stdout, stderr)``."""
    from scripts.cli import main

    def run(*argv: str) -> tuple[int, str, str]:
        try:
            code = main(["admin", *argv])
        except SystemExit as exc:  # argparse
            code = exc.code
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture
def source(store) -> Source:
    """An active source (any caller IP) with a fresh random key."""
    return store.add_source(Source.build(name="source-" + uuid.uuid4().hex[:8]))
