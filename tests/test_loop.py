"""The one worker loop (processors/loop.py), driving a stand-in for a worker's step."""

from __future__ import annotations

import threading

import redis

from processors.leases import holders
from processors.loop import WorkerLoop
from storage.keys import MATCHER_GROUP, Keys


class RecordingWork:
    """A step that fails once as a lost Redis would, then records what the loop did."""

    group = MATCHER_GROUP
    consumer = "loop-test"
    busy = False

    def __init__(self) -> None:
        self.events: list = []
        self.failures_left = 1

    def step(self, partitions, *, wait_ms, stopping) -> None:
        if self.failures_left:
            self.failures_left -= 1
            raise redis.ConnectionError("connection reset")
        self.events.append(("step", tuple(partitions), wait_ms))
        if sum(1 for e in self.events if e[0] == "step") == 2:
            stopping.set()

    def take_over(self, partition, live) -> None:
        self.events.append(("take_over", partition, frozenset(live)))

    def rebalancing(self) -> None:
        self.events.append(("rebalancing",))

    def reconnected(self) -> None:
        self.events.append(("reconnected",))

    def finish(self) -> None:
        self.events.append(("finish",))


def test_the_loop_takes_its_partitions_over_rides_out_a_lost_redis_and_hands_them_back(
    redis_client, settings
):
    settings = settings.with_overrides(partitions=3, lease_ms=6000, block_ms=5000)
    keys = Keys(settings.namespace, settings.partitions)
    work = RecordingWork()
    loop = WorkerLoop(work, redis_client, keys, settings)
    codes = []
    runner = threading.Thread(target=lambda: codes.append(loop.run()))  # no signal handlers
    runner.start()
    runner.join(timeout=30)
    assert not runner.is_alive() and codes == [0]

    kinds = [e[0] for e in work.events]
    assert kinds[0] == "rebalancing"
    # alone in the group: every partition is taken over, with itself as the only live one
    assert [e[1:] for e in work.events if e[0] == "take_over"] == [
        (n, frozenset({"loop-test"})) for n in range(3)
    ]
    # the failed step is followed by a reconnect and steps again; finish comes last
    assert kinds.index("reconnected") < kinds.index("step")
    assert kinds[-1] == "finish"
    # every step gets all held partitions and a wait that stops short of a lease renewal
    assert {e[1:] for e in work.events if e[0] == "step"} == {((0, 1, 2), 1500)}
    # the groups were made, and the leases are given back on the way out
    assert all(redis_client.exists(keys.input_stream(n)) for n in range(3))
    assert set(holders(redis_client, keys, MATCHER_GROUP).values()) == {None}
