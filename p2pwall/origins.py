"""What a learned block's origin means, declared by the detector that learns it.

The core (engine, tables, store, explain) names no protocol: it asks the origin whether trying
one of its peers proves a P2P client (``locks``), which ports it may be learned on
(``learnable``), whether UDP to it is dropped, and which P2P ``Protocol`` it belongs to (the
lock's wording, and what a lock covers: new UDP flows too for a protocol that runs over UDP).
Store files keep the origin's name; ``aliases`` let files written by older versions load.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

# Endpoints below this port are well-known services (DNS, NTP, HTTPS...).
FIRST_UNPRIVILEGED_PORT = 1024


@dataclass(frozen=True)
class Protocol:
    """A P2P protocol a client is locked for: ``name`` in events and ``explain``, ``family``
    keys its probes and metrics, ``locks_udp`` says the lock also drops the client's new UDP
    flows (DNS excepted): BitTorrent moves its payload over uTP as readily as over TCP."""

    name: str
    family: str
    locks_udp: bool = False


@dataclass(frozen=True)
class Origin:
    """Where a block came from. ``low_ports``: the ports below 1024 it may be learned on
    (a FastTrack peer does listen on 80); ``any_port``: every port is learnable (DNS training
    and the admin's blocks, which do not come from one host's packets)."""

    name: str
    protocol: Protocol | None = None
    locks: bool = False
    low_ports: frozenset[int] = frozenset()
    any_port: bool = False
    drops_udp: bool = True
    aliases: tuple[str, ...] = ()

    def learnable(self, port: int) -> bool:
        """Whether a peer of this origin may be learned on ``port`` (0: every port)."""
        if self.any_port:
            return True
        return port >= FIRST_UNPRIVILEGED_PORT or port in self.low_ports

    @property
    def lock_reason(self) -> str:
        """Why trying one of its peers locks the sender."""
        return f"tried a {self.protocol.name if self.protocol else self.name} peer"


MANUAL_NAME = "manual"
MANUAL = Origin(MANUAL_NAME, any_port=True)


class Origins:
    """The origins one daemon knows (the admin's ``manual`` and each detector's), by name and
    by alias."""

    def __init__(self, origins: Iterable[Origin]) -> None:
        self._by_name: dict[str, Origin] = {}
        for origin in (MANUAL, *origins):
            for name in (origin.name, *origin.aliases):
                known = self._by_name.setdefault(name, origin)
                if known is not origin:
                    raise ValueError(f"two origins named {name!r}")
        # The origins whose peers lock whoever tries them, looked up on every block hit.
        self.locking = {o.name: o for o in self._by_name.values() if o.locks}
        self.udp_passes = frozenset(o.name for o in self._by_name.values() if not o.drops_udp)

    def resolve(self, name: str) -> Origin | None:
        """The origin called ``name`` now or by an older version; ``None`` if unknown."""
        return self._by_name.get(name)
