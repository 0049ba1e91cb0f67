"""Group commit: concurrent callers' calls share a pipeline, each gets its own answers."""

from __future__ import annotations

import threading
import time

import pytest

from storage.group_commit import GroupCommit


class Pipelines:
    """A stand-in for ``run_many``: records each pipeline, can hold the first one open."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.sent: list[list] = []
        self.release = threading.Event()
        self.release.set()
        self.fail_on = fail_on

    def __call__(self, calls: list) -> list:
        self.sent.append([args[0] for _keys, args in calls])
        self.release.wait(10)
        if self.fail_on and any(args[0] == self.fail_on for _keys, args in calls):
            raise ConnectionError("lost the connection")
        return [ValueError(args[0]) if args[0] == "bad" else f"ok:{args[0]}" for _, args in calls]


def _until(check, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)  # polling with a deadline


def _call(writes: GroupCommit, name: str, out: dict) -> threading.Thread:
    def run() -> None:
        try:
            out[name] = writes.run_many([(("k",), (name,))])
        except Exception as exc:
            out[name] = exc

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_a_lone_caller_is_sent_at_once_and_gets_its_answers():
    pipelines = Pipelines()
    writes = GroupCommit(pipelines)
    assert writes.run_many([(("k",), ("a",)), (("k",), ("bad",))])[0] == "ok:a"
    assert pipelines.sent == [["a", "bad"]]


def test_callers_arriving_during_a_round_trip_share_the_next_pipeline():
    pipelines = Pipelines()
    pipelines.release.clear()  # the first round trip stays out
    writes = GroupCommit(pipelines)
    out: dict = {}
    threads = [_call(writes, "first", out)]
    _until(lambda: len(pipelines.sent) == 1)
    threads += [_call(writes, f"c{i}", out) for i in range(5)]
    _until(lambda: len(writes._queue) == 5)
    pipelines.release.set()
    for thread in threads:
        thread.join(10)
    assert pipelines.sent[0] == ["first"]
    assert sorted(pipelines.sent[1]) == [f"c{i}" for i in range(5)]
    assert len(pipelines.sent) == 2
    assert out == {name: [f"ok:{name}"] for name in ["first"] + [f"c{i}" for i in range(5)]}


def test_a_failed_round_trip_fails_its_callers_only_and_the_next_one_goes():
    pipelines = Pipelines(fail_on="doomed")
    pipelines.release.clear()
    writes = GroupCommit(pipelines)
    out: dict = {}
    first = _call(writes, "first", out)
    _until(lambda: len(pipelines.sent) == 1)
    doomed = [_call(writes, "doomed", out), _call(writes, "neighbour", out)]
    _until(lambda: len(writes._queue) == 2)
    pipelines.release.set()
    for thread in [first, *doomed]:
        thread.join(10)
    assert out["first"] == ["ok:first"]
    assert isinstance(out["doomed"], ConnectionError)
    assert isinstance(out["neighbour"], ConnectionError)  # it shared the round trip
    assert writes.run_many([(("k",), ("later",))]) == ["ok:later"]


def test_errors_of_single_calls_come_back_in_place():
    writes = GroupCommit(Pipelines())
    results = writes.run_many([(("k",), ("bad",)), (("k",), ("fine",))])
    assert isinstance(results[0], ValueError) and results[1] == "ok:fine"


@pytest.mark.parametrize("most", [1, 3])
def test_a_pipeline_carries_at_most_most_calls_but_always_one_caller(most):
    pipelines = Pipelines()
    pipelines.release.clear()
    writes = GroupCommit(pipelines, most=most)
    out: dict = {}
    threads = [_call(writes, "first", out)]
    _until(lambda: len(pipelines.sent) == 1)
    threads += [_call(writes, f"c{i}", out) for i in range(4)]
    _until(lambda: len(writes._queue) == 4)
    pipelines.release.set()
    for thread in threads:
        thread.join(10)
    assert all(len(sent) <= most for sent in pipelines.sent)
    assert sum(len(sent) for sent in pipelines.sent) == 5
    assert len(out) == 5 and all(value == [f"ok:{name}"] for name, value in out.items())
