"""Whether a packet's source MAC owns its source address, by the gateway's neighbour table.

A green host can put any source address on a packet, but the gateway talks to each address
through one MAC: the one its neighbour table (ARP for IPv4, NDP for IPv6) holds. A packet whose
MAC is another is forged, and must teach nothing and lock nobody (issue 9: a forged hello must
not lock another host). The table is read over rtnetlink, cached, and read again at most once
per ``min_refresh`` seconds when a packet's MAC does not match the cache (a host that just
arrived, or a changed entry), so a flood of forged packets costs one read a second (a dump,
and at most one resolve below).

An address the table does not hold at all is not always forged: an IPv6 host makes new
(temporary) addresses all the time, and sends from one without soliciting the gateway, whose
entry it already has; the gateway learns the new address only when it sends something there,
and a client whose hellos are all dropped gets nothing. So when a fresh read still lacks the
address while the packet's MAC owns another one, the kernel is asked to resolve it (as before
forwarding a packet there): the packet is dropped unheeded, the host's next one verifies. At
most once per read, so once per ``min_refresh`` seconds.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from .interfaces import INeighbours

log = Logger()

Reader = Callable[[], dict[bytes, bytes]]
# Asks for an address (packed) to be resolved where a MAC lives; False if that MAC is unknown.
Resolver = Callable[[bytes, bytes], bool]


def _kernel_neighbours() -> dict[bytes, bytes]:
    from .rtnetlink import neighbours

    return neighbours()


def _kernel_resolve(addr: bytes, mac: bytes) -> bool:
    from .rtnetlink import resolve

    return resolve(addr, mac)


@implementer(INeighbours)
class KernelNeighbours:
    """The kernel's neighbour table, cached; ``read`` returns address → MAC (tests pass a fake)
    and ``resolve`` asks for a missing address (by default the kernel's, with the kernel's
    table; none with another table)."""

    def __init__(
        self,
        clock: IReactorTime,
        read: Reader = _kernel_neighbours,
        min_refresh: float = 1.0,
        resolve: Resolver | None = None,
    ) -> None:
        self.clock = clock
        self.read = read
        self.min_refresh = min_refresh
        if resolve is None and read is _kernel_neighbours:
            resolve = _kernel_resolve
        self.resolve = resolve
        self.table: dict[bytes, bytes] = {}
        self.reads = 0
        self.failures = 0
        self.resolves = 0
        self._read_at: float | None = None

    def verified(self, addr: bytes, mac: bytes | None) -> bool:
        if mac is None:
            return True
        if self.table.get(addr) == mac:
            return True
        now = self.clock.seconds()
        if self._read_at is not None and now - self._read_at < self.min_refresh:
            return False
        self._read_at = now
        self.reads += 1
        try:
            self.table = self.read()
        except OSError as error:
            self.failures += 1
            log.warn("reading the neighbour table failed: {error}", error=error)
            return self.table.get(addr) == mac
        owner = self.table.get(addr)
        if owner is None:
            self._resolve(addr, mac)
        return owner == mac

    def _resolve(self, addr: bytes, mac: bytes) -> None:
        """Ask for ``addr`` where ``mac`` lives; a failure is counted and logged."""
        if self.resolve is None:
            return
        try:
            if self.resolve(addr, mac):
                self.resolves += 1
        except OSError as error:
            self.failures += 1
            log.warn("asking the kernel to resolve an address failed: {error}", error=error)
