"""The gateway's own addresses and the green interfaces' networks, re-read from the kernel.

A FastTrack download names addresses in its headers (``X-Kazaa-IP`` is the client's address
as the network sees it: behind NAT, the gateway's public address), and a DNS answer can name
the gateway too. Blocking those would only add noise (and break hairpin access to the
gateway), so the engine never learns them, as it never learns green addresses.

With ``--green-if``, the green networks are the networks of those interfaces' addresses (plus
``--green``), so a LAN outside the private ranges is protected without repeating its prefix;
without it, the green interfaces are the ones holding a green address. Both are read with one
rtnetlink dump, at start and again on a timer: a DHCP lease or a router advertisement can
change them while the daemon runs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from twisted.logger import Logger

from .engine import Engine
from .networks import LINK_LOCAL, GreenNetworks, Network, from_interfaces, ifindexes_in
from .rtnetlink import LinkAddress, addresses

log = Logger()


class AddressWatch:
    """Tells the engine its own addresses, its green networks and green interfaces."""

    def __init__(
        self,
        engine: Engine,
        green_ifs: Sequence[str] = (),
        green: Sequence[Network] = (),
        read: Callable[[], list[LinkAddress]] = addresses,
    ) -> None:
        self.engine = engine
        self.green_ifs = tuple(green_ifs)
        self.green = tuple(green)
        self._read = read
        self._missing: frozenset[str] = frozenset()
        # Names of the green interfaces found at the last read, for the start line.
        self.interfaces: tuple[str, ...] = ()

    def refresh(self) -> None:
        """Read the kernel's addresses once; on failure the last ones stay in force."""
        try:
            found = self._read()
        except OSError as error:
            log.error("reading the interfaces' addresses failed, keeping the last: {e}", e=error)
            return
        engine = self.engine
        engine.local = frozenset(a.interface.ip.packed for a in found)
        if self.green_ifs:
            self._from_green_ifs(found)
        else:
            engine.green_ifindexes = ifindexes_in(found, engine.green)
        self.interfaces = tuple(
            sorted({a.ifname for a in found if a.ifindex in engine.green_ifindexes})
        )

    def _from_green_ifs(self, found: list[LinkAddress]) -> None:
        engine = self.engine
        links = from_interfaces(found, self.green_ifs)
        networks = (*links.networks, *self.green, LINK_LOCAL)
        if networks != engine.green.networks:
            engine.green = GreenNetworks(networks)
            log.info("green networks: {networks}", networks=engine.green)
        engine.green_ifindexes = links.ifindexes
        if links.missing != self._missing:
            for name in sorted(links.missing - self._missing):
                log.warn(
                    "WARNING: green interface {name} does not exist or has no address: "
                    "the hosts behind it are NOT protected until it has one",
                    name=name,
                )
            for name in sorted(self._missing - links.missing):
                log.info("green interface {name} has an address again", name=name)
            self._missing = links.missing
