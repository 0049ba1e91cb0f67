"""Dead letters: list them, and replay them (``postback admin deadletters list|replay``).

Two kinds share each partition's dead-letter stream (``storage.formats``):

* ``delivery``: a forward job that failed its last attempt; replay puts the job back on
  the forward stream with ``attempt`` reset to 1, so it gets the whole schedule again;
* ``postback``: an input entry the matcher gave up on; replay adds its fields back to
  the input stream (it gets a new log_id; the conversion identity makes a postback that
  was in fact processed a duplicate, never a second credit).

Each replayed entry is added and removed in one script (``deadletter_replay``), so two
admins replaying at once put each entry back once.

    >>> list_dead_letters(client, keys, partner="p1", limit=20)
    [{'id': '1714…-0', 'partition': 0, 'kind': 'delivery', 'partner_id': 'p1', ...}]
    >>> replay(client, keys, partner="p1")
    3
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator

import orjson
import redis

from storage.keys import Keys
from storage.scripts import default_scripts
from storage.stream_reader import id_ms, id_order, read_range

KINDS = ("delivery", "postback")
CHUNK = 500


def _decode(entry_id: str, partition: int, fields: dict[str, str]) -> dict:
    try:
        data = orjson.loads(fields.get("data") or "null")
    except orjson.JSONDecodeError:
        data = fields.get("data")
    return {
        "id": entry_id,
        "partition": partition,
        "kind": fields.get("kind", ""),
        "partner_id": fields.get("partner_id", ""),
        "log_id": fields.get("log_id", ""),
        "error": fields.get("error", ""),
        "time": int(fields.get("time") or id_ms(entry_id)),
        "data": data,
    }


def _matches(letter: dict, partner: str | None, kind: str | None) -> bool:
    return (partner is None or letter["partner_id"] == partner) and (
        kind is None or letter["kind"] == kind
    )


def _scan(
    client: redis.Redis, stream: str, partition: int, *, newest_first: bool
) -> Iterator[dict]:
    """A dead-letter stream, a chunk at a time, decoded."""
    for entry_id, fields in read_range(client, stream, newest_first=newest_first, chunk=CHUNK):
        yield _decode(entry_id, partition, fields)


def _check_kind(kind: str | None) -> None:
    if kind is not None and kind not in KINDS:
        raise ValueError(f"kind: must be one of {', '.join(KINDS)}, not {kind!r}")


def list_dead_letters(
    client: redis.Redis,
    keys: Keys,
    *,
    partner: str | None = None,
    kind: str | None = None,
    limit: int = 100,
) -> list[dict]:
    """Dead letters of every partition, newest first, filtered by partner and kind.

    Each is ``{id, partition, kind, partner_id, log_id, error, time (ms), data}`` with
    ``data`` decoded (the job, or the input entry's fields).
    """
    _check_kind(kind)
    if limit <= 0:
        return []
    streams = [
        _scan(client, keys.dead_letters(n), n, newest_first=True) for n in keys.all_partitions()
    ]
    merged = heapq.merge(*streams, key=lambda letter: id_order(letter["id"]), reverse=True)
    out = []
    for letter in merged:
        if _matches(letter, partner, kind):
            out.append(letter)
            if len(out) >= limit:
                break
    return out


def replay(
    client: redis.Redis,
    keys: Keys,
    *,
    partner: str | None = None,
    all: bool = False,  # noqa: A002 - the CLI flag's name
    kind: str | None = None,
) -> int:
    """Put dead letters back to work; returns how many were replayed.

    Refuses (ValueError) without ``partner`` or ``all``, so a bare ``replay`` never
    floods partners by accident. ``partner`` replays that partner's deliveries only.
    """
    if not partner and not all:
        raise ValueError("give --partner P or --all (nothing is replayed by default)")
    _check_kind(kind)
    scripts = default_scripts()
    replayed = 0
    for n in keys.all_partitions():
        dead = keys.dead_letters(n)
        # Collect first: the script deletes entries from the stream being read.
        letters = [
            letter
            for letter in _scan(client, dead, n, newest_first=False)
            if _matches(letter, partner or None, kind)
        ]
        for letter in letters:
            target, fields = _replay_entry(keys, n, letter)
            if target is None:
                continue
            if scripts.run(client, "deadletter_replay", [dead, target], [letter["id"], *fields]):
                replayed += 1
    return replayed


def _replay_entry(keys: Keys, n: int, letter: dict) -> tuple[str | None, list[str]]:
    data = letter["data"]
    if letter["kind"] == "delivery":
        if isinstance(data, dict):
            job = orjson.dumps({**data, "attempt": 1}).decode()
        else:  # a malformed job: put it back as it came
            job = data if isinstance(data, str) else orjson.dumps(data).decode()
        return keys.forward_stream(n), ["job", job]
    if letter["kind"] == "postback" and isinstance(data, dict) and data:
        fields: list[str] = []
        for name, value in data.items():
            fields += [str(name), value if isinstance(value, str) else orjson.dumps(value).decode()]
        return keys.input_stream(n), fields
    return None, []


def letter_id(partition: int, entry_id: str) -> str:
    """The id that names one dead letter: its partition and its stream entry id.

    Entry ids alone are not enough: two partitions' streams can hold the same id (two
    letters dead-lettered in the same millisecond).

    >>> letter_id(1, "1714000000000-0")
    '1:1714000000000-0'
    """
    return f"{partition}:{entry_id}"


def parse_letter_id(value: str, partitions: int) -> tuple[int, str] | None:
    """``"1:1714000000000-0"`` → ``(1, "1714000000000-0")``; None when it is not one."""
    partition, colon, entry_id = value.partition(":")
    if not (colon and partition.isascii() and partition.isdigit()):
        return None
    if int(partition) >= partitions or not entry_id:
        return None
    return int(partition), entry_id


def replay_ids(client: redis.Redis, keys: Keys, ids: list[str]) -> list[str]:
    """Replay the dead letters with these ids (``letter_id``: partition and entry id).

    Returns the ids replayed; an id no partition holds (unknown, or already replayed by
    someone else) is skipped. Only the named partition's letter is replayed, even when
    another partition holds an entry with the same stream id.

    >>> replay_ids(client, keys, ["1:1714000000000-0"])
    ['1:1714000000000-0']
    """
    places = []
    for wanted in dict.fromkeys(ids):
        place = parse_letter_id(wanted, keys.partitions)
        if place is not None:
            places.append((wanted, *place))
    pipe = client.pipeline(transaction=False)
    for _, n, entry_id in places:
        pipe.xrange(keys.dead_letters(n), min=entry_id, max=entry_id)
    scripts = default_scripts()
    replayed = []
    for (wanted, n, entry_id), found in zip(places, pipe.execute(), strict=True):
        if not found:
            continue
        letter = _decode(entry_id, n, found[0][1])
        target, fields = _replay_entry(keys, n, letter)
        if target is None:
            continue
        dead = keys.dead_letters(n)
        if scripts.run(client, "deadletter_replay", [dead, target], [entry_id, *fields]):
            replayed.append(wanted)
    return replayed
