"""What the benchmark cases share: a result row, throwaway namespaces, child servers."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field

from core.config import Settings
from scripts.embedded_redis import free_port
from storage.redis_client import connect, delete_namespace


@dataclass
class Row:
    """One line of the table: a figure, its yardstick from the same run, and the ratio."""

    case: str
    figure: float
    unit: str
    yardstick: float
    yardstick_name: str
    target: float
    #: "higher": ratio = figure / yardstick must reach the target; "lower": ratio =
    #: figure / yardstick must stay at or under it.
    better: str = "higher"
    notes: list[str] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        return self.figure / self.yardstick if self.yardstick else 0.0

    @property
    def meets(self) -> bool:
        if self.better == "higher":
            return self.ratio >= self.target
        return 0 < self.ratio <= self.target

    def as_json(self) -> dict:
        return {**asdict(self), "ratio": round(self.ratio, 3), "meets": self.meets}


@contextlib.contextmanager
def namespace(base: Settings, **overrides) -> Iterator[Settings]:
    """Settings on a fresh namespace of ``REDIS_URL``, every key deleted afterwards."""
    settings = base.with_overrides(namespace="bench" + uuid.uuid4().hex[:10], **overrides)
    client = connect(settings)
    try:
        yield settings
    finally:
        delete_namespace(client, settings.namespace)
        client.close()


def env_for(settings: Settings, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "REDIS_URL": settings.redis_url,
        "POSTBACK_NAMESPACE": settings.namespace,
        "POSTBACK_PARTITIONS": str(settings.partitions),
        **extra,
    }


@contextlib.contextmanager
def child(argv: list[str], env: dict[str, str] | None = None) -> Iterator[subprocess.Popen]:
    """A child process, stopped with SIGTERM (then killed) on the way out."""
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def postback_command(*argv: str) -> list[str]:
    return [sys.executable, "-m", "scripts.cli", *argv]


def wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    """Wait until something accepts connections on 127.0.0.1:``port``."""

    def listening() -> bool:
        socket.create_connection(("127.0.0.1", port), 0.5).close()
        return True

    wait_until(listening, proc, f"nothing listens on port {port}", timeout)


def wait_until(
    ready: Callable[[], bool], proc: subprocess.Popen, failure: str, timeout: float = 30.0
) -> None:
    """Poll ``ready()`` (an OSError counts as not yet) until it holds, while ``proc`` runs;
    ``failure`` (and the seconds waited) is the error when ``timeout`` passes first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{' '.join(map(str, proc.args))} exited with {proc.returncode}")
        try:
            if ready():
                return
        except OSError:
            pass
        time.sleep(0.05)  # a starting server, polled with a deadline
    raise RuntimeError(f"{failure} after {timeout:.0f} s")


def in_threads(clients: int, work) -> float:
    """Run ``work(i)`` on ``clients`` threads started together; the seconds they took."""
    ready = threading.Barrier(clients + 1)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        ready.wait()
        try:
            work(i)
        except BaseException as exc:  # reported after the join
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    ready.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return time.perf_counter() - started


__all__ = [
    "Row",
    "child",
    "env_for",
    "free_port",
    "in_threads",
    "namespace",
    "postback_command",
    "wait_for_port",
    "wait_until",
]
