"""The latency case of ``python -m scripts.bench``: edge 200 → partner sink, at a steady rate.

``postback edge`` (as the Procfile runs it), ``postback matcher`` and ``postback forwarder``
run as in production, each its own process, on a throwaway namespace. A partner sink in
its own process notes when each delivery arrives. Postbacks for distinct clicks are sent
open-loop at ``rate`` per second (each on its schedule, whether or not the previous one
was answered) for ``seconds``; for each, the time from the edge's 200 to its arrival at
the sink is the latency. The figure is the 99th percentile.
"""

from __future__ import annotations

import asyncio
import http.client
import multiprocessing
import socket
import threading
import time
import urllib.parse

import orjson

from core.clicks import Click
from core.config import Settings
from core.offers import Offer
from core.partners import Partner
from core.sources import Source
from scripts.bench_util import (
    Row,
    child,
    env_for,
    free_port,
    namespace,
    postback_command,
    wait_for_port,
)
from storage.keys import Keys
from storage.redis_client import connect
from storage.repositories import Store, now_ms

TARGET_MS = 100.0
SENDERS = 8


# -- the sink (its own process) ---------------------------------------------------------
class _Sink(asyncio.Protocol):
    arrivals: dict[str, float] = {}

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.buffer = b""
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:  # GETs only: no bodies
            head, self.buffer = self.buffer[:end], self.buffer[end + 4 :]
            target = head.split(b" ", 2)[1].decode()
            if target.startswith("/dump"):
                body = orjson.dumps(self.arrivals)
            else:
                query = urllib.parse.parse_qs(urllib.parse.urlsplit(target).query)
                self.arrivals.setdefault(query.get("click_id", [""])[0], time.time())
                body = b"ok"
            self.transport.write(
                b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
            )


def _serve(port: int) -> None:
    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(
            _Sink, "127.0.0.1", port, backlog=1024
        )
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def _arrivals(port: int) -> dict[str, float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/dump")
    arrivals = orjson.loads(conn.getresponse().read())
    conn.close()
    return arrivals


# -- the load ---------------------------------------------------------------------------
def _send(port: int, key: str, click_ids: list[str], start: float, rate: float) -> dict:
    """Send each postback on its schedule from SENDERS threads; click_id → time of its 200."""
    answered: dict[str, float] = {}
    errors: list[str] = []

    def sender(offset: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for n in range(offset, len(click_ids), SENDERS):
            wait = start + n / rate - time.time()
            if wait > 0:
                time.sleep(wait)  # the open-loop schedule, not synchronisation
            query = f"click_id={click_ids[n]}&payout=5.00&status=approved&transaction_id=T{click_ids[n]}"
            try:
                conn.request("GET", f"/postback/{key}?{query}")
                response = conn.getresponse()
                response.read()
            except OSError as exc:
                errors.append(str(exc))
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                continue
            if response.status == 200:
                answered[click_ids[n]] = time.time()
            else:
                errors.append(str(response.status))

    threads = [threading.Thread(target=sender, args=(i,)) for i in range(SENDERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {"answered": answered, "errors": errors}


def _setup(settings: Settings, sink_port: int, count: int) -> tuple[str, list[str]]:
    client = connect(settings)
    keys = Keys(settings.namespace, settings.partitions)
    store = Store(client, keys)
    source = store.add_source(Source.build(name="latency"))
    store.add_offer(Offer.build("LAT-OFFER", revshare=80))
    store.add_partner(
        Partner.build(
            "lat-pub", url=f"http://127.0.0.1:{sink_port}/pb", scope="own", allow_private=True
        )
    )
    click_ids = [f"LAT-{i:06d}" for i in range(count)]
    pipe = client.pipeline(transaction=False)
    created = now_ms()
    for click_id in click_ids:
        click = Click(click_id, "LAT-OFFER", "lat-pub", f"u{len(pipe) % 97}", created=created)
        pipe.hset(keys.click(click_id), mapping=click.to_redis())
    pipe.execute()
    client.close()
    return source.key, click_ids


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def latency_row(base: Settings, *, rate: float, seconds: float, workers: str) -> Row:
    count = int(rate * seconds)
    warmup = 50
    sink_port = free_port()
    sink = multiprocessing.get_context("spawn").Process(target=_serve, args=(sink_port,))
    sink.daemon = True
    sink.start()
    try:
        with namespace(base) as settings:
            key, click_ids = _setup(settings, sink_port, count + warmup)
            port = free_port()
            env = env_for(settings)
            edge = postback_command("edge", "--host", "127.0.0.1", "--port", str(port))
            with (
                child([*edge, "--workers", workers], env) as edge_proc,
                child(postback_command("matcher"), env),
                child(postback_command("forwarder"), env),
            ):
                wait_for_port(sink_port, edge_proc)
                wait_for_port(port, edge_proc)
                # Warm up every process (imports, connections, caches), then measure.
                _send(port, key, click_ids[:warmup], time.time(), 100)
                _until_arrived(sink_port, click_ids[:warmup], 30)
                sent = _send(port, key, click_ids[warmup:], time.time() + 0.2, rate)
                arrivals = _until_arrived(sink_port, click_ids[warmup:], 60)
    finally:
        sink.terminate()
        sink.join(5)
    answered = sent["answered"]
    latencies = [(arrivals[cid] - t) * 1000 for cid, t in answered.items() if cid in arrivals]
    notes = [
        f"{count} postbacks at {rate:g}/s; p50 {_percentile(latencies, 0.5):.0f} ms, "
        f"max {max(latencies, default=float('nan')):.0f} ms"
    ]
    missing = len(answered) - len(latencies)
    if sent["errors"] or missing:
        notes.append(f"{len(sent['errors'])} edge errors, {missing} not delivered in time")
    return Row(
        f"edge 200 -> partner sink, p99 at {rate:g}/s",
        _percentile(latencies, 0.99),
        "ms",
        TARGET_MS,
        "the target, 100 ms",
        1.0,
        better="lower",
        notes=notes,
    )


def _until_arrived(port: int, click_ids: list[str], timeout: float) -> dict[str, float]:
    deadline = time.monotonic() + timeout
    while True:
        arrivals = _arrivals(port)
        if all(cid in arrivals for cid in click_ids) or time.monotonic() > deadline:
            return arrivals
        time.sleep(0.2)  # polling the sink, with a deadline
