"""``postback dev``: the whole system on this machine in one command.

Starts a Redis when none answers at ``REDIS_URL`` (a ``redis-server`` binary, else
fakeredis with Lua), then the edge, a matcher and a forwarder as child processes, plus a
small demo partner sink that prints every delivery it receives. It seeds a demo source,
offer, partner and click so the printed curl line works as pasted. Ctrl-C stops
everything it started.
"""

from __future__ import annotations

import argparse
import contextlib
import http.server
import os
import secrets
import signal
import subprocess
import sys
import threading
import time

from core.config import Settings, usable_cpus
from core.offers import Offer
from core.partners import Partner
from core.sources import Source
from core.validation import ValidationError
from edge.server import workers_argument
from scripts import dev_state
from scripts.embedded_redis import RunningRedis, ensure_redis
from storage.keys import Keys
from storage.redis_client import connect, ensure_groups
from storage.repositories import NotFound, Store

DEMO_SOURCE_KEY = "dev-demo-source-key-0001"
DEMO_OFFER = "DEMO-OFFER"
DEMO_PARTNER = "demo-partner"
DEMO_USER = "demo-user"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="edge address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="edge port (default $PORT or 8080)")
    parser.add_argument(
        "--workers",
        type=workers_argument,
        help="edge processes (default $POSTBACK_EDGE_WORKERS, else auto: one per CPU, "
        "the fastest here)",
    )
    parser.add_argument("--no-demo", action="store_true", help="do not seed demo records")


def run(settings: Settings, args: argparse.Namespace) -> int:
    redis_server = ensure_redis(settings.redis_url, allow_fake=True)
    # The admin API and page are on in dev: with the operator's token, else a new one.
    settings = settings.with_overrides(
        redis_url=redis_server.url,
        admin_token=settings.admin_token or secrets.token_urlsafe(18),
    )
    port = args.port or settings.port
    edge_workers = args.workers if args.workers is not None else settings.edge_workers
    edge_workers = edge_workers or usable_cpus()
    children: list[subprocess.Popen] = []
    sink = _DemoSink() if not args.no_demo else None
    try:
        state = dev_state.publish(settings, redis_server.kind)
        client = connect(settings)
        ensure_groups(client, Keys(settings.namespace, settings.partitions))
        curl = _seed_demo(settings, client, args.host, port, sink) if sink else None
        env = {
            **os.environ,
            "REDIS_URL": redis_server.url,
            "POSTBACK_ADMIN_TOKEN": settings.admin_token,
        }
        for argv in (
            ["edge", "--host", args.host, "--port", str(port), "--workers", str(edge_workers)],
            ["matcher"],
            ["forwarder"],
        ):
            children.append(subprocess.Popen([sys.executable, "-m", "scripts.cli", *argv], env=env))
        _wait_for_edge(args.host, port, children[0])
        _banner(redis_server, settings, state, args.host, port, sink, curl)
        return _supervise(children)
    finally:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()
        if sink:
            sink.stop()
        dev_state.withdraw()
        redis_server.stop()


def _seed_demo(settings: Settings, client, host: str, port: int, sink: _DemoSink) -> str:
    store = Store(client, Keys(settings.namespace, settings.partitions))
    with contextlib.suppress(ValidationError):
        store.add_source(Source.build(name="Demo source", key=DEMO_SOURCE_KEY))
    with contextlib.suppress(ValidationError):
        store.add_offer(
            Offer.build(DEMO_OFFER, revshare=80, url="https://example.com/landing?c={click_id}")
        )
    partner = Partner.build(
        DEMO_PARTNER, url=sink.url, scope="own", allow_private=True, name="Demo partner"
    )
    try:
        store.update_partner(DEMO_PARTNER, partner)
    except NotFound:
        store.add_partner(partner)
    for kind, record_id in (
        ("source", DEMO_SOURCE_KEY),
        ("offer", DEMO_OFFER),
        ("partner", DEMO_PARTNER),
    ):
        store.set_active(kind, record_id, True)
    click = store.add_click(offer_id=DEMO_OFFER, partner_id=DEMO_PARTNER, user_id=DEMO_USER)
    return (
        f'curl "http://{host}:{port}/postback/{DEMO_SOURCE_KEY}?click_id={click.click_id}'
        f'&status=approved&payout=5.00&transaction_id=TXN-{click.click_id[-6:]}"'
    )


def _wait_for_edge(host: str, port: int, edge: subprocess.Popen, timeout: float = 60.0) -> None:
    """Until the edge answers ``GET /health``: its port is open (the parent binds it) well
    before its workers have imported the app, and the banner's curl line must work."""
    import http.client

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if edge.poll() is not None:
            raise SystemExit(f"postback dev: the edge exited with code {edge.returncode}")
        conn = http.client.HTTPConnection(host, port, timeout=max(0.2, deadline - time.monotonic()))
        try:
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return
        except (OSError, http.client.HTTPException):  # not up yet, or reset by a restart
            pass
        finally:
            conn.close()
        time.sleep(0.1)
    raise SystemExit(
        f"postback dev: the edge did not answer on {host}:{port} within {timeout:.0f} s"
    )


def _banner(
    redis_server: RunningRedis,
    settings: Settings,
    state,
    host: str,
    port: int,
    sink,
    curl: str | None,
) -> None:
    if redis_server.kind == "external":
        data = (
            f"  data      in the Redis at {redis_server.url} (namespace {settings.namespace});"
            " it stays after postback dev stops"
        )
    else:
        data = (
            f"  data      in the memory of an embedded {redis_server.kind} at {redis_server.url},"
            " nothing on disk: it is gone when postback dev stops"
        )
    lines = [
        "",
        f"postback dev: Redis {redis_server.url}",
        data,
        f"  edge      http://{host}:{port}   (health: /health, docs: /openapi.json)",
        f"  admin     http://{host}:{port}/admin and /api/admin/... with the token below",
        f"  token     export POSTBACK_ADMIN_TOKEN={settings.admin_token}",
        f"  other terminals: postback commands there use this Redis while REDIS_URL is unset"
        f" ({state})",
    ]
    if sink:
        lines += [
            f"  partner   {DEMO_PARTNER} -> {sink.url} (deliveries are printed below)",
            "",
            "Send a postback:",
            f"  {curl}",
            f"Then: postback admin user show {DEMO_USER}",
            "A new click for another try: "
            f"postback admin click add --offer {DEMO_OFFER} --partner {DEMO_PARTNER} --user {DEMO_USER}",
        ]
    lines += ["Ctrl-C stops everything.", ""]
    print("\n".join(lines), flush=True)


def _supervise(children: list[subprocess.Popen]) -> int:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(0.5):
        for child in children:
            if child.poll() is not None and child.returncode != 0:
                print(
                    f"postback dev: {' '.join(child.args[3:])} exited with code {child.returncode}",
                    file=sys.stderr,
                )
                return 1
    print("postback dev: stopping", flush=True)
    return 0


class _DemoSink:
    """A partner endpoint on a free loopback port that prints each delivery."""

    def __init__(self) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode(errors="replace") if length else ""
                print(f"[demo partner] {self.command} {self.path} {body}".rstrip(), flush=True)
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            do_GET = do_POST = _answer

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        host, port = self.server.server_address[:2]
        self.url = f"http://{host}:{port}/postback"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
