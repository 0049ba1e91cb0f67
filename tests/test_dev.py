"""``postback dev``: one command brings the whole system up, and Ctrl-C takes it down."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

import pytest
import requests

from core.config import Settings
from scripts.embedded_redis import free_port
from storage.keys import Keys
from storage.repositories import Store
from tests.output import Output

pytestmark = pytest.mark.slow

#: Generous deadlines, not speed checks: on a loaded machine the edge's workers, the matcher
#: and the forwarder each take many seconds to import and start (a 5 s read timeout on the
#: first postback failed now and then: the request waited for a worker still starting).
DEADLINE_S = 90


@pytest.mark.timeout(4 * DEADLINE_S)
def test_dev_runs_the_curl_line_end_to_end_and_stops_on_ctrl_c(settings, redis_client):
    # `postback dev` runs with the default partition count: read the balance the same way.
    store = Store(redis_client, Keys(settings.namespace, Settings().partitions))
    port = free_port()
    env = {
        **os.environ,
        "REDIS_URL": settings.redis_url,
        "POSTBACK_NAMESPACE": settings.namespace,
        "POSTBACK_BLOCK_MS": "200",
        "PYTHONUNBUFFERED": "1",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "scripts.cli", "dev", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output = Output(proc)
    try:
        curl = output.wait_for(r'curl "(http://[^"]+)"', timeout=DEADLINE_S).group(1)
        reply = requests.get(curl, timeout=DEADLINE_S)
        assert reply.status_code == 200, reply.text
        assert reply.json()["status"] == "success"
        # The demo partner sink prints the forward: the partner's 80 % of 5.00.
        output.wait_for(r"\[demo partner\] GET /postback\?.*payout=4\.00", timeout=DEADLINE_S)
        deadline = time.monotonic() + DEADLINE_S
        while store.user("demo-user")["points"] != "4.00" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert store.user("demo-user")["points"] == "4.00"
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(DEADLINE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        finally:
            output.close()
    assert code == 0, "".join(output.seen)


def test_dev_waits_for_the_edge_to_answer_not_just_for_its_port():
    # The edge's parent binds the port before its workers can answer: an open port that
    # never answers HTTP is not an edge that is up, so no curl line is printed for it.
    import socket
    import threading

    from scripts.dev import _wait_for_edge

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def hang_up() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = listener.accept()
                conn.close()

    threading.Thread(target=hang_up, daemon=True).start()
    edge = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with pytest.raises(SystemExit, match="did not answer"):
            _wait_for_edge("127.0.0.1", port, edge, timeout=1.0)
    finally:
        edge.kill()
        edge.wait()
        listener.close()
