"""Redis unreachable: 503 with Retry-After, nothing half-written, and recovery on its own.

An outage is staged with a small TCP relay in front of the real Redis: stopping the relay
cuts every connection and refuses new ones; starting it again on the same port brings
Redis back, as a restart or a network blip would.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
import time
from urllib.parse import urlsplit

import orjson
import pytest
from falcon import testing

from core.offers import Offer
from core.partners import Partner
from core.sources import Source
from edge.app import create_app
from storage.repositories import Store
from tests.conftest import ON_CLUSTER

# A TCP relay in front of one node is how these tests cut Redis off; a cluster client
# learns the nodes' own addresses from the node and would go around it.
pytestmark = pytest.mark.skipif(ON_CLUSTER, reason="relays one node: single Redis only")


class Relay:
    """A TCP relay from a local port to Redis that can be cut and restored."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._sockets: list[socket.socket] = []
        self._stop = threading.Event()

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        listener.setblocking(False)
        self._listener = listener
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(5)
        for sock in [self._listener, *self._sockets]:
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.close()
        self._sockets.clear()
        self._listener = None

    def _run(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self._listener, selectors.EVENT_READ, None)
        try:
            while not self._stop.is_set():
                for key, _ in sel.select(timeout=0.05):
                    if key.data is None:
                        client, _ = self._listener.accept()
                        upstream = socket.create_connection(self.target)
                        self._sockets += [client, upstream]
                        sel.register(client, selectors.EVENT_READ, upstream)
                        sel.register(upstream, selectors.EVENT_READ, client)
                        continue
                    try:
                        data = key.fileobj.recv(65536)
                    except OSError:
                        data = b""
                    if data:
                        key.data.sendall(data)
                    else:
                        for sock in (key.fileobj, key.data):
                            with contextlib.suppress(KeyError, ValueError):
                                sel.unregister(sock)
                            sock.close()
        finally:
            sel.close()


@pytest.fixture
def relay(settings):
    url = urlsplit(settings.redis_url)
    relay = Relay((url.hostname or "127.0.0.1", url.port or 6379))
    yield relay
    relay.stop()


@pytest.fixture
def edge_via_relay(settings, relay):
    """Make the edge app, talking to Redis through ``relay``: a falcon test client
    (the app is made when called, so a test can start the relay first or not at all)."""
    db = urlsplit(settings.redis_url).path or "/0"
    apps = []

    def make() -> testing.TestClient:
        apps.append(
            create_app(settings.with_overrides(redis_url=f"redis://127.0.0.1:{relay.port}{db}"))
        )
        return testing.TestClient(apps[-1])

    yield make
    for app in apps:
        app.ctx.redis.close()


def assert_503(resp):
    assert resp.status_code == 503, resp.text
    assert resp.headers["retry-after"] == "5"
    assert resp.json == {"status": "error", "error": "storage unavailable, retry later"}


def poll_until(check, deadline_s: float = 10.0):
    deadline = time.monotonic() + deadline_s
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.02)  # polling with a deadline, not a fixed wait


def test_every_path_answers_503_when_redis_is_unreachable(edge_via_relay):
    client = edge_via_relay()  # relay never started: connection refused
    key = "k" * 24
    assert_503(client.simulate_get(f"/postback/{key}", query_string="click_id=c"))
    assert_503(client.simulate_post(f"/postback/{key}", json={"click_id": "c"}))
    assert_503(client.simulate_post(f"/postback/{key}/batch", json=[{"click_id": "c"}]))
    assert_503(client.simulate_get("/click/O1", query_string="partner=p&user=u"))
    resp = client.simulate_get("/ready")
    assert resp.status_code == 503 and resp.headers["retry-after"] == "5"
    # Validation needs no Redis: a bad postback is still told what is wrong.
    assert client.simulate_get(f"/postback/{key}", query_string="x=1").status_code == 400
    assert client.simulate_get("/health").status_code == 200


def test_the_edge_recovers_by_itself(store, relay, edge_via_relay, redis_client, keys):
    source = store.add_source(Source.build(name="flaky"))
    store.add_offer(Offer.build("O1", fixed="1.00"))
    store.add_partner(Partner.build("p1", url="https://pub.example/pb"))
    relay.start()
    client = edge_via_relay()
    url = f"/postback/{source.key}"
    assert client.simulate_get(url, query_string="click_id=before").status_code == 200

    relay.stop()
    assert_503(client.simulate_get(url, query_string="click_id=during"))
    assert_503(client.simulate_post(f"{url}/batch", json=[{"click_id": "during-batch"}]))
    assert client.simulate_get("/ready").status_code == 503

    relay.start()
    assert poll_until(
        lambda: client.simulate_get(url, query_string="click_id=after").status_code == 200
    )
    assert client.simulate_get("/ready").status_code == 200
    resp = client.simulate_get("/click/O1", query_string="partner=p1&user=u1")
    assert resp.status_code == 200
    clicks = [
        orjson.loads(fields["params"])["click_id"]
        for _, fields in redis_client.xrange(keys.input_stream(0))
    ]
    assert clicks[0] == "before" and clicks[-1] == "after"
    assert "during" not in clicks and "during-batch" not in clicks


def test_a_redis_restart_between_requests_fails_none(
    store, relay, edge_via_relay, redis_client, keys
):
    source = store.add_source(Source.build(name="restarted"))
    relay.start()
    client = edge_via_relay()
    url = f"/postback/{source.key}"
    assert client.simulate_get(url, query_string="click_id=one").status_code == 200
    relay.stop()  # every open connection is closed by the far side...
    relay.start()  # ...and Redis is back before the next postback arrives
    assert client.simulate_get(url, query_string="click_id=two").status_code == 200
    assert redis_client.xlen(keys.input_stream(0)) == 2


def test_groups_are_created_once_redis_is_back(relay, edge_via_relay, redis_client, keys):
    # Not the ``store`` fixture: it creates the groups itself.
    source = Store(redis_client, keys).add_source(Source.build(name="late"))
    client = edge_via_relay()  # Redis unreachable at start
    assert not redis_client.exists(keys.input_stream(0))
    relay.start()
    resp = poll_until(
        lambda: client.simulate_get(f"/postback/{source.key}", query_string="click_id=c")
    )
    assert resp.status_code == 200
    groups = redis_client.xinfo_groups(keys.input_stream(0))
    assert [g["name"] for g in groups] == ["matcher"]
    assert redis_client.xinfo_groups(keys.forward_stream(0))[0]["name"] == "forwarder"


def test_a_redis_error_is_503_and_writes_nothing(settings, store, redis_client, keys):
    source = store.add_source(Source.build(name="broken"))
    stream = keys.input_stream(0)
    app = create_app(settings)
    redis_client.delete(stream)
    redis_client.set(stream, "not a stream")  # the script must refuse before any XADD
    try:
        client = testing.TestClient(app)
        items = [{"click_id": "a"}, {"click_id": "b"}]
        assert_503(client.simulate_post(f"/postback/{source.key}/batch", json=items))
        assert redis_client.get(stream) == "not a stream"
    finally:
        app.ctx.redis.close()
