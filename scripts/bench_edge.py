"""Edge throughput: single-postback GETs per second through waitress, on loopback.

    python -m scripts.bench edge [--requests 20000] [--clients 4] [--threads 8] [--hello]

Starts ``postback edge`` in a subprocess on a free loopback port with a throwaway
namespace on ``REDIS_URL``, creates a source, fires the requests from ``--clients``
processes (keep-alive connections, a minimal HTTP client so the load generator spends
little of the machine's CPU), prints requests/s and deletes the namespace. ``--hello``
measures a hello-world Falcon app on the same waitress and harness instead, as the
baseline. The client processes share the machine with the server: the figure is for
the whole box, not the server alone.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import socket
import subprocess
import sys
import time
import uuid

from core.config import Settings
from core.sources import Source
from scripts.bench_util import free_port, wait_until
from storage.keys import Keys
from storage.redis_client import connect, delete_namespace
from storage.repositories import Store


def _serve_hello(port: int, threads: int) -> None:
    """A hello-world Falcon app on stock waitress: the ceiling to compare against."""
    import falcon
    import waitress

    class Hello:
        def on_get(self, req, resp, key=None):
            resp.data = b'{"status":"success"}'

    app = falcon.App()
    app.add_route("/health", Hello())
    app.add_route("/postback/{key}", Hello())
    waitress.serve(app, host="127.0.0.1", port=port, threads=threads, _quiet=True)


def _wait_ready(port: int, proc: subprocess.Popen) -> None:
    def healthy() -> bool:
        status, sock = _request(socket.create_connection(("127.0.0.1", port), 1), b"/health")
        sock.close()
        return status == 200

    wait_until(healthy, proc, "the server did not answer /health", 15.0)


def _request(sock: socket.socket, path: bytes) -> tuple[int, socket.socket]:
    sock.sendall(b"GET " + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed the connection")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed the connection")
        body += chunk
    return int(head.split(b" ", 2)[1]), sock


def _client(args: tuple) -> dict:
    port, path_prefix, count, start_at, deadline = args
    while time.time() < start_at:  # every client starts together
        time.sleep(0.001)
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    statuses: dict[int, int] = {}
    done = 0
    pid = os.getpid()
    for i in range(count):
        if time.time() > deadline:
            break
        path = b"%s?click_id=CLK-%d-%d&payout=3.50&status=approved&sub1=bench" % (
            path_prefix,
            pid,
            i,
        )
        try:
            status, sock = _request(sock, path)
        except OSError:
            sock = socket.create_connection(("127.0.0.1", port))
            status = 0
        statuses[status] = statuses.get(status, 0) + 1
        done += 1
    sock.close()
    return {"done": done, "statuses": statuses, "finished": time.time()}


def _cpu_seconds(pid: int) -> tuple[float, float] | None:
    """(user, system) CPU seconds of a process (Linux /proc), or None elsewhere."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        tick = os.sysconf("SC_CLK_TCK")
        return int(fields[11]) / tick, int(fields[12]) / tick
    except (OSError, ValueError, IndexError):
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.bench edge")
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--clients", type=int, default=4, help="client processes")
    parser.add_argument("--threads", type=int, default=8, help="waitress threads")
    parser.add_argument("--max-seconds", type=float, default=120.0, help="stop after this long")
    parser.add_argument("--hello", action="store_true", help="hello-world Falcon baseline")
    parser.add_argument("--serve-hello", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_hello:
        _serve_hello(args.serve_hello, args.threads)
        return 0

    settings = Settings.from_env().with_overrides(namespace="bench" + uuid.uuid4().hex[:10])
    port = free_port()
    env = {**os.environ, "REDIS_URL": settings.redis_url, "POSTBACK_NAMESPACE": settings.namespace}
    client = connect(settings)
    if args.hello:
        command = [sys.executable, "-m", "scripts.bench_edge", "--serve-hello", str(port)]
        command += ["--threads", str(args.threads)]
        path_prefix = b"/postback/hello"
    else:
        command = [sys.executable, "-m", "scripts.cli", "edge", "--host", "127.0.0.1"]
        command += ["--port", str(port), "--threads", str(args.threads)]
        source = Store(client, Keys(settings.namespace)).add_source(Source.build(name="bench"))
        path_prefix = b"/postback/" + source.key.encode()
    server = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)
    try:
        _wait_ready(port, server)
        per_client = args.requests // args.clients
        start_at = time.time() + 0.5
        deadline = start_at + args.max_seconds
        jobs = [(port, path_prefix, per_client, start_at, deadline)] * args.clients
        cpu_before = _cpu_seconds(server.pid)
        with multiprocessing.Pool(args.clients) as pool:
            results = pool.map(_client, jobs)
        cpu_after = _cpu_seconds(server.pid)
        elapsed = max(r["finished"] for r in results) - start_at
        statuses: dict[int, int] = {}
        for result in results:
            for status, n in result["statuses"].items():
                statuses[status] = statuses.get(status, 0) + n
        done = sum(r["done"] for r in results)
        what = "hello-world falcon" if args.hello else "postback edge"
        print(
            f"{what}: {done} GETs in {elapsed:.2f} s = {done / elapsed:,.0f} req/s "
            f"({args.clients} client processes, {args.threads} waitress threads, "
            f"{os.cpu_count()} CPUs); statuses {statuses}"
        )
        if cpu_before is not None and cpu_after is not None and done:
            user, system = (
                (a - b) / done * 1e6 for a, b in zip(cpu_after, cpu_before, strict=True)
            )
            print(f"server process CPU per request: {user:.0f} us user + {system:.0f} us system")
        if not args.hello:
            stream = Keys(settings.namespace).input_stream(0)
            print(f"input stream holds {client.xlen(stream)} entries")
        return 0 if statuses.get(200, 0) == done else 1
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
        delete_namespace(client, settings.namespace)


if __name__ == "__main__":
    sys.exit(main())
