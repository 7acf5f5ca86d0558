"""Allowed networks (fail2ban's ``ignoreip``): their hosts are never locked, never blocked.

A packet from or to an allowed address is accepted as it is: no detector reads it, no block or
time lock drops it, it teaches nothing and locks nobody, and no address in an allowed network is
ever learned. ``--allow`` networks come from the command line; ``allow``/``disallow`` on the
control port change the list until the daemon stops (the command line is what persists).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator

from .networks import GreenNetworks, Network

OPTION = "option"
CONTROL = "control"


def parse_network(text: str) -> Network:
    """``CIDR`` or a bare address (a /32 or /128); host bits are cleared. ``ValueError``
    says what is wrong, in one line."""
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ValueError(f"bad network {text[:80]!r}: expected an address or CIDR") from None


class AllowList:
    """The allowed networks and where each came from (``OPTION`` or ``CONTROL``).

    ``lookup`` is what the per-packet path tests: ``None`` while the list is empty (one
    attribute test per packet), else a ``GreenNetworks`` of the networks, rebuilt on change."""

    def __init__(self, networks: Iterable[Network | str] = ()) -> None:
        self._networks: dict[Network, str] = {}
        self.lookup: GreenNetworks | None = None
        for network in networks:
            self.add(ipaddress.ip_network(network), OPTION)

    def add(self, network: Network, origin: str = CONTROL) -> bool:
        """Allow ``network``; False when it was allowed already."""
        if network in self._networks:
            return False
        self._networks[network] = origin
        self._rebuild()
        return True

    def remove(self, network: Network) -> str | None:
        """Stop allowing exactly ``network``; where it came from, or None if it was not."""
        origin = self._networks.pop(network, None)
        if origin is not None:
            self._rebuild()
        return origin

    def __contains__(self, addr: bytes) -> bool:
        return self.lookup is not None and addr in self.lookup

    def covering(self, addr: bytes) -> list[Network]:
        """The allowed networks holding ``addr`` (for ``explain``)."""
        return [n for n in self._networks if addr in GreenNetworks((n,))]

    def __iter__(self) -> Iterator[tuple[Network, str]]:
        return iter(list(self._networks.items()))

    def __len__(self) -> int:
        return len(self._networks)

    def _rebuild(self) -> None:
        self.lookup = GreenNetworks(self._networks) if self._networks else None
