"""The caller's IP address, and whether it is inside a source's allow-list.

The caller is the socket peer, unless the peer is a trusted proxy
(``POSTBACK_TRUSTED_PROXIES``): then it is the right-most ``X-Forwarded-For`` address
that is not itself a trusted proxy. Addresses left of that one were written by the
caller and prove nothing.

    >>> trusted = (ipaddress.ip_network("10.0.0.0/8"),)
    >>> client_ip("10.0.0.5", "203.0.113.9, 10.0.0.7", trusted)
    '203.0.113.9'
"""

from __future__ import annotations

import contextlib
import ipaddress
from functools import lru_cache

from core.networks import Network, parse_network

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_ip(text: str) -> Address | None:
    """An address from a header or socket: ports, brackets and IPv4-mapped IPv6 removed."""
    text = text.strip().strip('"')
    if text.startswith("["):  # "[2001:db8::1]:443"
        text = text[1 : text.find("]")] if "]" in text else text[1:]
    elif text.count(":") == 1:  # "203.0.113.9:5678"
        text = text.split(":", 1)[0]
    try:
        ip = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        return ip.ipv4_mapped
    return ip


def _trusted(ip: Address | None, trusted: tuple[Network, ...]) -> bool:
    return ip is not None and any(ip in net for net in trusted)


def client_ip(peer: str, forwarded_for: str | None, trusted: tuple[Network, ...]) -> str:
    """The caller's address as a string (see the module docstring)."""
    if not trusted or not forwarded_for:
        return peer
    peer_ip = parse_ip(peer)
    if not _trusted(peer_ip, trusted):
        return peer
    hop = str(peer_ip)
    for entry in reversed(forwarded_for.split(",")):
        ip = parse_ip(entry)
        if ip is None:
            # Garbage in the chain: the last proxy we trust is as far back as we can see.
            return hop
        hop = str(ip)
        if not _trusted(ip, trusted):
            return hop
    return hop  # every hop is a trusted proxy: the left-most one is the caller


@lru_cache(maxsize=256)
def parse_allow(allow: str) -> tuple[Network, ...]:
    """A source's stored allow-list ("1.2.3.4/32,10.0.0.0/8") as networks; bad parts skipped."""
    networks = []
    for part in allow.split(","):
        with contextlib.suppress(ValueError):
            networks.append(parse_network(part))
    return tuple(networks)


@lru_cache(maxsize=8192)
def ip_allowed(ip: str, allow: str) -> bool:
    """True when ``allow`` is empty (any caller) or ``ip`` is inside one of its networks."""
    if not allow:
        return True
    address = parse_ip(ip)
    if address is None:
        return False
    return any(address in net for net in parse_allow(allow) if net.version == address.version)
