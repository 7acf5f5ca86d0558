"""The green (home) networks: never blocked, the only place P2P clients are looked for."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from .rtnetlink import LinkAddress

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_GREEN = (
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "fc00::/7",
    "fe80::/10",
)


class GreenNetworks:
    """Membership test for packed addresses, as integer masks (no object per lookup)."""

    def __init__(self, networks: Iterable[Network | str]) -> None:
        self.networks = tuple(ipaddress.ip_network(n) for n in networks)
        self._masks: dict[int, tuple[tuple[int, int], ...]] = {
            size: tuple(
                (int(n.network_address), int(n.netmask))
                for n in self.networks
                if n.max_prefixlen == size * 8
            )
            for size in (4, 16)
        }

    def __contains__(self, addr: bytes) -> bool:
        masks = self._masks.get(len(addr))
        if not masks:
            return False
        value = int.from_bytes(addr, "big")
        for net, mask in masks:  # noqa: SIM110 - a loop beats any() + generator 4x here
            if value & mask == net:
                return True
        return False

    def __str__(self) -> str:
        return ",".join(str(n) for n in self.networks)


# Link-local addresses (fe80::/10) are on every IPv6 interface, the outside one too: they never
# make an interface green, and with --green-if they stay green (never a peer across a gateway).
LINK_LOCAL = ipaddress.ip_network("fe80::/10")
# One IPv6 host owns a /64: what counts per host (rate limits) counts per /64.
IPV6_SOURCE_BITS = 64


@dataclass(frozen=True)
class GreenLinks:
    """What the green interfaces (``--green-if``) hold now."""

    networks: tuple[Network, ...]
    ifindexes: frozenset[int]
    missing: frozenset[str]  # named interfaces without an address, or gone


def from_interfaces(addresses: Iterable[LinkAddress], names: Iterable[str]) -> GreenLinks:
    """The networks of the named interfaces' addresses (an IPv6 global prefix as much as an
    IPv4 subnet), link-local ones aside, and those interfaces' indexes (all of them: a DNS
    answer that comes in on a green interface is a green host's, whatever its addresses)."""
    wanted = set(names)
    networks: dict[Network, None] = {}
    ifindexes = set()
    held = set()
    for address in addresses:
        if address.ifname not in wanted:
            continue
        ifindexes.add(address.ifindex)
        if not address.interface.ip.is_link_local:
            networks[address.interface.network] = None
            held.add(address.ifname)
    return GreenLinks(tuple(networks), frozenset(ifindexes), frozenset(wanted - held))


def ifindexes_in(addresses: Iterable[LinkAddress], green: GreenNetworks) -> frozenset[int]:
    """Indexes of the interfaces holding an address in a green network (link-local aside)."""
    return frozenset(
        a.ifindex
        for a in addresses
        if not a.interface.ip.is_link_local and a.interface.ip.packed in green
    )
