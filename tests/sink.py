"""A local HTTP partner for tests: records every request, answers as programmed.

    from tests.sink import sink_fixture    # noqa: F401 - registers the ``sink`` fixture

    def test_x(sink):
        sink.respond("/p1", 500, 200)      # first call 500, then 200 for good
        sink.respond("/slow", Reply(200, delay=5))
        url = sink.url("/p1?token=abc")
        ...
        [request] = sink.wait_for(1, path="/p1")
        request.params["click_id"], request.json(), request.headers["Content-Type"]

A delay is a wait on an event that ``close()`` sets, so a test never sits through it.
Also here for the forwarder's tests: :func:`until` (poll with a deadline),
:func:`enqueue_job` (what the matcher writes) and the ``make_forwarder`` fixture.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import orjson
import pytest


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: str = "ok"
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Recorded:
    method: str
    path: str
    query: str  # raw, as sent (still URL-encoded)
    headers: dict[str, str]
    body: bytes
    received: float  # monotonic
    done: bool = False  # the reply has been sent

    @property
    def params(self) -> dict[str, str]:
        """Query parameters, the last value of each."""
        return {k: v[-1] for k, v in parse_qs(self.query, keep_blank_values=True).items()}

    @property
    def multi_params(self) -> dict[str, list[str]]:
        return parse_qs(self.query, keep_blank_values=True)

    def json(self):
        return orjson.loads(self.body)


class _Server(ThreadingHTTPServer):
    # socketserver listens with a backlog of 5. With dozens of deliveries connecting at
    # once on a loaded machine the accept queue overflowed and the kernel reset a
    # connection now and then: a failed attempt, retried, and a test counting attempts
    # failed (issue #8, defect 8). Partners' servers listen with hundreds (nginx: 511).
    request_queue_size = 1024


class Sink:
    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self._cond = threading.Condition()
        self._scripts: dict[str, deque[Reply]] = {}
        self._defaults: dict[str, Reply] = {}
        self._release = threading.Event()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as partners' servers do
            disable_nagle_algorithm = True  # headers and body go in two writes

            def do_GET(self) -> None:
                sink._handle(self)

            do_POST = do_GET  # noqa: N815 - http.server's naming

            def log_message(self, *args) -> None:
                pass

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.handle_error = lambda request, address: None  # resets are expected
        self.server.block_on_close = False
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    @property
    def base(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def url(self, path: str = "/") -> str:
        return self.base + path

    def respond(self, path: str, *replies: Reply | int) -> None:
        """Answer ``path`` with ``replies`` in turn; the last one stays for later calls."""
        as_replies = [r if isinstance(r, Reply) else Reply(r) for r in replies]
        with self._cond:
            self._scripts[path] = deque(as_replies[:-1])
            self._defaults[path] = as_replies[-1]

    def _reply_for(self, path: str) -> Reply:
        with self._cond:
            script = self._scripts.get(path)
            if script:
                return script.popleft()
            return self._defaults.get(path, Reply())

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        if len(body) < length:
            # The sender died mid-request (a SIGKILLed forwarder): a real partner's
            # server drops such a request too, so it is no delivery and is not recorded.
            handler.close_connection = True
            return
        parts = urlsplit(handler.path)
        record = Recorded(
            method=handler.command,
            path=parts.path,
            query=parts.query,
            headers=dict(handler.headers.items()),
            body=body,
            received=time.monotonic(),
        )
        reply = self._reply_for(parts.path)
        with self._cond:
            self.requests.append(record)
            self._cond.notify_all()
        if reply.delay:
            self._release.wait(reply.delay)
        payload = reply.body.encode()
        try:
            handler.send_response(reply.status)
            for name, value in reply.headers.items():
                handler.send_header(name, value)
            handler.send_header("Content-Type", "text/plain; charset=utf-8")
            handler.send_header("Content-Length", str(len(payload)))
            handler.end_headers()
            handler.wfile.write(payload)
        except OSError:
            pass  # the forwarder gave up (timeout) and closed the connection
        with self._cond:
            record.done = True
            self._cond.notify_all()

    def received(self, path: str | None = None) -> list[Recorded]:
        with self._cond:
            return [r for r in self.requests if path is None or r.path == path]

    def wait_for(
        self, count: int, *, path: str | None = None, timeout: float = 10.0
    ) -> list[Recorded]:
        """Block until ``count`` requests (to ``path``) arrived; fail the test on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                got = [r for r in self.requests if path is None or r.path == path]
                if len(got) >= count:
                    return got
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"sink got {len(got)} requests to {path}, wanted {count}")
                self._cond.wait(left)

    def close(self) -> None:
        self._release.set()
        self.server.shutdown()
        self.server.server_close()


def until(
    condition: Callable[[], object],
    *,
    step: Callable[[], object] | None = None,
    timeout: float = 10.0,
    message: str = "condition",
):
    """Call ``step`` (e.g. one forwarder batch) until ``condition()`` is truthy; return it."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {message}")
        if step is not None:
            step()
        else:
            time.sleep(0.01)


@pytest.fixture(name="sink")
def sink_fixture():
    server = Sink()
    yield server
    server.close()


@pytest.fixture(name="make_forwarder")
def make_forwarder_fixture(settings, redis_client, store):
    """Build forwarders on the test's namespace; they are drained and closed afterwards."""
    from processors.forwarder.worker import Forwarder

    made = []

    def build(consumer: str = "fw-test", **kwargs):
        forwarder = Forwarder(
            kwargs.pop("settings", settings), redis_client, consumer=consumer, **kwargs
        )
        made.append(forwarder)
        return forwarder

    yield build
    for forwarder in made:
        forwarder.close()


def sample_payload(**changes) -> dict:
    """A partner payload as the matcher builds it (SPEC §5)."""
    payload = {
        "click_id": "CLK-789ABC",
        "status": "approved",
        "payout": "4.00",
        "currency": "USD",
        "offer_id": "VBFS6",
        "transaction_id": "TXN-12345",
        "conversion_id": "cv0-0123456789abcdef01234567",
        "user_id": "u1",
        "sub1": "camp a",
        "timestamp": 1714000000,
        "survey_id": "S1",
    }
    payload.update(changes)
    return {k: v for k, v in payload.items() if v is not None}


def enqueue_job(
    client,
    keys,
    partner_id: str,
    payload: dict | None = None,
    *,
    partition: int = 0,
    attempt: int = 1,
    log_id: str = "1714000000000-0",
) -> dict:
    """XADD a forward job the way the matcher does; returns the job."""
    payload = sample_payload() if payload is None else payload
    job = {
        "partner_id": partner_id,
        "payload": payload,
        "log_id": log_id,
        "conversion_id": payload.get("conversion_id", ""),
        "attempt": attempt,
        "created": int(time.time() * 1000),
    }
    client.xadd(keys.forward_stream(partition), {"job": orjson.dumps(job).decode()})
    return job


def forwarded(client, keys, partition: int | None = None) -> list[dict]:
    """The forwarded log's entries (of every partition unless one is named), oldest first."""
    parts = keys.all_partitions() if partition is None else [partition]
    entries = [e for n in parts for e in client.xrange(keys.forwarded_log(n))]
    entries.sort(key=lambda e: tuple(map(int, e[0].split("-"))))
    return [fields for _id, fields in entries]


def retry_jobs(client, keys, partition: int = 0) -> list[tuple[dict, float]]:
    """(job, due ms) in the retry set."""
    return [
        (orjson.loads(member), score)
        for member, score in client.zrange(keys.retry_queue(partition), 0, -1, withscores=True)
    ]
