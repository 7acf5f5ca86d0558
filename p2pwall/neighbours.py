"""Whether a packet's source MAC owns its source address, by the gateway's neighbour table.

A green host can put any source address on a packet, but the gateway talks to each address
through one MAC: the one its neighbour table (ARP for IPv4, NDP for IPv6) holds. A packet whose
MAC is another is forged, and must teach nothing and lock nobody (issue 9: a forged hello must
not lock another host). The table is read over rtnetlink, cached, and read again at most once
per ``min_refresh`` seconds when a packet's MAC does not match the cache (a host that just
arrived, or a changed entry), so a flood of forged packets costs one dump a second.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from .interfaces import INeighbours

log = Logger()

Reader = Callable[[], dict[bytes, bytes]]


def _kernel_neighbours() -> dict[bytes, bytes]:
    from .rtnetlink import neighbours

    return neighbours()


@implementer(INeighbours)
class KernelNeighbours:
    """The kernel's neighbour table, cached; ``read`` returns address → MAC (tests pass a fake)."""

    def __init__(
        self, clock: IReactorTime, read: Reader = _kernel_neighbours, min_refresh: float = 1.0
    ) -> None:
        self.clock = clock
        self.read = read
        self.min_refresh = min_refresh
        self.table: dict[bytes, bytes] = {}
        self.reads = 0
        self.failures = 0
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
