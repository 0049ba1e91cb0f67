"""The idle wait on a Redis Cluster (processors/wakeup.py): one watcher per partition."""

from __future__ import annotations

import threading

import pytest

from processors.wakeup import Wakeup
from storage.keys import MATCHER_GROUP, Keys
from storage.redis_client import connect, delete_namespace, ensure_groups

#: Longer than any deadline below: a wait that ends was ended by an entry.
LONG_MS = 600_000


@pytest.fixture
def layout(settings, cluster):
    settings = settings.with_overrides(redis_url=cluster.url, partitions=16)
    keys = Keys(settings.namespace, settings.partitions)
    client = connect(settings)
    ensure_groups(client, keys)
    wakeup = Wakeup(client, MATCHER_GROUP, keys.input_stream, block_ms=LONG_MS)
    yield client, keys, wakeup
    wakeup.close()
    delete_namespace(client, settings.namespace)
    client.close()


def wait_in_thread(wakeup: Wakeup, partitions, timeout_ms: int = LONG_MS):
    answer: list[bool] = []
    waiter = threading.Thread(target=lambda: answer.append(wakeup.wait(partitions, timeout_ms)))
    waiter.start()
    return waiter, answer


def test_an_entry_on_any_partition_ends_a_long_wait_over_all_of_them(layout):
    client, keys, wakeup = layout
    for n in (11, 4):
        waiter, answer = wait_in_thread(wakeup, keys.all_partitions())
        client.xadd(keys.input_stream(n), {"params": "{}"})
        waiter.join(60)
        assert not waiter.is_alive() and answer == [True], f"partition {n}"
        # the worker reads it, as its step does after the wait
        client.xreadgroup(MATCHER_GROUP, "m", {keys.input_stream(n): ">"})


def test_an_entry_the_group_was_not_given_yet_ends_the_wait_at_once(layout):
    client, keys, wakeup = layout
    client.xadd(keys.input_stream(7), {"params": "{}"})  # before the wait begins
    waiter, answer = wait_in_thread(wakeup, [3, 7, 9])
    waiter.join(60)
    assert answer == [True]


def test_entries_already_read_by_the_group_do_not_end_the_wait(layout):
    client, keys, wakeup = layout
    client.xadd(keys.input_stream(5), {"params": "{}"})
    client.xreadgroup(MATCHER_GROUP, "m", {keys.input_stream(5): ">"})
    assert wakeup.wait([5, 6], timeout_ms=300) is False
