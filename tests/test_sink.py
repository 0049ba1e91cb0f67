"""The test partner itself: it must not be the reason a delivery fails."""

from __future__ import annotations

import contextlib
import socket
import threading

from tests.sink import sink_fixture  # noqa: F401 - fixtures

BURST = 100  # connections opened while nothing accepts (the sink's thread is busy)


def test_a_burst_of_connections_waits_in_the_backlog_instead_of_being_dropped(sink):
    sink.server.shutdown()  # stop accepting; the socket keeps listening
    host, port = sink.server.server_address[:2]
    with contextlib.ExitStack() as stack:
        for _ in range(BURST):
            # The kernel completes the handshake of a connection in the backlog at once;
            # past the backlog it drops the SYN and the client retries after a second.
            stack.enter_context(socket.create_connection((host, port), timeout=3))
    thread = threading.Thread(target=sink.server.serve_forever, daemon=True)
    thread.start()  # close() shuts it down again


def test_a_request_cut_off_mid_body_is_not_recorded_as_a_delivery(sink):
    import requests

    from tests.sink import until

    host, port = sink.server.server_address[:2]
    with socket.create_connection((host, port), timeout=3) as conn:
        # What a forwarder SIGKILLed between its headers and its body leaves behind.
        conn.sendall(b'POST /net HTTP/1.1\r\nHost: x\r\nContent-Length: 208\r\n\r\n{"a"')
    requests.post(sink.url("/net"), json={"transaction_id": "T1"}, timeout=5)
    until(lambda: sink.received("/net"), message="the whole request")
    assert [r.json() for r in sink.received("/net")] == [{"transaction_id": "T1"}]
