"""``postback edge --workers N``: N waitress processes sharing one port, supervised.

One Python process serves on one core at a time (the GIL), so on a machine with more
cores the edge runs as several processes. The parent binds N listening sockets to the
same address with ``SO_REUSEPORT`` (Linux spreads new connections over them) and hands
socket *i* to worker *i*, a ``postback edge --listen-fd`` child that serves it with
waitress. The parent keeps its copy of every socket: when a worker dies, connections
the kernel queued for its socket wait in the backlog for its replacement, which the
parent starts at once (with a growing delay while a worker keeps dying young) instead
of being refused. SIGTERM or SIGINT: the parent passes SIGTERM on, each worker finishes
the requests in hand and exits, the parent closes the sockets and exits 0.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass

log = logging.getLogger("postback.edge")

#: A worker that lived at least this long is restarted at once; a younger one, later.
HEALTHY_AFTER_S = 5.0
#: Longest pause between restarts of a worker that keeps dying at start.
MAX_RESTART_DELAY_S = 10.0
#: How long the workers may take to finish their requests after SIGTERM.
DRAIN_TIMEOUT_S = 20.0
#: How often the parent looks at its workers.
SUPERVISE_TICK_S = 0.1
BACKLOG = 1024


def listen_sockets(host: str, port: int, count: int) -> list[socket.socket]:
    """``count`` listening sockets on one address, all with ``SO_REUSEPORT``.

    Port 0 picks a free port for the first; the others join it. Raises OSError when the
    address is taken (by a process that did not set ``SO_REUSEPORT``) or not ours.
    """
    if not hasattr(socket, "SO_REUSEPORT"):
        raise OSError("this system has no SO_REUSEPORT: run the edge with --workers 1")
    family, _, _, _, address = socket.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            address = sock.getsockname()  # port 0: the others bind the port just chosen
            sock.listen(BACKLOG)
            sock.set_inheritable(True)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


@dataclass
class _Worker:
    index: int
    sock: socket.socket
    process: subprocess.Popen | None = None
    started: float = 0.0
    restart_at: float = 0.0
    delay: float = 0.0


class Supervisor:
    """Starts one worker per socket, restarts dead ones, stops them all on request."""

    def __init__(
        self, sockets: list[socket.socket], threads: int, env: dict[str, str] | None = None
    ) -> None:
        self.threads = threads
        self.env = env
        self.workers = [_Worker(i, sock) for i, sock in enumerate(sockets)]
        self._stop = threading.Event()

    def _start(self, worker: _Worker) -> None:
        fd = worker.sock.fileno()
        argv = [sys.executable, "-m", "scripts.cli", "edge", "--listen-fd", str(fd)]
        argv += ["--threads", str(self.threads)]
        worker.process = subprocess.Popen(argv, pass_fds=(fd,), env=self.env)
        worker.started = time.monotonic()
        log.info(
            "edge worker %d/%d started (pid %d)",
            worker.index + 1,
            len(self.workers),
            worker.process.pid,
        )

    def stop(self, *_args) -> None:
        """Ask :meth:`run` to stop every worker and return (signal-safe)."""
        self._stop.set()

    def run(self) -> int:
        for worker in self.workers:
            self._start(worker)
        while not self._stop.wait(SUPERVISE_TICK_S):
            now = time.monotonic()
            for worker in self.workers:
                process = worker.process
                if process is not None and process.poll() is not None:
                    lived = now - worker.started
                    worker.delay = (
                        0.0
                        if lived >= HEALTHY_AFTER_S
                        else min(max(worker.delay * 2, 0.5), MAX_RESTART_DELAY_S)
                    )
                    log.warning(
                        "edge worker %d (pid %d) exited with code %s after %.1f s; restarting%s",
                        worker.index + 1,
                        process.pid,
                        process.returncode,
                        lived,
                        f" in {worker.delay:.1f} s" if worker.delay else "",
                    )
                    worker.process = None
                    worker.restart_at = now + worker.delay
                if worker.process is None and now >= worker.restart_at:
                    self._start(worker)
        return self._shutdown()

    def _shutdown(self) -> int:
        running = [w.process for w in self.workers if w.process and w.process.poll() is None]
        for process in running:
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        for process in running:
            try:
                process.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                log.warning("edge worker pid %d did not stop in time: killed", process.pid)
                process.kill()
                process.wait()
        for worker in self.workers:
            worker.sock.close()
        return 0


def serve(host: str, port: int, workers: int, threads: int, metrics_dir: str | None) -> int:
    """Run ``workers`` edge processes on ``host:port`` until SIGTERM/SIGINT; the exit code.

    The workers share their metrics through ``metrics_dir`` or, when None, a directory
    made for this run and removed at the end.
    """
    try:
        sockets = listen_sockets(host, port, workers)
    except OSError as exc:
        print(f"postback edge: cannot listen on {host}:{port}: {exc}", file=sys.stderr)
        return 1
    own_dir = None
    if metrics_dir is None:
        metrics_dir = own_dir = tempfile.mkdtemp(prefix="postback-edge-metrics-")
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": metrics_dir}
    try:
        return _supervise(Supervisor(sockets, threads, env), sockets, workers, threads)
    finally:
        if own_dir:
            shutil.rmtree(own_dir, ignore_errors=True)


def _supervise(supervisor: Supervisor, sockets, workers: int, threads: int) -> int:
    signal.signal(signal.SIGTERM, supervisor.stop)
    signal.signal(signal.SIGINT, supervisor.stop)
    bound_host, bound_port = sockets[0].getsockname()[:2]
    log.info(
        "postback edge on http://%s:%s (%d workers, %d threads each, pid %d)",
        bound_host,
        bound_port,
        workers,
        threads,
        os.getpid(),
    )
    code = supervisor.run()
    log.info("postback edge stopped")
    return code
