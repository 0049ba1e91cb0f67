"""Reading the logs: windows by stream ID, filters, newest-first pages, partition merge.

The helpers at the top write log entries and conversions in the shapes of
``storage.formats`` directly, so these tests (and the admin and export ones, which import
them) do not depend on the matcher or forwarder.
"""

from __future__ import annotations

import orjson
import pytest

from storage import logs
from storage.keys import Keys

SOURCE_KEY = "srcKEY0123456789abcdWXYZ"
HOUR_MS = 3600 * 1000


# -- helpers shared with test_admin_api and test_export -------------------------------------
def add_source(client, keys: Keys, key: str = SOURCE_KEY, name: str = "SurveyWall") -> None:
    client.hset(keys.source(key), mapping={"key": key, "name": name, "active": "1"})
    client.sadd(keys.sources_index(), key)


def received_fields(i: int, ms: int, **changes) -> dict[str, str]:
    params = {
        "click_id": f"CLK-{i}",
        "status": "approved",
        "payout": "3.50",
        "currency": "USD",
        "transaction_id": f"TXN-{i}",
        "custom": {"user_age": 28, "country": "US"},
    }
    fields = {
        "log_id": f"{ms}-{i}",
        "time": str(ms),
        "source": SOURCE_KEY,
        "method": "GET",
        "ip": "203.0.113.7",
        "params": orjson.dumps(params).decode(),
        "outcome": "matched",
        "status": "approved",
        "conversion_id": f"cv0-{i:024d}",
        "click_id": f"CLK-{i}",
        "offer_id": "VBFS6",
        "partner_id": "p1",
        "user_id": "u1",
        "matched_by": "click_id",
    }
    fields.update({k: str(v) for k, v in changes.items()})
    return fields


def add_received(client, keys: Keys, ms: int, i: int = 0, partition: int = 0, **changes) -> str:
    """One received-log entry at ``ms`` (its stream ID time)."""
    return client.xadd(
        keys.received_log(partition), received_fields(i, ms, **changes), id=f"{ms}-{i}"
    )


def forwarded_fields(i: int, ms: int, **changes) -> dict[str, str]:
    payload = {"click_id": f"CLK-{i}", "status": "approved", "payout": "2.80", "currency": "USD"}
    fields = {
        "partner_id": "p1",
        "partner_name": "Partner One",
        "partner_email": "ops@partner.example",
        "url": "https://partner.example/pb?click_id=CLK-1&payout=2.80",
        "method": "GET",
        "success": "1",
        "status_code": "200",
        "response_body": "OK",
        "response_ms": "42",
        "attempt": "1",
        "error": "",
        "log_id": f"{ms}-0",
        "conversion_id": f"cv0-{i:024d}",
        "payload": orjson.dumps(payload).decode(),
        "time": str(ms),
        "result": "delivered",
    }
    fields.update({k: str(v) for k, v in changes.items()})
    return fields


def add_forwarded(client, keys: Keys, ms: int, i: int = 0, partition: int = 0, **changes) -> str:
    return client.xadd(
        keys.forwarded_log(partition), forwarded_fields(i, ms, **changes), id=f"{ms}-{i}"
    )


def add_conversion(client, keys: Keys, conversion_id: str, created: int, **changes) -> None:
    n = int(conversion_id[2 : conversion_id.index("-")])
    data = {
        "conversion_id": conversion_id,
        "source": SOURCE_KEY,
        "click_id": "CLK-1",
        "offer_id": "VBFS6",
        "partner_id": "p1",
        "user_id": "u1",
        "transaction_id": "TXN-1",
        "goal": "",
        "status": "approved",
        "payout_cents": "350",
        "partner_payout_cents": "280",
        "credited_cents": "280",
        "currency": "USD",
        "custom": '{"user_age": 28}',
        "matched_by": "click_id",
        "log_id": f"{created}-0",
        "created": str(created),
        "updated": str(created),
        "history": orjson.dumps(
            [{"status": "approved", "at": created, "payout_cents": 350}]
        ).decode(),
    }
    data.update({k: str(v) for k, v in changes.items()})
    client.hset(keys.conversion(n, conversion_id), mapping=data)
    client.zadd(keys.conversion_index(n), {conversion_id: created})


# -- pure parts ---------------------------------------------------------------------------------
def test_parse_time_accepts_dates_offsets_and_naive_utc():
    assert logs.parse_time("2024-05-01") == 1714521600000
    assert logs.parse_time("2024-05-01", end_of_day=True) == 1714521600000 + 24 * HOUR_MS
    assert logs.parse_time("2024-05-01T12:00:00Z") == 1714564800000
    assert logs.parse_time("2024-05-01T12:00:00") == 1714564800000
    assert logs.parse_time("2024-05-01T14:00:00+02:00") == 1714564800000
    assert logs.parse_time("2024-05-01T12:00:00.250Z") == 1714564800250
    with pytest.raises(logs.TimeError, match="ISO 8601"):
        logs.parse_time("yesterday")


def test_window_ids_are_half_open():
    window = logs.Window(1000, 2000)
    assert (window.min_id, window.max_id) == ("1000-0", "1999")
    assert window.contains(1000) and not window.contains(2000)
    assert logs.Window.last_hours(1, now_ms=10 * HOUR_MS) == logs.Window(
        9 * HOUR_MS, 10 * HOUR_MS + 1
    )


def test_iso_and_mask():
    assert logs.iso_ms(1714564800250) == "2024-05-01T12:00:00.250Z"
    assert logs.mask_key(SOURCE_KEY) == "…WXYZ"
    assert logs.mask_key("") == ""


def test_paginate_counts_everything_but_builds_only_the_page():
    built = []

    def to_row(entry):
        built.append(entry)
        return entry

    page = logs.paginate(iter(range(23)), 3, 10, to_row)
    assert (page.rows, page.total, page.pages) == ([20, 21, 22], 23, 3)
    assert built == [20, 21, 22]
    past = logs.paginate(iter(range(23)), 9, 10, to_row)
    assert (past.rows, past.total, past.pages) == ([], 23, 3)
    empty = logs.paginate(iter(()), 1, 50, to_row)
    assert empty.envelope() == {"logs": [], "page": 1, "pages": 0, "total": 0}


def test_scan_stops_at_its_limit():
    scan = logs.Scan(iter(range(10)), limit=4)
    assert list(scan) == [0, 1, 2, 3] and scan.truncated
    whole = logs.Scan(iter(range(4)), limit=4)
    assert list(whole) == [0, 1, 2, 3] and not whole.truncated


# -- against Redis ------------------------------------------------------------------------------
def test_window_selects_by_stream_id_in_chunks(redis_client, keys):
    base = 1_700_000_000_000
    for i in range(25):
        add_received(redis_client, keys, base + i * 1000, i)
    window = logs.Window(base + 5000, base + 15000)  # entries 5..14
    found = list(logs.iter_stream(redis_client, keys.received_log(0), window, chunk=4))
    assert [int(fields["click_id"][4:]) for _, fields in found] == list(range(5, 15))
    newest = list(
        logs.iter_stream(redis_client, keys.received_log(0), window, newest_first=True, chunk=3)
    )
    assert [entry[0] for entry in newest] == [entry[0] for entry in reversed(found)]


def test_partitions_merge_in_time_order(redis_client, settings):
    keys = Keys(settings.namespace, partitions=3)
    base = 1_700_000_000_000
    for i in range(30):
        add_received(redis_client, keys, base + i, i, partition=i % 3)
    window = logs.Window(base, base + 100)
    oldest_first = [e[0] for e in logs.received_entries(redis_client, keys, window, chunk=4)]
    assert oldest_first == [f"{base + i}-{i}" for i in range(30)]
    newest_first = [
        e[0] for e in logs.received_entries(redis_client, keys, window, newest_first=True, chunk=4)
    ]
    assert newest_first == oldest_first[::-1]


def test_received_filters_and_rows(redis_client, keys):
    add_source(redis_client, keys)
    base = 1_700_000_000_000
    add_received(redis_client, keys, base + 1, 1)
    add_received(redis_client, keys, base + 2, 2, outcome="unmatched", reason="unknown click")
    add_received(redis_client, keys, base + 3, 3, status="pending", partner_id="p2")
    add_received(redis_client, keys, base + 4, 4, source="otherKEY0123456789abcd")
    window = logs.Window(base, base + 10)

    def ids(where):
        return [e[1]["click_id"] for e in logs.received_entries(redis_client, keys, window, where)]

    names = logs.source_names(redis_client, keys)
    by_name = logs.source_keys_matching(names, "surveywall")
    assert ids(logs.ReceivedFilter(sources=by_name)) == ["CLK-1", "CLK-2", "CLK-3"]
    by_key = logs.source_keys_matching(names, "otherKEY0123456789abcd")
    assert ids(logs.ReceivedFilter(sources=by_key)) == ["CLK-4"]
    assert ids(logs.ReceivedFilter(outcome="unmatched")) == ["CLK-2"]
    assert ids(logs.ReceivedFilter(status="PENDING")) == ["CLK-3"]
    assert ids(logs.ReceivedFilter(partner="p2")) == ["CLK-3"]

    entry = next(iter(logs.received_entries(redis_client, keys, window)))
    row = logs.received_row(entry, names)
    assert row["source"] == "SurveyWall"
    assert row["source_key"] == "…WXYZ" and SOURCE_KEY not in orjson.dumps(row).decode()
    assert row["payout"] == "3.50" and row["currency"] == "USD"
    assert row["params"]["custom"] == {"user_age": 28, "country": "US"}
    assert row["time"] == logs.iso_ms(base + 1) and row["time_ms"] == base + 1


def test_forwarded_filters_and_rows(redis_client, keys):
    base = 1_700_000_000_000
    add_forwarded(redis_client, keys, base + 1, 1)
    add_forwarded(redis_client, keys, base + 2, 2, success="0", status_code="500", result="retry")
    add_forwarded(redis_client, keys, base + 3, 3, partner_id="p2", success="0", status_code="")
    window = logs.Window(base, base + 10)

    def codes(where):
        return [
            logs.forwarded_row(e)["status_code"]
            for e in logs.forwarded_entries(redis_client, keys, window, where)
        ]

    assert codes(logs.ForwardedFilter(success=True)) == [200]
    assert codes(logs.ForwardedFilter(success=False)) == [500, None]
    assert codes(logs.ForwardedFilter(partner="p1", success=False)) == [500]
    row = logs.forwarded_row(next(iter(logs.forwarded_entries(redis_client, keys, window))))
    assert row["success"] is True and row["attempt"] == 1 and row["response_ms"] == 42
    assert row["payout"] == "2.80" and row["payload"]["payout"] == "2.80"


def test_conversions_in_chunks_with_equal_scores(redis_client, settings):
    keys = Keys(settings.namespace, partitions=2)
    created = 1_700_000_000_000
    # Many conversions in the same millisecond: paging by score must neither skip nor repeat.
    for i in range(23):
        add_conversion(redis_client, keys, f"cv{i % 2}-{i:024d}", created + (i // 10))
    add_conversion(redis_client, keys, "cv0-late", created + 10 * HOUR_MS)
    window = logs.Window(created, created + HOUR_MS)
    found = [d["conversion_id"] for d in logs.conversions(redis_client, keys, window, chunk=4)]
    assert sorted(found) == sorted(f"cv{i % 2}-{i:024d}" for i in range(23))
    assert len(found) == len(set(found))
    row = logs.conversion_row(
        next(iter(logs.conversions(redis_client, keys, window))), {SOURCE_KEY: "SurveyWall"}
    )
    assert (row["payout"], row["partner_payout"], row["credited"]) == ("3.50", "2.80", "2.80")
    assert row["source"] == "SurveyWall" and row["source_key"] == "…WXYZ"
    assert row["custom"] == {"user_age": 28}
    assert row["history"][0]["payout"] == "3.50"
