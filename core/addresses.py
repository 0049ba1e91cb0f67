"""Which hosts a partner URL may not point at: loopback, private, link-local and the like.

Pure: addresses are judged by their text; a host *name* is looked up only through the
resolver a caller passes (``storage.dns.resolve_host``), so core does no I/O.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable
from urllib.parse import urlsplit

from core.validation import ValidationError, check_http_url

#: A host name's addresses, [] when it does not resolve (``storage.dns.resolve_host``).
Resolver = Callable[[str], Iterable[str]]


def is_private_host(host: str, resolve: Resolver | None = None) -> bool:
    """True for loopback, private, link-local and otherwise non-public addresses.

    IP literals and local names (``localhost``, ``*.local``…) are judged by their text.
    Other names are looked up only through ``resolve``: one that resolves to any
    non-public address counts as private; without a resolver, or when the name does
    not resolve, it is judged by its text alone (core does no I/O).
    """
    host = host.strip("[]").lower().rstrip(".")  # "localhost." is localhost too
    if host == "localhost" or host.endswith((".localhost", ".local", ".internal")):
        return True
    ip = _ip_literal(host)
    if ip is not None:
        return _is_private_ip(ip)
    if resolve is None:
        return False
    for address in resolve(host):
        try:
            if _is_private_ip(ipaddress.ip_address(address)):
                return True
        except ValueError:
            continue
    return False


_INET_PART = re.compile(r"0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*")


def _ip_literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """``host`` as an address if it is written as one, in any form a resolver takes
    without a look-up: ``2130706433``, ``127.1`` and ``0x7f.0.0.1`` are 127.0.0.1
    (inet_aton's forms), so none of them slips past as a name."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    parts = host.split(".")
    if not 1 <= len(parts) <= 4 or not all(_INET_PART.fullmatch(p) for p in parts):
        return None
    values = [_inet_number(part) for part in parts]
    *head, last = values
    if any(v > 255 for v in head) or last >= 256 ** (4 - len(head)):
        return None
    number = 0
    for value in head:
        number = number * 256 + value
    return ipaddress.IPv4Address(number * 256 ** (4 - len(head)) + last)


def _inet_number(part: str) -> int:
    if part[:2] in ("0x", "0X"):
        return int(part[2:], 16)
    return int(part, 8) if part.startswith("0") else int(part)


def _is_private_ip(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    # ``is_global`` is False for the shared address space 100.64.0.0/10 too (carrier
    # NAT; some clouds serve instance metadata there, e.g. 100.100.100.200), which
    # ``is_private`` misses, and for the other special-purpose blocks.
    return (
        not ip.is_global
        or ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
    )


def check_partner_url(
    value: object, *, allow_private: bool = False, resolve: Resolver | None = None
) -> str:
    """An http(s) URL whose host is public unless ``allow_private`` (``resolve``: see
    :func:`is_private_host`)."""
    url = check_http_url("url", value)
    host = urlsplit(url).hostname or ""
    if not allow_private and is_private_host(host, resolve):
        raise ValidationError(
            "url",
            f"{host} is a loopback, private or link-local address; "
            "pass --allow-private (allow_private) to permit it",
        )
    return url
