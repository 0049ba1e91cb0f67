"""A throwaway three-master Redis Cluster on loopback, for the tests and the benchmark.

    >>> cluster = start_cluster()        # three redis-server, `redis-cli --cluster create`
    >>> cluster.url                      # redis://127.0.0.1:<port>/0, any node will do
    >>> cluster.stop()

Each node runs with ``--cluster-enabled yes``, its own ``--cluster-config-file`` in a
temporary directory, and nothing kept on disk (``--save '' --appendonly no``). A cluster
node's bus listens on port + 10000, so ports are picked below 55536 with that port free
too. No replicas: this is for tests; production wants replicas and ``appendonly``.
"""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field

from scripts.embedded_redis import answers, find_redis_server

#: Highest port a node may take: its bus port (+10000) must be a valid port too.
MAX_PORT = 55535


@dataclass
class LocalCluster:
    ports: list[int]
    workdir: str
    processes: list[subprocess.Popen] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def stop(self) -> None:
        for proc in self.processes:
            proc.terminate()
        for proc in self.processes:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self.processes.clear()
        shutil.rmtree(self.workdir, ignore_errors=True)


def _free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def cluster_ports(count: int = 3, rng: random.Random | None = None) -> list[int]:
    """``count`` free ports under 55536 whose bus port (+10000) is free as well."""
    rng = rng or random.Random()
    ports: list[int] = []
    for _ in range(2000):
        port = rng.randrange(20000, MAX_PORT + 1)
        if port in ports or port + 10000 in ports:
            continue
        if _free(port) and _free(port + 10000):
            ports.append(port)
            if len(ports) == count:
                return ports
    raise RuntimeError("no free ports for a local cluster")


def _info_cluster_ok(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), 0.5) as s:
            s.settimeout(0.5)
            s.sendall(b"CLUSTER INFO\r\n")
            reply = b""
            while b"cluster_state" not in reply or not reply.endswith(b"\r\n"):
                chunk = s.recv(4096)
                if not chunk:
                    break
                reply += chunk
            return b"cluster_state:ok" in reply
    except OSError:
        return False


def start_cluster(masters: int = 3, timeout: float = 30.0) -> LocalCluster:
    """Start ``masters`` nodes, join them (no replicas), wait for ``cluster_state:ok``."""
    binary = find_redis_server()
    cli = shutil.which("redis-cli")
    if not binary or not cli:
        raise RuntimeError("a local cluster needs redis-server and redis-cli on PATH")
    last_error = ""
    for _ in range(3):  # a port taken between the check and the start: pick others
        cluster = LocalCluster(cluster_ports(masters), tempfile.mkdtemp(prefix="postback-cluster-"))
        try:
            _start_nodes(cluster, binary, timeout)
            _create(cluster, cli, timeout)
            return cluster
        except RuntimeError as exc:
            last_error = str(exc)
            cluster.stop()
    raise RuntimeError(f"local cluster did not start: {last_error}")


def _start_nodes(cluster: LocalCluster, binary: str, timeout: float) -> None:
    for port in cluster.ports:
        cluster.processes.append(
            subprocess.Popen(
                [
                    binary,
                    "--port", str(port),
                    "--bind", "127.0.0.1",
                    "--cluster-enabled", "yes",
                    "--cluster-config-file", f"nodes-{port}.conf",
                    "--cluster-node-timeout", "5000",
                    "--save", "",
                    "--appendonly", "no",
                    "--dir", cluster.workdir,
                    "--daemonize", "no",
                    "--loglevel", "warning",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )  # fmt: skip
    deadline = time.monotonic() + timeout
    for port, proc in zip(cluster.ports, cluster.processes, strict=True):
        while not answers(f"redis://127.0.0.1:{port}/0"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on port {port}")
            time.sleep(0.05)


def _create(cluster: LocalCluster, cli: str, timeout: float) -> None:
    nodes = [f"127.0.0.1:{port}" for port in cluster.ports]
    done = subprocess.run(
        [cli, "--cluster", "create", *nodes, "--cluster-replicas", "0", "--cluster-yes"],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"redis-cli --cluster create failed: {done.stdout[-500:]}")
    deadline = time.monotonic() + timeout
    while not all(_info_cluster_ok(port) for port in cluster.ports):
        if time.monotonic() > deadline:
            raise RuntimeError("cluster_state did not become ok on every node")
        time.sleep(0.1)


if __name__ == "__main__":  # pragma: no cover - a manual helper
    running = start_cluster()
    print(running.url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        running.stop()
