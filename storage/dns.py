"""Host names to addresses: the system's one DNS look-up.

``core`` judges addresses but never resolves a name (it does no I/O); the callers that
must know where a partner's name points pass :func:`resolve_host` to
``core.addresses.is_private_host`` (the admin API, ``postback admin``, and the
forwarder's address guard at delivery time).

    >>> resolve_host("127.0.0.1")
    ['127.0.0.1']
"""

from __future__ import annotations

import socket


def resolve_host(host: str) -> list[str]:
    """The addresses ``host`` resolves to, each once (zone ids dropped); [] when none."""
    try:
        infos = socket.getaddrinfo(host, None)
    except (OSError, UnicodeError):
        return []
    return list(dict.fromkeys(str(info[4][0]).split("%")[0] for info in infos))
