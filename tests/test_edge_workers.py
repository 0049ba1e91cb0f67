"""``postback edge --workers N``: processes sharing one port, supervised by the parent."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import pytest
import requests

from core.config import ConfigError, Settings, usable_cpus
from core.sources import Source
from scripts.embedded_redis import free_port
from tests.output import Output
from tests.procs import child_env, stop
from tests.sink import until

pytestmark = pytest.mark.slow


def _received(metrics_text: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics_text.splitlines()
        if line.startswith("postback_received_total{")
    )


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def _start(settings, *argv: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "scripts.cli", "edge", "--host", "127.0.0.1", *argv],
        env=child_env(settings, **(env or {})),
        stderr=subprocess.PIPE,
        text=True,
    )


def test_workers_share_the_port_a_dead_one_comes_back_and_sigterm_stops_all(
    settings, store, redis_client, keys
):
    source = store.add_source(Source.build(name="workers"))
    port = free_port()
    proc = _start(settings, "--port", str(port), "--threads", "2", "--workers", "2")
    lines = Output(proc, proc.stderr)
    url = f"http://127.0.0.1:{port}/postback/{source.key}"
    try:
        lines.wait_for(rf"postback edge on http://127\.0\.0\.1:{port} \(2 workers")
        pids = {int(lines.wait_for(r"edge worker \d/2 started \(pid (\d+)\)")[1]) for _ in "12"}
        assert len(pids) == 2

        def postback(i: int) -> requests.Response:
            # a new connection each time: the kernel spreads them over the workers
            return requests.get(url, params={"click_id": f"c{i}"}, timeout=15)

        assert all(postback(i).status_code == 200 for i in range(10))

        victim = pids.pop()
        os.kill(victim, signal.SIGKILL)
        match = lines.wait_for(r"edge worker (\d)/2 started \(pid (\d+)\)")
        replacement = int(match[2])
        assert replacement != victim and replacement not in pids
        pids.add(replacement)
        # Connections queued for the dead worker's socket wait for its replacement.
        assert all(postback(i).status_code == 200 for i in range(10, 30))
        assert redis_client.xlen(keys.input_stream(0)) == 30
        # Whichever worker answers a scrape counts every worker's postbacks, the dead one's too.
        for _ in range(6):
            text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=15).text
            assert _received(text) == 30
    finally:
        try:
            code = stop(proc, 30)
        finally:
            lines.close()
    assert code == 0
    until(lambda: all(_gone(pid) for pid in pids), timeout=20, message="every worker gone")
    with pytest.raises(requests.ConnectionError):
        requests.get(url, timeout=2)


def test_the_worker_count_comes_from_the_environment_and_auto_is_one_per_cpu():
    assert Settings.from_env({}).edge_workers is None  # edge: 1, dev: one per CPU
    assert Settings.from_env({"POSTBACK_EDGE_WORKERS": "3"}).edge_workers == 3
    assert Settings.from_env({"POSTBACK_EDGE_WORKERS": "auto"}).edge_workers == 0
    assert usable_cpus() >= 1
    for bad in ("0", "-1", "two"):
        with pytest.raises(ConfigError, match="POSTBACK_EDGE_WORKERS"):
            Settings.from_env({"POSTBACK_EDGE_WORKERS": bad})


def test_bad_worker_counts_and_a_taken_port_are_refused_in_one_line(settings):
    proc = _start(settings, "--port", str(free_port()), "--workers", "0")
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2 and "--workers" in err and len(err.strip().splitlines()) == 1

    proc = _start(settings, "--port", str(free_port()), env={"POSTBACK_EDGE_WORKERS": "many"})
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 1 and "POSTBACK_EDGE_WORKERS" in err

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = _start(settings, "--port", str(port), "--workers", "2")
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 1 and f"cannot listen on 127.0.0.1:{port}" in err
