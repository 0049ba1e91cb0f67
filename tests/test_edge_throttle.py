"""Guessing is throttled (SPEC §3, the 429 row; issue #8, defect 4).

More than 20 invalid-key answers to one address within a minute: 429 with
``Retry-After`` until the minute has passed, for that address only; a valid key from it
still works; counted in Redis, so every edge process agrees. The same for wrong admin
tokens.
"""

from __future__ import annotations

import time

import pytest
from falcon import testing

from edge import throttle
from edge.app import create_app

GUESSER = "203.0.113.66"
NEIGHBOUR = "203.0.113.67"
TOKEN = "a-long-enough-admin-token"
WRONG_KEY = "x" * 24


def guess(client, key=WRONG_KEY, ip=GUESSER):
    return client.simulate_get(f"/postback/{key}", query_string="click_id=c1", remote_addr=ip)


def test_past_20_invalid_keys_an_address_gets_429_but_its_valid_key_still_works(client, source):
    for _ in range(throttle.LIMIT):
        assert guess(client).status_code == 404
    refused = guess(client)
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert "invalid postback keys" in refused.json["error"]
    # A malformed key and a batch count as guesses too, and are refused the same way.
    assert guess(client, key="short").status_code == 429
    batch = client.simulate_post(f"/postback/{WRONG_KEY}/batch", body="[]", remote_addr=GUESSER)
    assert batch.status_code == 429

    assert guess(client, key=source.key).status_code == 200
    assert guess(client, ip=NEIGHBOUR).status_code == 404


def test_every_edge_process_counts_into_the_same_counter(settings, redis_client, source):
    first = testing.TestClient(create_app(settings, redis_client))
    second = testing.TestClient(create_app(settings, redis_client))
    for n in range(throttle.LIMIT):
        assert guess(first if n % 2 else second).status_code == 404
    assert guess(first).status_code == 429
    assert guess(second).status_code == 429


def test_the_address_is_answered_404_again_once_its_minute_has_passed(client, monkeypatch):
    monkeypatch.setattr(throttle, "WINDOW_MS", 1500)
    for _ in range(throttle.LIMIT):
        guess(client)
    assert guess(client).status_code == 429
    deadline = time.monotonic() + 20
    while guess(client).status_code == 429:  # each poll is a guess of a new window
        assert time.monotonic() < deadline, "still throttled long after the window"
        time.sleep(0.2)  # polling with a deadline


@pytest.fixture
def admin(settings, redis_client):
    return testing.TestClient(create_app(settings.with_overrides(admin_token=TOKEN), redis_client))


def admin_get(admin, token, ip=GUESSER):
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return admin.simulate_get("/api/admin/users/u1", headers=headers, remote_addr=ip)


def test_past_20_wrong_admin_tokens_an_address_gets_429_but_the_right_token_works(admin):
    for _ in range(throttle.LIMIT * 2):
        assert admin_get(admin, None).status_code == 401  # no token at all is no guess
    for n in range(throttle.LIMIT):
        assert admin_get(admin, f"guess-{n}").status_code == 401
    refused = admin_get(admin, "guess-21")
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert "wrong admin tokens" in refused.json["error"]
    assert admin_get(admin, TOKEN).status_code == 200
    assert admin_get(admin, "guess-22", ip=NEIGHBOUR).status_code == 401
