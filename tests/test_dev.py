"""``postback dev``: one command brings the whole system up, and Ctrl-C takes it down."""

from __future__ import annotations

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
        curl = output.wait_for(r'curl "(http://[^"]+)"').group(1)
        reply = requests.get(curl, timeout=5)
        assert reply.status_code == 200, reply.text
        assert reply.json()["status"] == "success"
        # The demo partner sink prints the forward: the partner's 80 % of 5.00.
        output.wait_for(r"\[demo partner\] GET /postback\?.*payout=4\.00")
        deadline = time.monotonic() + 10
        while store.user("demo-user")["points"] != "4.00" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert store.user("demo-user")["points"] == "4.00"
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        finally:
            output.close()
    assert code == 0, "".join(output.seen)
