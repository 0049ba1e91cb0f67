"""``python -m scripts.bench forwarder``: deliveries per second of one forwarder process.

Two cases against a local sink on 127.0.0.1 (an asyncio HTTP/1.1 keep-alive server in its
own process, so it does not share the forwarder's GIL):

* fast: the sink answers at once;
* slow: the sink answers after ``--delay-ms`` (50).

Jobs are preloaded onto the forward stream of a throwaway namespace, split evenly over
``--partners`` partners; one :class:`processors.forwarder.worker.Forwarder` then runs its
``process_batch`` loop until every job is recorded (attempt logged, stats counted) or
``--time-limit`` passes. Each case prints deliveries/s. The namespace is deleted after.
``--cpu N`` pins the forwarder to CPU N as ``postback forwarder --cpu N`` does (the sink
keeps its own process, free to run elsewhere).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import socket
import sys
import time
import uuid

import orjson
import requests

from core.config import Settings
from core.delivery_request import build_request
from core.partners import Partner
from processors.forwarder.cli import cpu_number, pin_to_cpu
from processors.forwarder.worker import Forwarder
from scripts.bench_util import Row, in_threads
from storage.keys import Keys
from storage.redis_client import connect, ensure_groups
from storage.repositories import Store

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"


# -- the sink (its own process) -----------------------------------------------------------
class _SinkProtocol(asyncio.Protocol):
    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.buffer = b""

    def connection_made(self, transport) -> None:
        self.transport = transport
        sock = transport.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            head_end = self.buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = self.buffer[:head_end].decode("latin-1")
            length = 0
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            end = head_end + 4 + length
            if len(self.buffer) < end:
                return
            self.buffer = self.buffer[end:]
            delay = self.delay_s if head.split(" ", 2)[1].startswith("/slow") else 0.0
            if delay:
                asyncio.get_running_loop().call_later(delay, self._answer)
            else:
                self._answer()

    def _answer(self) -> None:
        if not self.transport.is_closing():
            self.transport.write(RESPONSE)


def _serve(port: int, delay_s: float) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: _SinkProtocol(delay_s), "127.0.0.1", port, backlog=1024
        )
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def start_sink(delay_s: float) -> tuple[multiprocessing.Process, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = multiprocessing.get_context("spawn").Process(
        target=_serve, args=(port, delay_s), daemon=True
    )
    process.start()
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError("the bench sink did not start") from None
            time.sleep(0.05)
    return process, f"http://127.0.0.1:{port}"


# -- one case -----------------------------------------------------------------------------
def _job(i: int, partner_id: str, created: int) -> dict:
    return {
        "partner_id": partner_id,
        "payload": {
            "click_id": f"CLK-{i}",
            "status": "approved",
            "payout": "4.00",
            "currency": "USD",
            "offer_id": "VBFS6",
            "transaction_id": f"TXN-{i}",
            "conversion_id": f"cv0-{i:024d}",
            "user_id": "u1",
            "timestamp": created // 1000,
        },
        "log_id": f"{created}-{i}",
        "conversion_id": f"cv0-{i:024d}",
        "attempt": 1,
        "created": created,
    }


def run_case(
    base: Settings,
    sink_url: str,
    path: str,
    *,
    jobs: int,
    partners: int,
    time_limit: float,
    method: str = "GET",
) -> tuple[int, float, float]:
    """Deliver ``jobs`` jobs; returns (delivered, seconds, CPU seconds of this process)."""
    settings = base.with_overrides(namespace="bench" + uuid.uuid4().hex[:10])
    keys = Keys(settings.namespace, settings.partitions)
    client = connect(settings, socket_timeout=settings.block_ms / 1000 + 10)
    try:
        ensure_groups(client, keys)
        store = Store(client, keys)
        ids = [f"bench-{i}" for i in range(partners)]
        for pid in ids:
            store.add_partner(
                Partner.build(
                    pid,
                    url=f"{sink_url}{path}/{pid}",
                    method=method,
                    allow_private=True,
                    secret="s",
                )
            )
        pipe = client.pipeline(transaction=False)
        created = int(time.time() * 1000)
        for i in range(jobs):
            job = _job(i, ids[i % partners], created)
            pipe.xadd(
                keys.forward_stream(i % settings.partitions), {"job": orjson.dumps(job).decode()}
            )
            if len(pipe) >= 2000:
                pipe.execute()
        pipe.execute()

        def delivered() -> int:
            return sum(
                int(client.hget(keys.stats(n), f"delivery:{pid}:delivered") or 0)
                for n in keys.all_partitions()
                for pid in ids
            )

        forwarder = Forwarder(settings, client, consumer="bench")
        done, next_look = 0, 0.0
        started, cpu = time.perf_counter(), time.process_time()
        deadline = started + time_limit
        try:
            # Until every job is delivered: a step also records jobs put off for later.
            while done < jobs and time.perf_counter() < deadline:
                forwarder.process_batch(block=False)
                if time.perf_counter() >= next_look:
                    done, next_look = delivered(), time.perf_counter() + 0.02
            elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        finally:
            forwarder.close()
        return delivered(), elapsed, cpu
    finally:
        for key in client.scan_iter(match=keys.pattern(), count=1000):
            client.delete(key)
        client.close()


def _yardstick(sink_url: str, path: str, jobs: int, threads: int, method: str) -> float:
    """Deliveries/s of ``threads`` threads, each with its own Session, the same requests."""
    created = int(time.time() * 1000)
    url = f"{sink_url}{path}/bench-0"
    requests_ = [
        build_request(url, method, _job(i, "bench-0", created)["payload"], secret="s")
        for i in range(jobs)
    ]
    shares = [requests_[i::threads] for i in range(threads)]
    failed: list[int] = []

    def work(i: int) -> None:
        with requests.Session() as session:
            for request in shares[i]:
                response = session.request(
                    request.method, request.url, data=request.body, headers=request.headers
                )
                if response.status_code != 200:
                    failed.append(response.status_code)

    elapsed = in_threads(threads, work)
    if failed:
        raise RuntimeError(f"the sink answered {failed[0]} to the yardstick")
    return jobs / elapsed


def forwarder_row(base: Settings, *, jobs: int) -> Row:
    """One forwarder delivering ``jobs`` to ONE fast partner ÷ 8 threads with Sessions."""
    process, url = start_sink(0.0)
    try:
        yard = _yardstick(url, "/fast", jobs, 8, "POST")
        delivered, seconds, cpu = run_case(
            base, url, "/fast", jobs=jobs, partners=1, time_limit=120, method="POST"
        )
    finally:
        process.terminate()
        process.join(5)
    notes = [
        f"signed POST deliveries, {base.partner_max_inflight} in flight to the partner; "
        f"{cpu / max(delivered, 1) * 1e6:.0f} us CPU each"
    ]
    if delivered < jobs:
        notes.append(f"only {delivered} of {jobs} delivered in the time limit")
    return Row(
        f"one forwarder, {jobs:,} jobs to ONE fast partner",
        delivered / seconds,
        "deliveries/s",
        yard,
        "8 threads, each with its own requests.Session",
        0.5,
        notes=notes,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.bench forwarder", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--jobs", type=int, default=20000, help="jobs in the fast case")
    parser.add_argument("--slow-jobs", type=int, default=6000, help="jobs in the slow case")
    parser.add_argument("--delay-ms", type=float, default=50.0, help="the slow sink's answer time")
    parser.add_argument("--partners", type=int, default=8, help="partners the jobs are spread over")
    parser.add_argument("--concurrency", type=int, default=64, help="deliveries in flight")
    parser.add_argument("--time-limit", type=float, default=60.0, help="seconds per case, at most")
    parser.add_argument(
        "--cpu", type=cpu_number, default=None, help="pin the forwarder to this CPU"
    )
    args = parser.parse_args(argv)

    base = Settings.from_env().with_overrides(forward_concurrency=args.concurrency)
    process, url = start_sink(args.delay_ms / 1000)
    if args.cpu is not None:
        pin_to_cpu(args.cpu)  # after the sink started: it stays free to run elsewhere
    try:
        print(
            f"one forwarder, concurrency {args.concurrency}, {args.partners} partners "
            f"(at most {base.partner_max_inflight} in flight each), signed GET deliveries"
            + ("" if args.cpu is None else f", pinned to CPU {args.cpu}")
        )
        for name, path, jobs in (
            ("fast sink", "/fast", args.jobs),
            (f"{args.delay_ms:g} ms sink", "/slow", args.slow_jobs),
        ):
            delivered, seconds, cpu = run_case(
                base, url, path, jobs=jobs, partners=args.partners, time_limit=args.time_limit
            )
            note = "" if delivered == jobs else f" (only {delivered} of {jobs} in the time limit)"
            # CPU per delivery is the steadier figure on a busy machine: one process's
            # Python work runs on one core at a time (the GIL).
            print(
                f"{name:>12}: {delivered / seconds:6.0f} deliveries/s  ({delivered} in "
                f"{seconds:.2f} s; {cpu / max(delivered, 1) * 1e6:.0f} us CPU each, "
                f"{cpu / seconds:.2f} cores){note}"
            )
    finally:
        process.terminate()
        process.join(5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
