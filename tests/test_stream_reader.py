"""The one chunked stream reader (storage/stream_reader.py): every entry once, in order,
a chunk per command, whichever way it reads."""

from __future__ import annotations

import pytest

from storage.stream_reader import id_ms, id_order, read_range


@pytest.fixture
def stream(redis_client, keys) -> str:
    return keys.dead_letters(0)  # any stream of the test's namespace


class Counting:
    """A client that passes XRANGE/XREVRANGE through and records each one's reply size."""

    def __init__(self, client) -> None:
        self.client, self.replies = client, []

    def xrange(self, *args, **kwargs):
        return self._record(self.client.xrange(*args, **kwargs), kwargs["count"])

    def xrevrange(self, *args, **kwargs):
        return self._record(self.client.xrevrange(*args, **kwargs), kwargs["count"])

    def _record(self, reply, count):
        assert len(reply) <= count
        self.replies.append(len(reply))
        return reply


def add(client, stream: str, ids: list[str]) -> None:
    for entry_id in ids:
        client.xadd(stream, {"n": entry_id}, id=entry_id)


@pytest.mark.parametrize("chunk", [1, 4, 5, 1000])
def test_every_entry_once_in_order_across_chunks(redis_client, stream, chunk):
    ids = [f"{1000 + i // 3}-{i % 3}" for i in range(20)]  # three entries per millisecond
    add(redis_client, stream, ids)
    counting = Counting(redis_client)

    oldest_first = [entry_id for entry_id, _ in read_range(counting, stream, chunk=chunk)]
    newest_first = [
        entry_id for entry_id, _ in read_range(counting, stream, newest_first=True, chunk=chunk)
    ]

    assert oldest_first == ids
    assert newest_first == ids[::-1]
    assert sum(counting.replies) == 2 * len(ids)
    # A chunk per command; one more (empty) when the last chunk came back full.
    assert len(counting.replies) == 2 * (len(ids) // chunk + 1)


def test_bounds_are_inclusive_and_a_bare_millisecond_takes_all_of_it(redis_client, stream):
    add(redis_client, stream, ["1000-0", "1000-1", "2000-0", "2000-1", "3000-0"])

    def read(low, high, newest_first=False):
        entries = read_range(redis_client, stream, low, high, newest_first=newest_first, chunk=1)
        return [entry_id for entry_id, _ in entries]

    assert read("1000-1", "2000") == ["1000-1", "2000-0", "2000-1"]
    assert read("1000-1", "2000", newest_first=True) == ["2000-1", "2000-0", "1000-1"]
    assert read("(1000-1", "(3000-0") == ["2000-0", "2000-1"]


def test_a_missing_stream_reads_as_empty(redis_client, stream):
    assert list(read_range(redis_client, stream)) == []
    assert list(read_range(redis_client, stream, newest_first=True)) == []


def test_entry_ids_as_times_and_sort_keys():
    assert id_ms("1714000000000-3") == 1714000000000
    # As strings "999-0" > "1000-0" and "5-10" < "5-9"; as IDs both go the other way.
    assert sorted(["5-10", "1000-0", "999-0", "5-9"], key=id_order) == [
        "5-9",
        "5-10",
        "999-0",
        "1000-0",
    ]
