"""The admin API's log pages: newest first, exact totals, a bounded scan.

>>> scan = Scan(forwarded_entries(client, keys, window, newest_first=True), 200_000)
>>> page = paginate(scan, page=2, per_page=50, to_row=forwarded_row)
>>> page.envelope() | ({"truncated": True} if scan.truncated else {})
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from storage.stream_reader import Entry


class Scan:
    """Entries passed through, stopping after ``limit`` of them; says if it stopped early.

    The admin pages count every match to give exact totals; the limit keeps one request
    on a busy relay from reading a whole day of logs.
    """

    def __init__(self, entries: Iterable[Entry], limit: int | None = None) -> None:
        self.entries, self.limit = entries, limit
        self.read = 0
        self.truncated = False

    def __iter__(self) -> Iterator[Entry]:
        for entry in self.entries:
            if self.limit is not None and self.read >= self.limit:
                self.truncated = True
                return
            self.read += 1
            yield entry


@dataclass
class Page:
    rows: list
    page: int
    per_page: int
    total: int

    @property
    def pages(self) -> int:
        return -(-self.total // self.per_page)

    def envelope(self) -> dict:
        return {"logs": self.rows, "page": self.page, "pages": self.pages, "total": self.total}


def paginate(entries: Iterable[Entry], page: int, per_page: int, to_row: Callable) -> Page:
    """One page of ``entries`` (already newest first) and the total that matched.

    Every matching entry is counted, but only the page's own entries are turned into
    rows, so memory stays at one page and one chunk per partition.
    """
    first = (page - 1) * per_page
    rows: list = []
    total = 0
    for entry in entries:
        if first <= total < first + per_page:
            rows.append(to_row(entry))
        total += 1
    return Page(rows, page, per_page, total)
