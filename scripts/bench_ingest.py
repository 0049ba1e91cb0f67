"""The edge's cases of ``python -m scripts.bench``: single GETs under wrk, and batches.

* edge: single-postback GETs under ``wrk -t2 -c32`` against ``postback edge`` (as the
  Procfile runs it), ÷ a hello-world Falcon app on stock ``waitress-serve`` (default
  settings) under the same load;
* batch: postbacks/s ingested in 1,000-item ``/batch`` requests, ÷ redis-py pipelining
  the same XADDs (same fields, same sizes), both from the same number of clients.
"""

from __future__ import annotations

import http.client
import re
import shutil
import subprocess
import sys
import time

import orjson

from core.config import Settings
from core.postback import validate_item
from core.sources import Source
from scripts.bench_util import (
    Row,
    child,
    env_for,
    free_port,
    in_threads,
    namespace,
    postback_command,
    wait_for_port,
)
from storage.keys import Keys
from storage.redis_client import connect
from storage.repositories import Store

WRK_HINT = "wrk is not installed: on Debian/Ubuntu `sudo apt-get install -y wrk`"
QUERY = "click_id=CLK-1&payout=3.50&status=approved&sub1=bench"


class BenchError(RuntimeError):
    """A case could not be measured (a tool is missing, a server did not start)."""


def wrk(url: str, seconds: float, threads: int = 2, connections: int = 32) -> dict:
    """Run wrk; returns requests/s, non-2xx count and the latency line it printed."""
    binary = shutil.which("wrk")
    if binary is None:
        raise BenchError(WRK_HINT)
    argv = [binary, f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "--latency", url]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60).stdout
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if rate is None:
        raise BenchError(f"could not read wrk's output:\n{out}")
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:(.*)", out)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.MULTILINE)
    return {
        "rate": float(rate[1]),
        "non_2xx": int(bad[1]) if bad else 0,
        "socket_errors": errors[1].strip() if errors else "",
        "p99": p99[1] if p99 else "?",
    }


def wait_for_edge(port: int, proc: subprocess.Popen, threads: int, timeout: float = 60.0) -> None:
    """Wait until the edge serves: its port open and, under a supervisor, every worker
    serving too (each has started its waitress threads). The supervisor binds the port
    before its workers have imported anything; on a loaded machine a worker takes
    seconds to start, which the measurement must not include."""
    wait_for_port(port, proc, timeout)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        workers = _children(proc.pid)
        if not workers or all(_threads(pid) > threads for pid in workers):
            return
        time.sleep(0.1)  # workers still importing; polled with a deadline
    raise BenchError(f"the edge's workers did not start within {timeout:.0f} s")


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(child) for child in f.read().split()]
    except OSError:  # not Linux: the port alone tells
        return []


def _threads(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("Threads:"))
    except (OSError, StopIteration):
        return 0


def _measure(url: str, seconds: float) -> dict:
    wrk(url, 1)  # warm up: connections, imports, caches
    return wrk(url, seconds)


def edge_row(base: Settings, *, seconds: float, workers: str, threads: int) -> Row:
    notes = []
    port = free_port()
    hello = [sys.executable, "-m", "waitress", f"--listen=127.0.0.1:{port}"]
    with child([*hello, "scripts.bench_hello:app"]) as proc:
        wait_for_port(port, proc)
        yard = _measure(f"http://127.0.0.1:{port}/postback/hello?{QUERY}", seconds)

    with namespace(base) as settings:
        client = connect(settings)
        source = Store(client, Keys(settings.namespace, settings.partitions)).add_source(
            Source.build(name="bench")
        )
        port = free_port()
        argv = postback_command("edge", "--host", "127.0.0.1", "--port", str(port))
        argv += ["--workers", workers, "--threads", str(threads)]
        with child(argv, env_for(settings)) as proc:
            wait_for_edge(port, proc, threads)
            got = _measure(f"http://127.0.0.1:{port}/postback/{source.key}?{QUERY}", seconds)
        client.close()
    for name, result in (("edge", got), ("hello", yard)):
        if result["non_2xx"] or result["socket_errors"]:
            notes.append(
                f"{name}: {result['non_2xx']} non-2xx, socket errors {result['socket_errors']}"
            )
    notes.append(f"p99 edge {got['p99']}, hello {yard['p99']}")
    notes.append(f"edge --workers {workers} --threads {threads}")
    return Row(
        "edge, single-postback GETs, wrk -t2 -c32",
        got["rate"],
        "req/s",
        yard["rate"],
        "hello-world Falcon on stock waitress-serve",
        2.0,
        notes=notes,
    )


# -- batch ------------------------------------------------------------------------------
def _items(count: int) -> list[dict]:
    return [
        {
            "click_id": f"CLK-{i:06d}",
            "status": "approved",
            "payout": "3.50",
            "transaction_id": f"TXN-{i}",
            "sub1": "bench",
        }
        for i in range(count)
    ]


def batch_row(
    base: Settings, *, requests: int, size: int, clients: int, workers: str, threads: int
) -> Row:
    items = _items(size)
    body = orjson.dumps(items)
    entries = [orjson.dumps(validate_item(item)).decode() for item in items]
    total = requests * clients * size
    notes = [f"{clients} clients x {requests} requests of {size} items"]

    with namespace(base) as settings:
        keys = Keys(settings.namespace, settings.partitions)
        client = connect(settings)
        source = Store(client, keys).add_source(Source.build(name="bench"))
        port = free_port()
        argv = postback_command("edge", "--host", "127.0.0.1", "--port", str(port))
        argv += ["--workers", workers, "--threads", str(threads)]
        path = f"/postback/{source.key}/batch"

        def post(_i: int) -> None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            for _ in range(requests):
                conn.request("POST", path, body, {"Content-Type": "application/json"})
                response = conn.getresponse()
                answer = response.read()
                if response.status != 200 or orjson.loads(answer)["accepted"] != size:
                    raise BenchError(f"batch answered {response.status}: {answer[:200]!r}")
            conn.close()

        with child(argv, env_for(settings)) as proc:
            wait_for_edge(port, proc, threads)
            post(0)  # warm up
            edge_s = in_threads(clients, post)

        def pipeline(i: int) -> None:
            conn = connect(settings)
            for _ in range(requests):
                pipe = conn.pipeline(transaction=False)
                for n, params in enumerate(entries):
                    stream = keys.input_stream((i + n) % settings.partitions)
                    fields = {"source": source.key, "method": "BATCH", "ip": "127.0.0.1"}
                    pipe.xadd(stream, {**fields, "params": params})
                pipe.execute()
            conn.close()

        pipeline(0)  # warm up
        yard_s = in_threads(clients, pipeline)
        client.close()
    return Row(
        f"batch ingest, {size}-item requests",
        total / edge_s,
        "postbacks/s",
        total / yard_s,
        "redis-py pipelining the same XADDs",
        1.5,
        notes=notes,
    )
