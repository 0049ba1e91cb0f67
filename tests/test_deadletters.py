"""Dead letters: listing with filters, replay by partner or all, each entry put back once."""

from __future__ import annotations

import orjson
import pytest

from storage import deadletters
from storage.deadletters import list_dead_letters, replay
from storage.keys import Keys
from storage.redis_client import ensure_groups


@pytest.fixture
def keys2(settings) -> Keys:
    """Two partitions, to see dead letters of every partition listed and replayed."""
    return Keys(settings.namespace, partitions=2)


def dead_delivery(
    client, keys, n: int, partner_id: str, click_id: str, attempt: int = 9, entry_id: str = "*"
) -> dict:
    job = {
        "partner_id": partner_id,
        "payload": {"click_id": click_id, "payout": "4.00"},
        "log_id": "1714000000000-0",
        "conversion_id": f"cv{n}-x",
        "attempt": attempt,
        "created": 1714000000000,
    }
    client.xadd(
        keys.dead_letters(n),
        {
            "kind": "delivery",
            "error": "HTTP 500",
            "time": "1714000000000",
            "partner_id": partner_id,
            "log_id": job["log_id"],
            "data": orjson.dumps(job).decode(),
        },
        id=entry_id,
    )
    return job


def dead_postback(client, keys, n: int, entry_id: str = "*") -> dict:
    fields = {"source": "srcKEY", "method": "GET", "ip": "1.2.3.4", "params": '{"click_id":"C9"}'}
    client.xadd(
        keys.dead_letters(n),
        {
            "kind": "postback",
            "error": "match failed 5 times",
            "time": "1714000000000",
            "log_id": "1714000000000-1",
            "data": orjson.dumps(fields).decode(),
        },
        id=entry_id,
    )
    return fields


def test_listing_is_newest_first_across_partitions_and_filters(redis_client, keys2):
    dead_delivery(redis_client, keys2, 0, "p1", "A", entry_id="1000-0")
    dead_delivery(redis_client, keys2, 1, "p2", "B", entry_id="2000-0")
    dead_postback(redis_client, keys2, 1, entry_id="3000-0")
    dead_delivery(redis_client, keys2, 0, "p1", "C", entry_id="4000-0")

    letters = list_dead_letters(redis_client, keys2)
    assert [letter["kind"] for letter in letters] == [
        "delivery",
        "postback",
        "delivery",
        "delivery",
    ]
    assert [letter["data"].get("payload", {}).get("click_id") for letter in letters] == [
        "C",
        None,
        "B",
        "A",
    ]
    assert {letter["partition"] for letter in letters} == {0, 1}
    assert letters[0]["error"] == "HTTP 500" and letters[0]["time"] == 1714000000000

    only_p1 = list_dead_letters(redis_client, keys2, partner="p1")
    assert [letter["data"]["payload"]["click_id"] for letter in only_p1] == ["C", "A"]
    assert [
        letter["kind"] for letter in list_dead_letters(redis_client, keys2, kind="postback")
    ] == ["postback"]
    assert len(list_dead_letters(redis_client, keys2, limit=2)) == 2
    with pytest.raises(ValueError, match="kind"):
        list_dead_letters(redis_client, keys2, kind="nope")


def test_replay_refuses_without_a_partner_or_all(redis_client, keys2):
    dead_delivery(redis_client, keys2, 0, "p1", "A")
    with pytest.raises(ValueError, match="--partner"):
        replay(redis_client, keys2)
    assert len(list_dead_letters(redis_client, keys2)) == 1


def test_replay_by_partner_requeues_its_jobs_with_attempt_1(redis_client, keys2):
    ensure_groups(redis_client, keys2)
    job = dead_delivery(redis_client, keys2, 1, "p1", "A")
    dead_delivery(redis_client, keys2, 0, "p2", "B")

    assert replay(redis_client, keys2, partner="p1") == 1

    [(_id, fields)] = redis_client.xrange(keys2.forward_stream(1))
    assert orjson.loads(fields["job"]) == {**job, "attempt": 1}
    assert redis_client.xlen(keys2.forward_stream(0)) == 0
    assert [letter["partner_id"] for letter in list_dead_letters(redis_client, keys2)] == ["p2"]


def test_replay_all_puts_postbacks_back_on_the_input_stream(redis_client, keys2):
    fields = dead_postback(redis_client, keys2, 1)
    dead_delivery(redis_client, keys2, 0, "p1", "A")

    assert replay(redis_client, keys2, all=True) == 2

    [(_id, entry)] = redis_client.xrange(keys2.input_stream(1))
    assert entry == fields
    assert redis_client.xlen(keys2.forward_stream(0)) == 1
    assert list_dead_letters(redis_client, keys2) == []


def test_an_entry_replayed_by_someone_else_meanwhile_is_not_put_back_twice(
    redis_client, keys2, monkeypatch
):
    dead_delivery(redis_client, keys2, 0, "p1", "A")
    scan = deadletters._scan

    def scan_then_race(client, stream, partition, *, newest_first):
        letters = list(scan(client, stream, partition, newest_first=newest_first))
        # Another admin replays everything between our read and our script.
        for letter in letters:
            client.xdel(stream, letter["id"])
            client.xadd(keys2.forward_stream(partition), {"job": "theirs"})
        return iter(letters)

    monkeypatch.setattr(deadletters, "_scan", scan_then_race)
    assert replay(redis_client, keys2, all=True) == 0
    assert redis_client.xlen(keys2.forward_stream(0)) == 1
