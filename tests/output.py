"""The lines a child process prints, read on a thread so that waiting for one can time out."""

from __future__ import annotations

import queue
import re
import subprocess
import threading
import time
from typing import IO

import pytest


class Output:
    """Lines of ``stream`` (default the child's stdout); :meth:`wait_for` one by pattern."""

    def __init__(self, proc: subprocess.Popen, stream: IO[str] | None = None) -> None:
        self.proc = proc
        self.stream = proc.stdout if stream is None else stream
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self.thread = threading.Thread(target=self._pump, daemon=True)
        self.thread.start()

    def _pump(self) -> None:
        for line in self.stream:
            self.lines.put(line)

    def wait_for(self, pattern: str, timeout: float = 30.0) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                continue
            self.seen.append(line)
            if match := re.search(pattern, line):
                return match
        pytest.fail(f"no line matching {pattern!r} in:\n{''.join(self.seen)}")

    def close(self) -> None:
        self.thread.join(5)  # reads to EOF once every holder of the pipe is gone
        self.stream.close()
