"""A partner that refuses connections, then answers 500, then hangs, then is back.

Its deliveries fail, it is paused and probed (every 3 s here); when a probe finds it
back, its whole backlog, the retries scheduled 30 s out included, is delivered within
a few seconds. Another partner's deliveries go on meanwhile, each within seconds of
its postback's 200.
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from storage.partner_health import paused_partners
from tests.faults.harness import Load, Network, add_catalogue, deliveries, undelivered, worker_env
from tests.procs import free_port
from tests.sink import sink_fixture, until  # noqa: F401 - fixtures

#: Generous bounds for a loaded 2-core machine; the defects they guard against are
#: tens of seconds (a retry 30 s out, a probe interval), not fractions of one.
BACK_WITHIN_S = 12.0
STEADY_WITHIN_S = 12.0


class FlakyPartner:
    """A partner's server on a fixed port: ``refuse`` (not listening), ``error``, ``hang``, ``ok``."""

    def __init__(self) -> None:
        self.port = free_port()
        self.mode = "refuse"
        self.changed = threading.Condition()
        self.seen: dict[str, int] = {}  # mode → requests that arrived in it
        self.delivered: list[tuple[float, dict]] = []  # (time answered 200, payload)
        self.server: ThreadingHTTPServer | None = None
        partner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with partner.changed:
                    partner.seen[partner.mode] = partner.seen.get(partner.mode, 0) + 1
                    # A hung request waits for the partner to change its mind.
                    partner.changed.wait_for(lambda: partner.mode != "hang", timeout=60)
                    mode = partner.mode
                status = 200 if mode == "ok" else 500
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                except OSError:
                    return
                if status == 200:
                    import orjson

                    with partner.changed:
                        partner.delivered.append((time.monotonic(), orjson.loads(body)))

            def log_message(self, *args) -> None:
                pass

        self.handler = Handler

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/pb"

    def switch(self, mode: str) -> None:
        if mode != "refuse" and self.server is None:
            server = ThreadingHTTPServer(("127.0.0.1", self.port), self.handler)
            server.daemon_threads = True
            server.request_queue_size = 1024
            threading.Thread(
                target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
            ).start()
            self.server = server
        with self.changed:
            self.mode = mode
            self.changed.notify_all()

    def close(self) -> None:
        self.switch("ok")
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


@pytest.fixture
def flaky():
    partner = FlakyPartner()
    yield partner
    partner.close()


@pytest.fixture
def network(settings):
    env = worker_env(
        settings.redis_url,
        settings.namespace,
        settings.partitions,
        POSTBACK_RETRY_SCHEDULE="30,120,600",
        POSTBACK_PAUSE_AFTER_FAILURES="5",
        POSTBACK_PROBE_INTERVAL="3",
        POSTBACK_FORWARD_TIMEOUT="30",
        POSTBACK_FORWARD_CONNECT_TIMEOUT="2",
    )
    network = Network(env)
    yield network
    network.close()


def test_a_partner_back_from_an_outage_gets_its_backlog_at_once_and_others_never_wait(
    network, store, redis_client, keys, sink, flaky, record_property
):
    source = add_catalogue(store, {"steady": sink.url("/steady"), "flaky": flaky.url}, 2000)
    network.start()
    load = Load(network.base, source.key, 2000, threads=2, per_thread_per_s=5).start()
    try:
        until(
            lambda: [p for p in paused_partners(redis_client, keys) if p["partner_id"] == "flaky"],
            timeout=60,
            message="the refusing partner paused",
        )
        flaky.switch("error")
        until(lambda: flaky.seen.get("error"), timeout=30, message="a probe answered 500")
        flaky.switch("hang")
        until(lambda: flaky.seen.get("hang"), timeout=30, message="a probe hanging")
        load.stop()
        flaky.switch("ok")  # the hanging probe is answered 200 now: the partner is back
        until(lambda: flaky.delivered, timeout=30, message="the probe that finds it back")
        back_at = flaky.delivered[0][0]

        def flaky_got():
            with flaky.changed:
                return [payload for _, payload in flaky.delivered]

        until(
            lambda: (
                not undelivered(load, deliveries_of(flaky_got()))
                and not undelivered(load, deliveries(sink.received("/steady")))
            ),
            timeout=90,
            message="everything delivered to both partners",
        )
        last_at = max(at for at, _ in flaky.delivered)
        assert last_at - back_at <= BACK_WITHIN_S, (last_at - back_at, network.output())

        arrived = {r.json()["transaction_id"]: r.received for r in sink.received("/steady")}
        waits = [arrived[f"T{n}"] - at for n, at in load.accepted.items()]
        assert max(waits) <= STEADY_WITHIN_S, max(waits)
        record_property("backlog_after_back_s", round(last_at - back_at, 2))
        print(
            f"\nfault suite, partner outage: {len(load.accepted)} accepted; the flaky partner's "
            f"backlog was in {last_at - back_at:.1f} s after the probe found it back; "
            f"the steady partner's deliveries came {max(waits):.1f} s after the 200 at most"
        )
    finally:
        load.stop()


def deliveries_of(payloads):
    from collections import Counter

    return Counter(p.get("transaction_id") for p in payloads)
