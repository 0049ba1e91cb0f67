"""Matcher throughput: preload postbacks, time one matcher draining them.

    python -m scripts.bench matcher [--postbacks 100000] [--batch 500]

In the table of ``python -m scripts.bench`` (:func:`matcher_row`) the yardstick is a
minimal loop over the same preload: XREADGROUP of 500, then one pipelined EVALSHA per
entry of a script doing SET NX, HINCRBY, XADD and XACK: what any consumer that writes
each entry atomically costs, with no matching at all.

Uses a throwaway namespace on ``REDIS_URL`` (deleted afterwards, also on Ctrl-C). The
mix: 80% approved, 10% pending, 5% rejected, 3% unknown click, 2% test; each click's
partner has scope ``own`` and one more partner has scope ``all``, so a conversion
makes two forward jobs. Prints postbacks per second.
"""

from __future__ import annotations

import argparse
import time
import uuid

import orjson

from core.clicks import Click
from core.config import Settings
from core.offers import Offer
from core.partners import Partner
from processors.matcher.step import Matcher
from scripts.bench_util import Row
from storage.keys import MATCHER_GROUP, Keys
from storage.redis_client import connect, ensure_groups
from storage.repositories import Store, now_ms

SOURCE_KEY = "benchSourceKey0123456789"
CHUNK = 5000


def _status(i: int) -> str:
    slot = i % 100
    if slot < 80:
        return "approved"
    if slot < 90:
        return "pending"
    if slot < 95:
        return "rejected"
    if slot < 98:
        return "unknown"
    return "test"


def preload(client, keys: Keys, count: int) -> None:
    store = Store(client, keys)
    store.add_offer(Offer.build("OFFER-REV", revshare=80))
    store.add_offer(Offer.build("OFFER-FIXED", fixed="2.50"))
    for partner_id, scope in (("pub-own", "own"), ("net-all", "all")):
        store.add_partner(
            Partner.build(partner_id, url="http://127.0.0.1:9/pb", scope=scope, allow_private=True)
        )
    created = now_ms()
    stream = keys.input_stream(keys.partition_of(SOURCE_KEY))
    for start in range(0, count, CHUNK):
        pipe = client.pipeline(transaction=False)
        for i in range(start, min(start + CHUNK, count)):
            click_id = f"CLK-{i:08d}"
            offer_id = "OFFER-REV" if i % 2 else "OFFER-FIXED"
            click = Click(click_id, offer_id, "pub-own", f"user-{i % 5000}", created=created)
            click.subs = {"sub1": f"s{i % 7}"}
            pipe.hset(keys.click(click_id), mapping=click.to_redis())
            status = _status(i)
            params = {
                "click_id": click_id if status != "unknown" else f"MISSING-{i}",
                "status": "approved" if status == "unknown" else status,
                "payout": f"{1 + i % 20}.{i % 100:02d}",
                "transaction_id": f"TXN-{i}",
                "custom": {"country": "US", "age": 20 + i % 40},
            }
            fields = {"source": SOURCE_KEY, "method": "GET", "ip": "203.0.113.7"}
            fields["params"] = orjson.dumps(params).decode()
            pipe.xadd(stream, fields)
        pipe.execute()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.bench matcher")
    parser.add_argument("--postbacks", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=None, help="default: POSTBACK_MATCHER_BATCH")
    args = parser.parse_args(argv)

    base = Settings.from_env()
    settings = base.with_overrides(
        namespace="bench" + uuid.uuid4().hex[:10],
        partitions=1,
        matcher_batch=args.batch or base.matcher_batch,
    )
    keys = Keys(settings.namespace, settings.partitions)
    client = connect(settings, socket_timeout=60)
    try:
        ensure_groups(client, keys)
        print(f"preloading {args.postbacks} postbacks into namespace {settings.namespace} ...")
        preload(client, keys, args.postbacks)
        matcher = Matcher(client, settings, consumer="bench", overlap=True)
        started = time.perf_counter()
        handled = 0
        while True:
            step = matcher.process_batch(0)
            if not step:
                break
            handled += step
        matcher.flush()
        elapsed = time.perf_counter() - started
        rate = handled / elapsed if elapsed else 0.0
        print(f"matched {handled} postbacks in {elapsed:.2f} s: {rate:,.0f} postbacks/s")
        print("outcomes:", dict(sorted(matcher.outcomes.items())))
        return 0
    finally:
        _delete_namespace(client, settings.namespace)
        client.close()


def _delete_namespace(client, namespace: str) -> None:
    batch = []
    for key in client.scan_iter(match=f"{namespace}:*", count=1000):
        batch.append(key)
        if len(batch) >= 500:
            client.delete(*batch)
            batch.clear()
    if batch:
        client.delete(*batch)


#: The yardstick's per-entry step (not product code): a marker, a counter, a job, the ack.
#: KEYS: marker, counters hash, output stream, input stream (one hash tag: one slot).
#: ARGV: group, entry id, counter field, job.
YARDSTICK_LUA = """
if redis.call('SET', KEYS[1], '1', 'NX') then
    redis.call('HINCRBY', KEYS[2], ARGV[3], 1)
    redis.call('XADD', KEYS[3], '*', 'job', ARGV[4])
end
return redis.call('XACK', KEYS[4], ARGV[1], ARGV[2])
"""


def _time_matcher(client, settings: Settings) -> tuple[int, float]:
    matcher = Matcher(client, settings, consumer="bench", overlap=True)
    started = time.perf_counter()
    handled = 0
    while step := matcher.process_batch(0):
        handled += step
    matcher.flush()
    return handled, time.perf_counter() - started


def _time_yardstick(client, settings: Settings, keys: Keys) -> tuple[int, float]:
    sha = client.script_load(YARDSTICK_LUA)
    stream = keys.input_stream(keys.partition_of(SOURCE_KEY))
    tag = f"{stream}:yardstick"  # the input stream's hash tag: its slot
    counters, output = f"{tag}:counters", f"{tag}:out"
    started = time.perf_counter()
    handled = 0
    while True:
        reply = client.xreadgroup(MATCHER_GROUP, "yardstick", {stream: ">"}, count=500)
        entries = reply[0][1] if reply else []
        if not entries:
            break
        pipe = client.pipeline(transaction=False)
        for entry_id, fields in entries:
            pipe.evalsha(
                sha, 4, f"{tag}:seen:{entry_id}", counters, output, stream,
                MATCHER_GROUP, entry_id, fields["source"], fields["params"],
            )  # fmt: skip
        pipe.execute()
        handled += len(entries)
    return handled, time.perf_counter() - started


def matcher_row(base: Settings, *, postbacks: int) -> Row:
    """The matcher draining ``postbacks`` ÷ the minimal loop draining the same preload."""
    rates, costs = {}, []
    for who in ("matcher", "yardstick"):
        settings = base.with_overrides(namespace="bench" + uuid.uuid4().hex[:10], partitions=1)
        keys = Keys(settings.namespace, settings.partitions)
        client = connect(settings, socket_timeout=60)
        try:
            ensure_groups(client, keys)
            preload(client, keys, postbacks)
            redis_cpu, python_cpu = _redis_cpu(client), time.process_time()
            if who == "matcher":
                handled, seconds = _time_matcher(client, settings)
            else:
                handled, seconds = _time_yardstick(client, settings, keys)
            rates[who] = handled / seconds
            redis_cpu, python_cpu = _redis_cpu(client) - redis_cpu, time.process_time() - python_cpu
            costs.append(
                f"{who} {python_cpu / handled * 1e6:.0f} us Python + "
                f"{redis_cpu / handled * 1e6:.0f} us Redis CPU per postback"
            )
        finally:
            _delete_namespace(client, settings.namespace)
            client.close()
    return Row(
        f"one matcher draining {postbacks:,} postbacks",
        rates["matcher"],
        "postbacks/s",
        rates["yardstick"],
        "XREADGROUP 500 + a pipelined EVALSHA per entry",
        0.8,
        notes=[*costs, "Redis CPU counts every client of a shared Redis"],
    )


def _redis_cpu(client) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
