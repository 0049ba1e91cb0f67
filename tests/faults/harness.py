"""The fault suite's parts: a network of real processes, load that keeps count, checks.

Every postback the load sends has its own click, user and transaction_id, so each one
that got a 200 must end as exactly one credit of 1.00 to its own user and at least one
delivery of its transaction_id to every partner. A postback whose answer was lost
(an error, no answer) may or may not have been taken in: its user holds 0.00 or 1.00,
never more.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import pytest
import requests

from core.offers import Offer
from core.partners import Partner
from core.sources import Source
from storage.repositories import Store
from tests.procs import Service, free_port, wait_http
from tests.sink import until

OFFER = "FAULT-OFFER"
POINTS = "1.00"  # the offer pays a fixed 1.00: each credit is 1.00 points


def worker_env(redis_url: str, namespace: str, partitions: int, **extra: str) -> dict[str, str]:
    """Settings for every process: fast blocking reads, claims and lease takeovers."""
    return {
        "REDIS_URL": redis_url,
        "POSTBACK_NAMESPACE": namespace,
        "POSTBACK_PARTITIONS": str(partitions),
        "POSTBACK_BLOCK_MS": "200",
        "POSTBACK_CLAIM_IDLE_MS": "1500",
        "POSTBACK_LEASE_MS": "2000",
        "POSTBACK_RETRY_SCHEDULE": "1,1,1,2,2,2,3,3",
        "POSTBACK_FORWARD_CONCURRENCY": "16",
        "PYTHONUNBUFFERED": "1",
        **extra,
    }


class Network:
    """An edge, matchers and forwarders as ``postback`` processes, stopped at the end."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.services: list[Service] = []

    def start(self, matchers: int = 1, forwarders: int = 1) -> Network:
        self.edge = self._add(
            "edge", ["edge", "--host", "127.0.0.1", "--port", str(self.port), "--threads", "8"]
        )
        self.workers = [
            self._add(f"matcher-{n}", ["matcher", "--consumer", f"m{n}"]) for n in range(matchers)
        ]
        self.workers += [
            self._add(f"forwarder-{n}", ["forwarder", "--consumer", f"f{n}"])
            for n in range(forwarders)
        ]
        wait_http(f"{self.base}/health", self.edge, deadline_s=60)
        return self

    def _add(self, name: str, args: list[str]) -> Service:
        service = Service(name, args, self.env).start()
        self.services.append(service)
        return service

    def output(self) -> str:
        return "\n".join(f"--- {s.name}\n{s.output()[-3000:]}" for s in self.services)

    def close(self) -> None:
        for service in self.services:
            service.close()


def add_catalogue(store: Store, partners: dict[str, str], clicks: int) -> Source:
    """A source, a fixed 1.00 offer, partners (id → URL, scope all), ``clicks`` clicks."""
    source = store.add_source(Source.build(name="fault-source"))
    offer = store.add_offer(Offer.build(OFFER, fixed="1.00"))
    for partner_id, url in partners.items():
        store.add_partner(
            Partner.build(partner_id, url=url, method="POST", scope="all", allow_private=True)
        )
    first = next(iter(partners))
    for n in range(clicks):
        store.add_click(
            offer_id=OFFER, partner_id=first, user_id=f"u{n}", click_id=f"C{n}", offer=offer
        )
    return source


@dataclass
class Load:
    """Postbacks sent by a few threads at a steady pace, each answer kept by number."""

    base: str
    key: str
    total: int
    threads: int = 4
    per_thread_per_s: float = 20.0
    accepted: dict[int, float] = field(default_factory=dict)  # n → time of the 200
    lost: dict[int, str] = field(default_factory=dict)  # n → what came instead
    refusals: Counter = field(default_factory=Counter)  # status → count (503 etc.)
    retry_after_seen: bool = False

    def __post_init__(self) -> None:
        self._next = iter(range(self.total))
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._send, daemon=True) for _ in range(self.threads)
        ]

    def start(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.join()

    def join(self, timeout: float = 300) -> None:
        for thread in self._threads:
            thread.join(timeout)

    @property
    def done(self) -> bool:
        return not any(t.is_alive() for t in self._threads)

    def _take(self) -> int | None:
        with self._lock:
            return next(self._next, None)

    def _send(self) -> None:
        session = requests.Session()
        pace = 1.0 / self.per_thread_per_s
        while not self._stop.is_set() and (n := self._take()) is not None:
            started = time.monotonic()
            try:
                resp = session.get(
                    f"{self.base}/postback/{self.key}",
                    params={"click_id": f"C{n}", "transaction_id": f"T{n}", "payout": "2.00"},
                    timeout=10,
                )
            except requests.RequestException as exc:
                self.lost[n] = type(exc).__name__
            else:
                if resp.status_code == 200:
                    self.accepted[n] = time.monotonic()
                else:
                    self.lost[n] = str(resp.status_code)
                    with self._lock:
                        self.refusals[resp.status_code] += 1
                        if resp.status_code == 503 and resp.headers.get("Retry-After"):
                            self.retry_after_seen = True
            # The load's pace (not a synchronisation): the rest of a 1/rate slot.
            self._stop.wait(max(0.0, pace - (time.monotonic() - started)))


def unbalanced(store: Store, load: Load) -> list[str]:
    """Users whose points say their postback was credited other than exactly once."""
    wrong = []
    for n in load.accepted:
        if (points := store.user(f"u{n}")["points"]) != POINTS:
            wrong.append(f"u{n}={points} (accepted)")
    for n in load.lost:
        if (points := store.user(f"u{n}")["points"]) not in ("0.00", POINTS):
            wrong.append(f"u{n}={points} (answer lost)")
    return wrong


def deliveries(requests_seen) -> Counter:
    """transaction_id → how many deliveries a partner got."""
    got: Counter = Counter()
    for request in requests_seen:
        got[request.json().get("transaction_id")] += 1
    return got


def undelivered(load: Load, got: Counter) -> list[int]:
    return [n for n in load.accepted if not got.get(f"T{n}")]


def settle(store: Store, load: Load, received, network: Network, timeout: float = 150) -> Counter:
    """Wait until every accepted postback is credited once and delivered; its deliveries.

    ``received`` gives the partner's requests so far. Fails with what is missing (and
    the processes' output) past the deadline, and if any user holds more than 1.00.
    """

    def settled() -> bool:
        return not undelivered(load, deliveries(received())) and not unbalanced(store, load)

    try:
        until(settled, timeout=timeout, message="every accepted postback credited and delivered")
    except AssertionError:
        got = deliveries(received())
        pytest.fail(
            f"undelivered: {undelivered(load, got)[:20]}, "
            f"credited wrong: {unbalanced(store, load)[:20]}\n{network.output()}"
        )
    assert unbalanced(store, load) == []
    return deliveries(received())


def chaos_pauses(seed: int):
    """Seconds between faults: random, but the same every run."""
    rng = random.Random(seed)
    while True:
        yield rng.uniform(0.3, 1.2)
