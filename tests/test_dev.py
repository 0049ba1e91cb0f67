"""``postback dev``: one command brings the whole system up, and Ctrl-C takes it down."""

from __future__ import annotations

import contextlib
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
    state = dev_state.state_file()
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
        # A second terminal, REDIS_URL and the layout unset: it finds dev's Redis by itself.
        assert second_terminal("admin", "user", "show", "demo-user") == "4.00 points"
        assert state.exists()
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
