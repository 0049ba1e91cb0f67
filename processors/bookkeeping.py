"""The jobs a forwarder holds, and what recording one finished attempt writes.

Each finished attempt (or a job deferred without one) becomes one ``delivery_done``
script call: ack, retry or dead letter, forwarded-log entry and stats, all or nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import orjson

from core import delivery
from core.delivery import DeliveryRequest, Outcome
from core.entities import Partner
from storage.keys import FORWARDER_GROUP, Keys


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


def delivery_done_call(
    keys: Keys,
    finished: Finished,
    *,
    schedule: Sequence[float],
    retention_ms: int,
    now_ms: int,
) -> tuple[list[str], list]:
    """The keys and arguments of ``delivery_done.lua`` for one finished attempt.

    ``now_ms`` is the time of recording: the forwarded log is trimmed to ``retention_ms``
    before it, and a retry is due its delay after it.
    """
    item = finished.held
    n = item.partition
    script_keys = [
        keys.forward_stream(n),
        keys.retry_queue(n),
        keys.dead_letters(n),
        keys.forwarded_log(n),
        keys.stats(n),
    ]
    now = finished.time_ms
    minid = max(now_ms - retention_ms, 0)
    job = item.job or {}
    head = [FORWARDER_GROUP, item.entry_id]
    if finished.outcome is None:  # deferred: no attempt made
        return script_keys, [
            *head,
            "defer",
            item.raw,
            finished.due_ms,
            now,
            minid,
            item.partner_id,
            "",
            "",
            item.raw,
            "",
            "",
        ]
    outcome = finished.outcome
    result = delivery.final_result(outcome, item.attempt, schedule)
    if item.job is None:
        result = delivery.DEAD_LETTERED
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
        time_ms=now,
    )
    latency = "" if outcome.response_ms is None else str(outcome.response_ms)
    buckets = ",".join(map(str, delivery.latency_buckets(outcome.response_ms))) if latency else ""
    error = outcome.error or result
    args = [
        *head,
        result,
        member,
        due,
        now,
        minid,
        item.partner_id,
        error,
        entry["log_id"],
        item.raw,
        latency,
        buckets,
    ]
    for name, value in entry.items():
        args += [name, value]
    return script_keys, args
