"""The gateway's own addresses, as the kernel lists them in this network namespace.

A FastTrack download names addresses in its headers (``X-Kazaa-IP`` is the client's address
as the network sees it: behind NAT, the gateway's public address), and a DNS answer can name
the gateway too. Blocking those would only add noise (and break hairpin access to the
gateway), so the engine never learns them, as it never learns green addresses. Read from
``/proc`` (IPv4: the ``/32 host LOCAL`` leaves of ``fib_trie``; IPv6: ``if_inet6``), again on a
timer, since a DHCP lease can change the public address.
"""

from __future__ import annotations

import ipaddress

FIB_TRIE = "/proc/net/fib_trie"
IF_INET6 = "/proc/net/if_inet6"


def parse_fib_trie(text: str) -> set[bytes]:
    """IPv4 addresses with a ``/32 host LOCAL`` entry: the ones configured on an interface."""
    found = set()
    leaf = None
    for line in text.splitlines():
        words = line.split()
        if len(words) == 2 and words[0] == "|--":
            leaf = words[1]
        elif leaf is not None and words[:3] == ["/32", "host", "LOCAL"]:
            try:
                found.add(ipaddress.IPv4Address(leaf).packed)
            except ValueError:
                continue
    return found


def parse_if_inet6(text: str) -> set[bytes]:
    """IPv6 addresses: the first field of each line, 32 hex digits."""
    found = set()
    for line in text.splitlines():
        words = line.split()
        if words and len(words[0]) == 32:
            try:
                found.add(bytes.fromhex(words[0]))
            except ValueError:
                continue
    return found


def read_local_addresses(fib_trie: str = FIB_TRIE, if_inet6: str = IF_INET6) -> frozenset[bytes]:
    """This namespace's own addresses, packed; a file that cannot be read adds none."""
    found: set[bytes] = set()
    for path, parse in ((fib_trie, parse_fib_trie), (if_inet6, parse_if_inet6)):
        try:
            with open(path, encoding="ascii", errors="replace") as handle:
                found |= parse(handle.read())
        except OSError:
            continue
    return frozenset(found)
