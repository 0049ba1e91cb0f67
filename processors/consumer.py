"""What both workers share about who they are: the default consumer name."""

from __future__ import annotations

import os
import socket


def default_consumer() -> str:
    """``<host>-<pid>``: unique per process; give ``--consumer`` a stable name to resume
    a crashed process's own pending entries after a restart."""
    return f"{socket.gethostname()}-{os.getpid()}"
