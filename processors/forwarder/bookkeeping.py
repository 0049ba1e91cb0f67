"""The jobs a forwarder holds, and what recording one finished attempt writes.

Each finished attempt (or a job deferred without one) is a record of a ``delivery_done``
script call: ack, retry or dead letter, forwarded-log entry and stats, all or nothing.
One call records the attempts of a partition that finished since the last step.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import orjson
import redis

from core import delivery
from core.delivery import Outcome
from core.delivery_request import DeliveryRequest
from core.partners import Partner
from storage.formats import LATENCY_BUCKETS_MS
from storage.keys import FORWARDER_GROUP, Keys
from storage.scripts import Scripts

#: Most attempts one ``delivery_done`` call records (Redis runs nothing else meanwhile).
MAX_RECORDS_PER_CALL = 200
#: The forwarded log's fields, in the order a call sends their values.
FIELDS = delivery.FORWARDED_FIELDS
_NO_ENTRY = [""] * len(FIELDS)
_BOUNDS = ",".join(map(str, LATENCY_BUCKETS_MS))


@dataclass
class Held:
    """A forward-stream entry this process holds: waiting for a slot, or in flight."""

    partition: int
    entry_id: str
    raw: str  # the job JSON as read (the dead letter's data)
    job: dict | None  # None when the entry is malformed
    touched: float  # monotonic time of the last read/claim/heartbeat
    probe: bool = False
    # Read from the job once: the main thread looks at them several times per delivery.
    partner_id: str = field(init=False)
    attempt: int = field(init=False)

    def __post_init__(self) -> None:
        job = self.job or {}
        self.partner_id = str(job.get("partner_id", ""))
        try:
            self.attempt = max(1, int(job.get("attempt", 1)))
        except (TypeError, ValueError):
            self.attempt = 1


@dataclass
class Finished:
    """An attempt to record (or a job to defer, when ``outcome`` is None)."""

    held: Held
    partner: Partner | None
    request: DeliveryRequest | None
    outcome: Outcome | None
    time_ms: int
    due_ms: int = 0  # defer only


def delivery_done_calls(
    keys: Keys,
    batch: Sequence[Finished],
    *,
    schedule: Sequence[float],
    retention_ms: int,
    now_ms: int,
    per_call: int = MAX_RECORDS_PER_CALL,
) -> list[tuple[list[str], list, list[Finished]]]:
    """The ``delivery_done.lua`` calls recording ``batch``: (keys, args, what they record).

    One call per partition (and per ``per_call`` attempts). ``now_ms`` is the time of
    recording: the forwarded log is trimmed to ``retention_ms`` before it, and a retry is
    due its delay after it.
    """
    by_partition: dict[int, list[Finished]] = defaultdict(list)
    for finished in batch:
        by_partition[finished.held.partition].append(finished)
    head = [FORWARDER_GROUP, max(now_ms - retention_ms, 0), _BOUNDS, len(FIELDS), *FIELDS]
    calls = []
    for n, items in by_partition.items():
        script_keys = [
            keys.forward_stream(n),
            keys.retry_queue(n),
            keys.dead_letters(n),
            keys.forwarded_log(n),
            keys.stats(n),
        ]
        for start in range(0, len(items), per_call):
            chunk = items[start : start + per_call]
            args = list(head)
            for finished in chunk:
                args += _record_values(finished, schedule, now_ms)
            calls.append((script_keys, args, chunk))
    return calls


def _record_values(finished: Finished, schedule: Sequence[float], now_ms: int) -> list:
    """One attempt's (or deferral's) values in a ``delivery_done`` call."""
    item = finished.held
    if finished.outcome is None:  # deferred: no attempt made
        return [
            item.entry_id,
            "defer",
            item.raw,
            finished.due_ms,
            finished.time_ms,
            item.partner_id,
            "",
            "",
            "",
            "",
            *_NO_ENTRY,
        ]
    outcome = finished.outcome
    result = delivery.final_result(outcome, item.attempt, schedule)
    if item.job is None:
        result = delivery.DEAD_LETTERED
    job = item.job or {}
    member, due = "", ""
    if result == delivery.RETRY:
        delay = delivery.retry_delay(item.attempt, schedule, retry_after_s=outcome.retry_after_s)
        member = orjson.dumps({**job, "attempt": item.attempt + 1}).decode()
        due = now_ms + int((delay or 0) * 1000)
    entry = delivery.forwarded_entry(
        job,
        finished.partner,
        finished.request,
        outcome,
        attempt=item.attempt,
        result=result,
        time_ms=finished.time_ms,
    )
    return [
        item.entry_id,
        result,
        member,
        due,
        finished.time_ms,
        item.partner_id,
        outcome.error or result,
        entry["log_id"],
        item.raw if result == delivery.DEAD_LETTERED else "",
        "" if outcome.response_ms is None else outcome.response_ms,
        *[entry[name] for name in FIELDS],
    ]


class Recorder:
    """Records finished attempts: a ``delivery_done`` call per partition, one round trip.

    Calls of several partitions go in one pipeline (split per node on a cluster).
    """

    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        scripts: Scripts,
        *,
        schedule: Sequence[float],
        retention_ms: int,
    ) -> None:
        self.keys = keys
        self.schedule = schedule
        self.retention_ms = retention_ms
        self.client, self.scripts = client, scripts

    def record(self, batch: Sequence[Finished], now_ms: int) -> list[tuple[Finished, object]]:
        """Each finished attempt with its call's answer: 1, 0 (recorded before) or an error.

        On a lost connection this raises; a record that did go in is answered 0 by its
        XACK guard when the batch is recorded again, never recorded twice.
        """
        calls = self._calls(batch, now_ms)
        answers: list[tuple[Finished, object]] = []
        for (_keys, _args, chunk), reply in zip(calls, self._run(calls), strict=True):
            if isinstance(reply, Exception) and len(chunk) > 1:
                # Refused, the call wrote nothing (the script checks everything before its
                # first write): one record at a time, so only the bad one stays pending.
                single = self._calls(chunk, now_ms, per_call=1)
                replies = [r[0] if isinstance(r, list) else r for r in self._run(single)]
                answers += zip(chunk, replies, strict=True)
            else:  # a list of answers, or the error of a lone record
                answers += zip(chunk, reply if isinstance(reply, list) else [reply], strict=True)
        return answers

    def _calls(self, batch: Sequence[Finished], now_ms: int, per_call: int = MAX_RECORDS_PER_CALL):
        return delivery_done_calls(
            self.keys,
            batch,
            schedule=self.schedule,
            retention_ms=self.retention_ms,
            now_ms=now_ms,
            per_call=per_call,
        )

    def _run(self, calls: list) -> list:
        return self.scripts.run_many(self.client, "delivery_done", [call[:2] for call in calls])
