"""How long a worker waits before trying Redis again: doubling from a short first wait
up to a cap, back to the first wait once a try succeeds.

    >>> backoff = Backoff()
    >>> [backoff.next() for _ in range(8)]
    [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]
    >>> backoff.reset()  # True: there had been failures ("Redis is back")
    True
"""

from __future__ import annotations

#: The first wait after a failure: a blip (a failover, a restart) costs next to nothing.
FIRST_S = 0.1
#: The longest wait: a worker notices a Redis that came back within this, and an outage
#: costs a log line per try at most this often.
MAX_S = 5.0


class Backoff:
    """Doubling waits between ``first`` and ``cap`` seconds; :meth:`reset` on success."""

    def __init__(self, first: float = FIRST_S, cap: float = MAX_S) -> None:
        self.first = first
        self.cap = cap
        self._next = first
        self.failures = 0

    def next(self) -> float:
        """The wait before the next try; each call doubles the one after, up to ``cap``."""
        delay = self._next
        self._next = min(delay * 2, self.cap)
        self.failures += 1
        return delay

    def reset(self) -> bool:
        """Back to the first wait; True when there had been failures since the last reset."""
        failed = self.failures > 0
        self._next, self.failures = self.first, 0
        return failed
