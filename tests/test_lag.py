"""``postback lag``: numbers per stream and group, also where Redis reports lag as null."""

from __future__ import annotations

import io

import orjson
import pytest

import scripts.lag as lag
from scripts.cli import main
from storage.keys import FORWARDER_GROUP, MATCHER_GROUP, Keys
from storage.redis_client import ensure_groups


def add_postbacks(client, stream: str, n: int) -> list[str]:
    pipe = client.pipeline(transaction=False)
    for _ in range(n):
        pipe.xadd(stream, {"source": "k" * 20, "method": "GET", "ip": "1.2.3.4", "params": "{}"})
    return pipe.execute()


def run_json(capsys, *extra: str) -> tuple[int, dict]:
    code = main(["lag", "--json", *extra])
    return code, orjson.loads(capsys.readouterr().out)


def group(report: dict, stream: str, name: str) -> dict:
    return next(g for g in report["groups"] if g["stream"] == stream and g["group"] == name)


# -- pure parts ----------------------------------------------------------------------------
def test_sparkline_scales_between_min_and_max():
    assert lag.sparkline([0, 7, 14]) == "▁▅█"
    assert lag.sparkline([3, 3, 3]) == "▁▁▁"
    assert lag.sparkline([]) == ""
    assert len(lag.sparkline(list(range(50)), width=20)) == 20


def test_trend_word_compares_oldest_and_newest_sample():
    assert lag.trend_word([10, 8, 3]) == "draining"
    assert lag.trend_word([1, 5, 9]) == "growing"
    assert lag.trend_word([4, 9, 4]) == "steady"
    assert lag.trend_word([4]) == "steady"


def test_duration_reads_like_a_clock():
    assert lag.duration(12.34) == "12.3s"
    assert lag.duration(725) == "12m05s"
    assert lag.duration(11520) == "3h12m"
    assert lag.duration(183600) == "2d03h"


# -- against Redis ---------------------------------------------------------------------------
def test_groups_show_before_any_worker_ran(cli_env, keys, capsys):
    code, report = run_json(capsys)
    assert code == 0
    assert set(report) >= {"groups", "retry_queue", "dead_letters"}
    pairs = {(g["stream"], g["group"]) for g in report["groups"]}
    assert pairs == {
        (keys.input_stream(0), MATCHER_GROUP),
        (keys.forward_stream(0), FORWARDER_GROUP),
    }
    for g in report["groups"]:
        assert g["length"] == g["lag"] == g["pending"] == 0
        assert g["consumers"] == []


def test_null_lag_after_xdel_and_trim_is_counted(cli_env, store, keys, capsys):
    client, stream = cli_env, keys.input_stream(0)
    ids = add_postbacks(client, stream, 10)
    client.xreadgroup(MATCHER_GROUP, "m-1", {stream: ">"}, count=4)
    client.xack(stream, MATCHER_GROUP, *ids[:2])
    client.xdel(stream, *ids[:2])  # processed entries go, as the matcher does
    client.xdel(stream, ids[6])  # an unread entry deleted: Redis can no longer tell the lag
    assert client.xinfo_groups(stream)[0].get("lag") is None  # absent on Redis 6.2

    code, report = run_json(capsys)
    g = group(report, stream, MATCHER_GROUP)
    assert code == 0
    assert (g["length"], g["lag"], g["pending"]) == (7, 5, 2)
    assert g["consumers"] == [{"name": "m-1", "pending": 2, "idle_s": g["consumers"][0]["idle_s"]}]
    assert g["oldest_pending_s"] >= 0

    client.xtrim(stream, maxlen=3, approximate=False)  # trims pending and unread alike
    code, report = run_json(capsys)
    g = group(report, stream, MATCHER_GROUP)
    assert (g["length"], g["lag"], g["pending"]) == (3, 3, 2)

    assert main(["lag"]) == 0
    table = capsys.readouterr().out
    row = next(line for line in table.splitlines() if line.startswith(stream))
    assert row.split()[:5] == [stream, MATCHER_GROUP, "3", "3", "2"]
    assert "None" not in table and "null" not in table
    assert "consumer m-1: 2 pending" in table


def test_count_lag_falls_back_to_length_minus_pending_past_the_limit(store, keys, redis_client):
    stream = keys.input_stream(0)
    add_postbacks(redis_client, stream, 30)
    assert lag.count_lag(redis_client, stream, "0-0", 30, 0, limit=50) == 30
    assert lag.count_lag(redis_client, stream, "0-0", 30, 4, limit=10) == 26


def test_retry_queue_dead_letters_and_every_partition(monkeypatch, cli_env, settings, capsys):
    keys = Keys(settings.namespace, partitions=3)
    monkeypatch.setenv("POSTBACK_PARTITIONS", "3")
    client = cli_env
    ensure_groups(client, keys)
    add_postbacks(client, keys.forward_stream(2), 4)
    client.zadd(keys.retry_queue(0), {"job-a": 1, "job-b": 2})
    client.zadd(keys.retry_queue(1), {"job-c": 3})
    client.xadd(keys.dead_letters(2), {"kind": "delivery", "error": "HTTP 500", "data": "{}"})

    code, report = run_json(capsys)
    assert code == 0
    assert len(report["groups"]) == 6
    assert report["retry_queue"] == 3
    assert report["dead_letters"] == 1
    assert group(report, keys.forward_stream(2), FORWARDER_GROUP)["lag"] == 4


def test_paused_partners_are_shown(cli_env, store, keys, capsys):
    cli_env.sadd(keys.partners_index(), "p1", "p2")
    cli_env.hset(
        keys.partner_health("p2"),
        mapping={"failures": "10", "paused": "1", "paused_since": "1", "next_probe": "2"},
    )
    code, report = run_json(capsys)
    assert [(p["partner_id"], p["failures"]) for p in report["paused_partners"]] == [("p2", 10)]
    assert main(["lag"]) == 0
    assert "paused partners: p2 (10 failures)" in capsys.readouterr().out


def test_max_lag_exit_codes(cli_env, store, keys, capsys):
    stream = keys.input_stream(0)
    add_postbacks(cli_env, stream, 5)
    assert main(["lag", "--max-lag", "5"]) == 0
    assert main(["lag", "--json", "--max-lag", "4"]) == 2
    out = capsys.readouterr()
    assert '"lag":5' in out.out  # the report is printed before exiting 2
    assert "over 4" in out.err

    cli_env.xreadgroup(MATCHER_GROUP, "m-1", {stream: ">"})  # lag 0, pending 5
    assert main(["lag", "--max-lag", "4"]) == 2
    assert main(["lag", "--max-lag", "5"]) == 0


def test_watch_redraws_with_a_trend_until_ctrl_c(monkeypatch, cli_env, store, keys, capsys):
    stream = keys.input_stream(0)
    sleeps = []

    def fake_sleep(seconds):
        sleeps.append(seconds)
        if len(sleeps) == 3:
            raise KeyboardInterrupt
        add_postbacks(cli_env, stream, 2)  # the backlog grows between frames

    monkeypatch.setattr(lag, "_sleep", fake_sleep)
    assert main(["lag", "--watch", "5"]) == 0
    out = capsys.readouterr().out
    assert out.count(lag.CLEAR) == 3
    assert sleeps == [5.0, 5.0, 5.0]
    last_frame = out.split(lag.CLEAR)[-1]
    row = next(line for line in last_frame.splitlines() if line.startswith(stream))
    assert "▁▅█ growing" in row
    assert row.split()[3] == "4"


def test_watch_one_frame_and_json_frames(monkeypatch, redis_client, store, keys):
    out = io.StringIO()
    assert lag.watch(redis_client, keys, 2, out, frames=1, clock=lambda: 1_700_000_000.0) == 0
    assert out.getvalue().startswith(lag.CLEAR)
    assert "steady" in out.getvalue()

    out = io.StringIO()
    monkeypatch.setattr(lag, "_sleep", lambda seconds: None)
    lag.watch(redis_client, keys, 2, out, as_json=True, frames=2)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and all(orjson.loads(line)["groups"] for line in lines)


def test_bad_arguments_and_unreachable_redis_fail_with_one_line(monkeypatch, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["lag", "--watch", "0"])
    assert exc.value.code == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1

    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    assert main(["lag"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Redis unreachable" in err
