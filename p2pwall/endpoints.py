"""Host names, IP addresses and ports as people write them: ``host``, ``ip``, ``host:port``,
``ipv4:port``, ``[ipv6]:port``.

Why here: the control port, the banned-names file, server lists and ``.wsx`` files all read
these, so the core owns the one parser and a detector imports it, never the other way round.
"""

from __future__ import annotations

import ipaddress
import re
from typing import TypeAlias

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address

_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
_PORT = re.compile(r"[0-9]{1,5}")
_BRACKETED = re.compile(r"\[([^\]]+)\](?::(.*))?")


def normalize_name(name: str) -> str:
    """Lowercase a DNS name and drop one trailing dot, so equal names compare equal."""
    return name.lower().removesuffix(".")


def parse_port(text: str) -> int | None:
    """Return ``text`` as a TCP port (1-65535, ASCII digits only), else ``None``."""
    if not _PORT.fullmatch(text):
        return None
    port = int(text)
    return port if 0 < port < 65536 else None


def parse_ip(text: str) -> IPAddress | None:
    """Return ``text`` as an IP address, else ``None``; a scoped IPv6 address (``fe80::1%eth0``)
    names a local link, never a remote host, so it is ``None`` too."""
    if "%" in text:
        return None
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _host_name(text: str) -> str | None:
    """Return ``text`` as a normalized DNS host name with at least two labels, else None.

    The last label must hold a letter, so a mistyped IP ("10.1.2.300") is not a name.
    """
    name = normalize_name(text)
    labels = name.split(".")
    if len(name) > 253 or len(labels) < 2 or not re.search("[a-z]", labels[-1]):
        return None
    if all(_LABEL.fullmatch(label) for label in labels):
        return name
    return None


def parse_endpoint(text: str) -> tuple[str | IPAddress, int | None] | None:
    """Parse ``host``, ``ip``, ``host:port``, ``ipv4:port`` or ``[ipv6]:port``.

    Returns ``(normalized host name or IP address, port or None)``, or ``None`` when the
    text is neither, e.g. a display name like ``My Network``.
    """
    text = text.strip()
    address = parse_ip(text)
    if address is not None:
        return address, None
    bracketed = _BRACKETED.fullmatch(text)
    if bracketed:
        address = parse_ip(bracketed[1])
        port = None if bracketed[2] is None else parse_port(bracketed[2])
        if address is None or address.version != 6 or (bracketed[2] is not None and port is None):
            return None
        return address, port
    host, colon, port_text = text.rpartition(":")
    port = None
    if colon:
        port = parse_port(port_text)
        if port is None:
            return None
        text = host
    address = parse_ip(text)
    if address is not None:
        return (address, port) if address.version == 4 else None
    name = _host_name(text)
    return None if name is None else (name, port)
