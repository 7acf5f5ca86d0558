"""What the kernel's sets hold, worked out from the daemon's tables (pure).

A learned or manual block ``(peer, port, client)`` becomes an element of one of four sets per
address family, by its shape: port and client given, port only, client only, neither (port 0
is every port, client ``b""`` every host). The element's action, the chain its packets go to,
comes from the block's origin: ``block`` drops, ``lock`` also (re)starts the sender's time
lock, ``lock_flows`` a lock that covers new UDP flows too (``Protocol.locks_udp``); the
``_udp_passes`` variants let UDP through (``Origin.drops_udp`` off: ftwall's ``-n``).
"""

from __future__ import annotations

import socket
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from ..origins import Origin, Origins

# The key of each shape (what the nft rules match, in this order) by (has port, has client).
SHAPES = {
    (True, True): "peer_port_client",
    (True, False): "peer_port",
    (False, True): "peer_client",
    (False, False): "peer",
}
FAMILIES = (4, 6)
_AF = {4: socket.AF_INET, 16: socket.AF_INET6}
LOCK_KINDS = ("", "lock", "lock_flows")
ACTIONS = tuple(
    f"{kind or 'block'}{suffix}" for kind in LOCK_KINDS for suffix in ("", "_udp_passes")
)


def family_of(addr: bytes) -> int:
    return 4 if len(addr) == 4 else 6


def text(addr: bytes) -> str:
    """A packed address as text (``inet_ntop``: a million of them at start)."""
    return socket.inet_ntop(_AF[len(addr)], addr)


def action_of(origin: Origin | None) -> str:
    """The chain a block's packets go to; an origin this daemon does not know only drops."""
    if origin is None:
        return "block"
    kind = "block"
    if origin.locks:
        kind = "lock_flows" if origin.protocol and origin.protocol.locks_udp else "lock"
    return kind if origin.drops_udp else f"{kind}_udp_passes"


@dataclass(frozen=True)
class Element:
    """One set element: the set is ``{shape}{family}``, the key in the shape's order
    (addresses as text, the port as a number)."""

    family: int
    shape: str
    key: tuple[str | int, ...]

    @property
    def set_name(self) -> str:
        return f"{self.shape}{self.family}"


def element(peer: bytes, port: int, client: bytes) -> Element | None:
    """The element of block ``(peer, port, client)``; ``None`` when the client's address
    family is not the peer's (no packet can match it)."""
    if client and len(client) != len(peer):
        return None
    shape = SHAPES[bool(port), bool(client)]
    key: tuple[str | int, ...] = (text(peer),)
    if port:
        key += (port,)
    if client:
        key += (text(client),)
    return Element(family_of(peer), shape, key)


def block_elements(
    blocks: Iterable[tuple[tuple[bytes, int, bytes], str]], origins: Origins
) -> Iterator[tuple[Element, str]]:
    """Each block ``((peer, port, client), origin name)`` as an element and its action."""
    actions: dict[str, str] = {}
    for (peer, port, client), name in blocks:
        item = element(peer, port, client)
        if item is None:
            continue
        action = actions.get(name)
        if action is None:
            action = actions[name] = action_of(origins.resolve(name))
        yield item, action


@dataclass(frozen=True)
class Lock:
    """A locked client in the kernel's sets: ``seconds`` left, whether the lock covers its
    new UDP flows (``flows``) or only its new TCP connections, and the MAC address it is bound
    to (``None``: the address alone, on a link without MACs or for traffic coming in)."""

    addr: str
    family: int
    seconds: float
    flows: bool
    mac: str | None = None
