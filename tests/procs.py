"""Real ``postback`` processes for tests: start, wait until they answer, stop, kill.

    edge = Service("edge", ["edge", "--port", str(port)], env)
    edge.start()
    wait_http(f"http://127.0.0.1:{port}/health", edge)
    ...
    edge.stop()           # SIGTERM, then SIGKILL past the deadline; returns the exit code

Output goes to a temporary file, never a pipe (a full pipe would stall the process),
and is shown by :meth:`Service.output` when a test fails. Waiting is always polling
with a deadline, generous enough for a loaded 2-core machine.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile

import requests

from tests.sink import until


def free_port() -> int:
    """A TCP port nobody listens on now (below 55536, so a cluster bus port fits too)."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port < 55536:
            return port


def child_env(settings, **extra: str) -> dict[str, str]:
    """This process's environment pointed at the test's Redis, namespace and partition
    count, plus ``extra`` (``POSTBACK_BLOCK_MS="100"``...): for a ``postback`` child."""
    return {
        **os.environ,
        "REDIS_URL": settings.redis_url,
        "POSTBACK_NAMESPACE": settings.namespace,
        "POSTBACK_PARTITIONS": str(settings.partitions),
        **extra,
    }


def stop(proc: subprocess.Popen, timeout: float) -> int:
    """SIGTERM and the exit code within ``timeout`` (else TimeoutExpired); a process still
    running on the way out is killed either way."""
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


class Service:
    """One ``python -m scripts.cli ARGS...`` child process."""

    def __init__(self, name: str, args: list[str], env: dict[str, str]) -> None:
        self.name, self.args = name, args
        self.env = {**os.environ, **env}
        fd, self.log_path = tempfile.mkstemp(prefix=f"postback-{name}-", suffix=".log")
        self.log = os.fdopen(fd, "wb")
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> Service:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "scripts.cli", *self.args],
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        self.starts += 1
        return self

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no cleanup at all, as a crash or the OOM killer would leave it."""
        if self.running():
            self.proc.send_signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(timeout=30)

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM, wait, SIGKILL past ``timeout``; the exit code (None if never started)."""
        if self.proc is None:
            return None
        if self.running():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        return self.proc.returncode

    def output(self) -> str:
        self.log.flush()
        with open(self.log_path, errors="replace") as text:
            return text.read()

    def close(self) -> None:
        self.stop()
        self.log.close()
        os.unlink(self.log_path)


def wait_http(url: str, service: Service, deadline_s: float = 30.0) -> None:
    """Until ``url`` answers 200; fail at once, with its output, if ``service`` exits."""

    def answers() -> bool:
        assert service.running(), f"{service.name} exited:\n{service.output()}"
        try:
            return requests.get(url, timeout=2).status_code == 200
        except requests.RequestException:
            return False

    until(answers, timeout=deadline_s, message=f"{url} answering")
