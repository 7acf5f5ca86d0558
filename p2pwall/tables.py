"""The daemon's memory: what is blocked and which clients are locked.

Pure data structures; time comes in as ``now`` arguments. Both tables are bounded: when full,
the oldest tenth is evicted in one batch, so a flood from spoofed sources costs amortised
O(log n) per insert and never grows memory without end.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator
from dataclasses import dataclass

ANY_PORT = 0
ANY_CLIENT = b""

MANUAL = "manual"
ORIGINS = ("udp", "http", "dns", MANUAL)
# Blocks learned from FastTrack traffic: trying one of those peers proves a FastTrack client
# runs there, so it (re)starts the sender's time lock. DNS-trained and manual blocks only drop.
LOCKING_ORIGINS = frozenset(("udp", "http"))


class Block:
    """Why and since when an address is blocked."""

    __slots__ = ("origin", "seen", "name")

    def __init__(self, origin: str, seen: float, name: str | None = None) -> None:
        self.origin = origin
        self.seen = seen
        self.name = name


BlockKey = tuple[bytes, int, bytes]


class BlockTable:
    """Blocked ``(peer, port, client)`` triples; port 0 and client ``b""`` mean any."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._blocks: dict[BlockKey, Block] = {}
        self._client_specific = 0
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._blocks)

    def __contains__(self, key: BlockKey) -> bool:
        return key in self._blocks

    def add(
        self,
        peer: bytes,
        port: int,
        client: bytes,
        origin: str,
        now: float,
        name: str | None = None,
    ) -> bool:
        """Block, or refresh an existing block; True when the entry is new."""
        key = (peer, port, client)
        block = self._blocks.get(key)
        if block is not None:
            block.seen = now
            if origin == MANUAL:
                block.origin = MANUAL
            return False
        if len(self._blocks) >= self.cap and not self._evict():
            return False
        self._blocks[key] = Block(origin, now, name)
        if client:
            self._client_specific += 1
        return True

    def remove(self, peer: bytes, port: int, client: bytes) -> bool:
        if self._blocks.pop((peer, port, client), None) is None:
            return False
        if client:
            self._client_specific -= 1
        return True

    def match(self, peer: bytes, port: int, client: bytes, now: float) -> Block | None:
        """The block that covers traffic from ``client`` to ``peer:port``, touched as seen.

        The port-specific block is looked up first: FastTrack peers are learned with their port,
        so an admin's or DNS any-port block on the same address does not hide the block that
        time-locks the sender."""
        blocks = self._blocks
        block = blocks.get((peer, port, ANY_CLIENT)) or blocks.get((peer, ANY_PORT, ANY_CLIENT))
        if block is None and self._client_specific:
            block = blocks.get((peer, ANY_PORT, client)) or blocks.get((peer, port, client))
        if block is not None:
            block.seen = now
        return block

    def items(self) -> Iterator[tuple[BlockKey, Block]]:
        return iter(list(self._blocks.items()))

    def prune(self, cutoff: float) -> int:
        """Forget learned blocks not seen since ``cutoff``; manual blocks stay."""
        stale = [
            key
            for key, block in self._blocks.items()
            if block.seen < cutoff and block.origin != MANUAL
        ]
        for key in stale:
            self.remove(*key)
        return len(stale)

    def _evict(self) -> bool:
        """Drop the least recently seen tenth of learned blocks; False if none can go."""
        learned = [(b.seen, k) for k, b in self._blocks.items() if b.origin != MANUAL]
        if not learned:
            return False
        count = max(1, self.cap // 10)
        for _seen, key in heapq.nsmallest(count, learned):
            self.remove(*key)
        self.evicted += min(count, len(learned))
        return True


class Client:
    """A green host identified as a P2P client, with its time lock and probe state."""

    __slots__ = (
        "addr",
        "until",
        "since",
        "hello",
        "hello_port",
        "peer_port",
        "probed_for",
        "last_probe",
        "probes_sent",
        "probes_answered",
        "scheduled",
    )

    def __init__(self, addr: bytes, now: float) -> None:
        self.addr = addr
        self.since = now
        self.until = now
        self.hello: bytes | None = None
        self.hello_port = 0
        self.peer_port = 0
        self.probed_for = -1.0
        self.last_probe: float | None = None
        self.probes_sent = 0
        self.probes_answered = 0
        self.scheduled = 0.0


@dataclass(frozen=True)
class Due:
    """Something the lock table wants done now: ``"probe"`` or ``"expire"`` a client."""

    action: str
    client: Client


class LockTable:
    """Per-client time locks with probe times, expired in O(due) through a lazy heap.

    A refresh only moves a client's deadline later, so its heap entry may be early but never
    late; popping an early entry just re-schedules it. The heap holds one live entry per client.
    """

    def __init__(self, seconds: float, cap: int) -> None:
        self.seconds = seconds
        self.cap = cap
        self.on_evict: Callable[[Client], None] | None = None
        self._clients: dict[bytes, Client] = {}
        self._heap: list[tuple[float, int, bytes]] = []
        self._seq = 0
        self.evicted = 0

    @property
    def enabled(self) -> bool:
        return self.seconds > 0

    def __len__(self) -> int:
        return len(self._clients)

    def __iter__(self) -> Iterator[Client]:
        return iter(list(self._clients.values()))

    def get(self, addr: bytes) -> Client | None:
        return self._clients.get(addr)

    def is_locked(self, addr: bytes, now: float) -> bool:
        client = self._clients.get(addr)
        return client is not None and client.until > now

    def lock(self, addr: bytes, now: float) -> tuple[Client | None, bool]:
        """(Re)start ``addr``'s time lock; returns the client and whether it is newly locked."""
        if not self.enabled:
            return None, False
        client = self._clients.get(addr)
        new = client is None
        if client is None:
            if len(self._clients) >= self.cap:
                self._evict()
            client = Client(addr, now)
            self._clients[addr] = client
        client.until = now + self.seconds
        if new:
            self._schedule(client)
        return client, new

    def note_hello(self, client: Client, hello: bytes, hello_port: int, peer_port: int) -> None:
        """Remember the client's hello so it can be probed with a copy of it (from the port of
        the peer it last greeted, where its reply is then expected)."""
        first = client.hello is None
        client.hello = hello
        client.hello_port = hello_port
        client.peer_port = peer_port
        if first and self._next_event(client) < client.scheduled:
            self._schedule(client)

    def release(self, addr: bytes) -> Client | None:
        return self._clients.pop(addr, None)

    def due(self, now: float) -> Iterator[Due]:
        """Yield the probes and expiries that are due at ``now``, updating state as it goes."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            when, _seq, addr = heapq.heappop(heap)
            client = self._clients.get(addr)
            if client is None or client.scheduled != when:
                continue
            if now >= client.until:
                del self._clients[addr]
                yield Due("expire", client)
            elif (
                client.hello is not None
                and client.probed_for != client.until
                and (now >= client.until - self.seconds / 2)
            ):
                client.probed_for = client.until
                client.last_probe = now
                client.probes_sent += 1
                self._schedule(client)
                yield Due("probe", client)
            else:
                self._schedule(client)

    def _next_event(self, client: Client) -> float:
        if client.hello is not None and client.probed_for != client.until:
            return client.until - self.seconds / 2
        return client.until

    def _schedule(self, client: Client) -> None:
        when = self._next_event(client)
        client.scheduled = when
        self._seq += 1
        heapq.heappush(self._heap, (when, self._seq, client.addr))

    def _evict(self) -> None:
        """Forget the tenth of clients whose locks end soonest; their heap entries go stale."""
        count = max(1, self.cap // 10)
        for client in heapq.nsmallest(count, self._clients.values(), key=lambda c: c.until):
            del self._clients[client.addr]
            if self.on_evict is not None:
                self.on_evict(client)
        self.evicted += count
        if len(self._heap) > 4 * max(len(self._clients), 16):
            live = self._clients
            self._heap = [e for e in self._heap if e[2] in live and live[e[2]].scheduled == e[0]]
            heapq.heapify(self._heap)
