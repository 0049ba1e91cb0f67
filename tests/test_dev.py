"""``postback dev``: one command brings the whole system up, and Ctrl-C takes it down."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import orjson
import pytest
import requests

from core.config import Settings
from scripts import dev_state
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
    state = dev_state.state_file()
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
        # A second terminal, REDIS_URL and the layout unset: it finds dev's Redis by itself.
        assert second_terminal("admin", "user", "show", "demo-user") == "4.00"
        assert state.exists()
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
    assert not state.exists()  # gone with dev: a later command reads REDIS_URL's default


def second_terminal(*argv: str) -> str:
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in ("REDIS_URL", "POSTBACK_NAMESPACE", "POSTBACK_PARTITIONS")
    }
    done = subprocess.run(
        [sys.executable, "-m", "scripts.cli", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_a_second_terminal_ignores_a_stale_file_and_honours_its_own_settings(tmp_path):
    env = {"POSTBACK_STATE_DIR": str(tmp_path)}
    path = dev_state.state_file(env)
    path.parent.mkdir(parents=True, exist_ok=True)
    default = Settings()
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        text=True,
        capture_output=True,
        check=True,
    )
    record = {"redis_url": "redis://127.0.0.1:1/0", "namespace": "x", "partitions": 2}
    path.write_text(orjson.dumps({**record, "pid": int(dead.stdout)}).decode())
    assert dev_state.settings_for_second_terminal(default, env) == default  # dead writer
    path.write_text(orjson.dumps({**record, "pid": os.getpid()}).decode())
    assert dev_state.settings_for_second_terminal(default, env) == default  # no Redis there
    given = {**env, "REDIS_URL": "redis://127.0.0.1:6379/0"}
    assert dev_state.settings_for_second_terminal(default, given) == default  # env wins
