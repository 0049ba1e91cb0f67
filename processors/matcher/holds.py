"""Held points coming due: the matcher's periodic step that credits them (SPEC §4 "Hold").

An approval on an offer with a hold period records its points as held (``match.lua``)
and puts the conversion in its partition's due set, scored by the ms the hold ends.
Every running matcher calls :func:`release_due` for the partitions it works, every
``HOLD_CHECK_S``: one pipelined ZRANGEBYSCORE over those partitions (nothing else when
nothing is due), then one ``hold_due.lua`` call per partition with due holds, which
credits each conversion and removes it from the set in one step. Two matchers finding
the same hold, or a matcher killed between the read and the script, cannot credit it
twice: the script credits only what is still in the set.

    >>> release_due(client, scripts, keys, [0, 1], now_ms=time.time_ns() // 10**6)
    3
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import redis

from storage.keys import Keys
from storage.scripts import Scripts

log = logging.getLogger("postback.matcher")

#: Seconds between two looks at the due sets: holds are days or hours long, so a
#: second late is nothing, and an idle matcher then sends one small pipeline a second.
HOLD_CHECK_S = 1.0
#: Conversions credited per script call (a partition with more goes round again).
HOLD_BATCH = 200


def release_due(
    client: redis.Redis,
    scripts: Scripts,
    keys: Keys,
    partitions: Iterable[int],
    *,
    now_ms: int,
    batch: int = HOLD_BATCH,
) -> int:
    """Credit every hold of ``partitions`` due at ``now_ms``; returns conversions credited."""
    waiting = list(partitions)
    credited = 0
    while waiting:
        pipe = client.pipeline(transaction=False)
        for n in waiting:
            pipe.zrangebyscore(keys.holds_due(n), "-inf", now_ms, start=0, num=batch)
        found = []
        for n, ids in zip(waiting, pipe.execute(raise_on_error=False), strict=True):
            if isinstance(ids, redis.ResponseError):
                # A key of the wrong type must not stop the matcher: logged, skipped.
                log.error("holds of partition %d not read: %s", n, ids)
            elif ids:
                found.append((n, ids))
        if not found:
            return credited
        calls = [
            (
                [
                    keys.holds_due(n),
                    keys.points(n),
                    keys.held(n),
                    *(keys.conversion(n, cid) for cid in ids),
                ],
                [now_ms, *ids],
            )
            for n, ids in found
        ]
        for (n, _), result in zip(found, scripts.run_many(client, "hold_due", calls), strict=True):
            if isinstance(result, Exception):
                # A malformed record must not stop the matcher: it stays due, logged.
                log.error("holds of partition %d not credited: %s", n, result)
                found = [f for f in found if f[0] != n]
                continue
            credited += int(result)
        waiting = [n for n, ids in found if len(ids) >= batch]
    return credited
