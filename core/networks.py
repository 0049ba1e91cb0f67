"""IP networks from text: the one parser behind every allow-list and trusted-proxy list.

    >>> parse_networks(["10.0.0.0/8", "127.0.0.1"])
    (IPv4Network('10.0.0.0/8'), IPv4Network('127.0.0.1/32'))
    >>> parse_network("nope")
    Traceback (most recent call last):
    ValueError: 'nope' is not an IP address or CIDR

Callers decide what a bad entry means: a setting stops the command (``core.config``), an
admin's input is a 400 naming ``allow_ip`` (``core.validation``), and an allow-list read
back from Redis (validated when it was written) drops it, which only narrows who may call.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_network(text: str) -> Network:
    """One address or CIDR, host bits allowed ("10.1.2.3/8" is 10.0.0.0/8)."""
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise ValueError(f"{text.strip()!r} is not an IP address or CIDR") from None


def parse_networks(parts: Iterable[str]) -> tuple[Network, ...]:
    """Every part as a network; the first bad one raises ValueError naming it."""
    return tuple(parse_network(part) for part in parts)
