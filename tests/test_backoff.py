"""The one backoff both workers wait by between tries at Redis."""

from __future__ import annotations

from processors.backoff import FIRST_S, MAX_S, Backoff


def test_waits_double_from_the_first_up_to_the_cap():
    backoff = Backoff()
    waits = [backoff.next() for _ in range(10)]
    assert waits[0] == FIRST_S
    assert all(b == min(a * 2, MAX_S) for a, b in zip(waits, waits[1:], strict=False))
    assert waits[-1] == MAX_S


def test_reset_starts_again_from_the_first_wait_and_says_whether_tries_had_failed():
    backoff = Backoff(first=0.5, cap=2.0)
    assert backoff.reset() is False  # nothing had failed
    assert [backoff.next() for _ in range(4)] == [0.5, 1.0, 2.0, 2.0]
    assert backoff.reset() is True
    assert backoff.next() == 0.5
