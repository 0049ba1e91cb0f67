"""storage.scripts: the packed fast path answers like a pipeline, call by call."""

from __future__ import annotations

import uuid

import pytest
import redis

from core.config import Settings
from storage.redis_client import connect, is_cluster
from storage.scripts import LOST, Scripts


@pytest.fixture
def scripts(tmp_path) -> Scripts:
    """Scripts no Redis has loaded yet (each file unique to the test): NOSCRIPT first."""
    tag = uuid.uuid4().hex
    (tmp_path / "echo.lua").write_text(f"-- {tag}\nreturn {{KEYS[1], ARGV[1]}}\n")
    (tmp_path / "count_then_spin.lua").write_text(
        f"-- {tag}\n"
        "redis.call('INCR', KEYS[1])\n"
        "local t = redis.call('TIME')\n"
        "local stop = tonumber(t[1]) * 1000000 + tonumber(t[2]) + tonumber(ARGV[1])\n"
        "repeat t = redis.call('TIME') until tonumber(t[1]) * 1000000 + tonumber(t[2]) >= stop\n"
        "return 1\n"
    )
    (tmp_path / "fail.lua").write_text(f"-- {tag}\nreturn redis.error_reply('nope ' .. ARGV[1])\n")
    return Scripts(tmp_path)


def test_replies_come_back_in_call_order_across_slots_and_nodes(scripts, redis_client, namespace):
    calls = [((f"{namespace}:{{p{n % 5}}}:k{n}",), (str(n),)) for n in range(40)]
    replies = scripts.run_packed(redis_client, "echo", calls)  # NOSCRIPT: loaded, sent again
    assert replies == [[keys[0], args[0]] for keys, args in calls]
    assert scripts.run_packed(redis_client, "echo", calls) == replies  # loaded now


def test_an_error_reply_stays_with_its_call(scripts, redis_client, namespace):
    calls = [((f"{namespace}:{{p{n}}}:k",), (str(n),)) for n in range(3)]
    scripts.run_packed(redis_client, "echo", calls)
    replies = scripts.run_packed(redis_client, "fail", calls)
    assert [str(r) for r in replies] == ["nope 0", "nope 1", "nope 2"]
    assert all(isinstance(r, redis.ResponseError) for r in replies)


def test_a_call_whose_connection_times_out_is_an_error_in_place_and_not_sent_again(
    scripts, settings, redis_client, namespace
):
    counter = f"{namespace}:{{p0}}:runs"
    quick = connect(settings, socket_timeout=0.1)
    try:
        scripts.load(quick, "count_then_spin")
        assert scripts.run_packed(quick, "count_then_spin", [((counter,), ("0",))]) == [1]
        # This call keeps Redis busy past the client's timeout: whether it ran is unknown.
        [reply] = scripts.run_packed(quick, "count_then_spin", [((counter,), ("300000",))])
        assert isinstance(reply, LOST)
        assert redis_client.get(counter) == "2"  # (waits for the script) it ran once
        # The connection was dropped (its reply unread), so the next call gets a fresh one.
        assert scripts.run_packed(quick, "count_then_spin", [((counter,), ("0",))]) == [1]
    finally:
        quick.close()
    assert redis_client.get(counter) == "3"  # nothing was sent again


def test_a_redis_that_cannot_be_reached_is_an_error_per_call_not_a_raise(scripts):
    from scripts.embedded_redis import free_port

    nowhere = connect(Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0"))
    if is_cluster(nowhere):  # pragma: no cover - a free port never is
        pytest.skip("not a dead address")
    try:
        replies = scripts.run_packed(nowhere, "echo", [(("a",), ("1",)), (("b",), ("2",))])
    finally:
        nowhere.close()
    assert len(replies) == 2 and all(isinstance(r, redis.ConnectionError) for r in replies)
