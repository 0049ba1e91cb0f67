"""Matcher throughput on a local three-master Redis Cluster, with 1, 2 and 3 matchers.

    python -m scripts.bench cluster [--postbacks 30000] [--processes 1,2,3]

Starts its own cluster on loopback (``scripts.local_cluster``), preloads postbacks from
one source spread over the 16 partitions as the edge routes them (by conversion
identity), starts N ``postback matcher`` processes and times them from the first entry
processed to the last, so process start-up is not counted. Leases rebalance while they
run (``POSTBACK_LEASE_MS`` 1500 here, so a newcomer's share moves within half a second).
Prints a table with the total and the per-process rate. On a 2-core machine shared with
Redis (three nodes) a third matcher cannot add much: say so beside the figures.
"""

from __future__ import annotations

import argparse
import os
import time

import orjson

from core.clicks import Click
from core.config import Settings
from core.conversions import routing_identity
from core.offers import Offer
from core.partners import Partner
from scripts.bench_util import child, env_for, namespace, postback_command
from scripts.local_cluster import start_cluster
from storage.keys import Keys
from storage.redis_client import connect, ensure_groups
from storage.repositories import Store, now_ms

SOURCE_KEY = "benchClusterSource012345"
CHUNK = 2000


def preload(client, keys: Keys, count: int) -> None:
    store = Store(client, keys)
    store.add_offer(Offer.build("OFFER-REV", revshare=80))
    store.add_partner(
        Partner.build("pub-own", url="http://127.0.0.1:9/pb", scope="own", allow_private=True)
    )
    created = now_ms()
    for start in range(0, count, CHUNK):
        pipe = client.pipeline(transaction=False)
        for i in range(start, min(start + CHUNK, count)):
            click = Click(
                f"CLK-{i:08d}", "OFFER-REV", "pub-own", f"user-{i % 5000}", created=created
            )
            pipe.hset(keys.click(click.click_id), mapping=click.to_redis())
            params = {"click_id": click.click_id, "payout": "5.00", "transaction_id": f"T{i}"}
            n = keys.partition_of(routing_identity(SOURCE_KEY, params))
            fields = {"source": SOURCE_KEY, "method": "GET", "ip": "203.0.113.7"}
            fields["params"] = orjson.dumps(params).decode()
            pipe.xadd(keys.input_stream(n), fields)
        pipe.execute()


def _processed(client, keys: Keys) -> int:
    pipe = client.pipeline(transaction=False)
    for n in keys.all_partitions():
        pipe.xlen(keys.received_log(n))
    return sum(pipe.execute())


def run_once(base: Settings, processes: int, postbacks: int) -> float:
    """Postbacks per second of ``processes`` matchers draining ``postbacks``."""
    with namespace(base, partitions=16, lease_ms=1500) as settings:
        keys = Keys(settings.namespace, settings.partitions)
        client = connect(settings, socket_timeout=60)
        ensure_groups(client, keys)
        preload(client, keys, postbacks)
        env = env_for(settings, POSTBACK_LEASE_MS="1500", POSTBACK_BLOCK_MS="100")
        children = [
            child(postback_command("matcher", "--consumer", f"m{i}"), env) for i in range(processes)
        ]
        procs = [c.__enter__() for c in children]
        try:
            deadline = time.monotonic() + 600
            while (done := _processed(client, keys)) == 0:
                if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                    raise RuntimeError("the matchers did not start")
                time.sleep(0.01)  # polling the start, with a deadline
            started = time.perf_counter()
            while done < postbacks:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"only {done} of {postbacks} processed")
                time.sleep(0.01)
                done = _processed(client, keys)
            return postbacks / (time.perf_counter() - started)
        finally:
            for c in reversed(children):
                c.__exit__(None, None, None)
            client.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.bench cluster")
    parser.add_argument("--postbacks", type=int, default=30_000)
    parser.add_argument("--processes", default="1,2,3", help="matcher counts to run")
    args = parser.parse_args(argv)
    counts = [int(part) for part in args.processes.split(",")]
    print(f"starting a local 3-master cluster ({os.cpu_count()} CPUs on this machine) ...")
    cluster = start_cluster()
    try:
        base = Settings.from_env().with_overrides(redis_url=cluster.url)
        rows = [(m, run_once(base, m, args.postbacks)) for m in counts]
    finally:
        cluster.stop()
    print()
    print("| matchers | postbacks/s (all) | per process |")
    print("|---|---|---|")
    for m, rate in rows:
        print(f"| {m} | {rate:,.0f} | {rate / m:,.0f} |")
    print()
    print(
        f"{args.postbacks:,} postbacks of one source over 16 partitions on 3 masters; "
        f"{os.cpu_count()} CPUs shared by the matchers and all three Redis nodes, so more "
        "processes than cores cannot scale: figures are noisy on a shared machine."
    )
    return 0
