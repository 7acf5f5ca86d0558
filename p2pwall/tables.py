"""The daemon's memory: what is blocked and which clients are locked.

Pure data structures; time comes in as ``now`` arguments. Both tables are bounded: when full,
the oldest tenth (at most ``EVICT_MAX`` blocks) is evicted in one batch, so a flood from spoofed
sources never grows memory without end. That costs amortised O(1) per insert in the block table
(it is kept in last-seen order) and O(log n) in the lock table.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from .interfaces import IProbe
from .origins import MANUAL_NAME as MANUAL

ANY_PORT = 0
ANY_CLIENT = b""


class Journal:
    """The keys of a table changed since a writer last drained it, for a writer that mirrors
    the table elsewhere (the kernel sets, ``kernel.sync``). It looks each key's state up when
    it drains, so a key changed many times costs one write; ``existed`` says whether the
    mirror may hold the key already (it changed or went, rather than came). Bounded: past
    ``cap`` keys it only remembers that it overflowed, and the writer copies the whole table.
    """

    def __init__(self, cap: int, on_first: Callable[[], None] | None = None) -> None:
        self.cap = cap
        # Called when the first key arrives after a drain: the writer schedules its write.
        self.on_first = on_first
        self.keys: dict[Any, bool] = {}
        self.overflowed = False

    def note(self, key: object, existed: bool = True) -> None:
        if self.overflowed:
            return
        if not self.keys and self.on_first is not None:
            self.on_first()
        if len(self.keys) >= self.cap:
            self.overflowed = True
            self.keys.clear()
            return
        # The first note since the drain tells what the mirror holds.
        self.keys.setdefault(key, existed)

    def drain(self) -> tuple[dict[Any, bool], bool]:
        """The changed keys (with ``existed``) and whether some were lost to the cap; empties
        the journal."""
        keys, overflowed = self.keys, self.overflowed
        self.keys, self.overflowed = {}, False
        return keys, overflowed


class Block:
    """Why and since when an address is blocked: ``first`` and ``seen`` (last seen) times, for
    ``explain``. Slots, not a dict: the table may hold a million of them."""

    __slots__ = ("origin", "seen", "name", "first")

    def __init__(self, origin: str, seen: float, name: str | None = None) -> None:
        self.origin = origin
        self.seen = seen
        self.name = name
        self.first = seen


class CorroboratedBlock(Block):
    """A learned block for every host: ``by`` holds the two green hosts that revealed it (the
    first, then the one that corroborated it). Its own class, so the many blocks without a
    second revealer carry no slot for one."""

    __slots__ = ("by",)

    def __init__(self, origin: str, seen: float, name: str | None, by: tuple[bytes, bytes]) -> None:
        super().__init__(origin, seen, name)
        self.by = by


BlockKey = tuple[bytes, int, bytes]

# A block seen again moves to the end of the table, and its last-seen time is updated, only
# when it was last seen this many seconds ago or more (the store file keeps whole seconds).
REFRESH = 1.0
# The most blocks one eviction drops: 10,000 take about 4 ms, a tenth of a million 40 ms.
EVICT_MAX = 10_000


class BlockTable:
    """Blocked ``(peer, port, client)`` triples; port 0 and client ``b""`` mean any.

    The dict keeps its blocks in last-seen order: a new block goes to the end, and so does a
    block seen again (at most once per ``REFRESH`` s, so ``match`` is a dict look-up and, on a
    hit, one subtraction). The least recently seen learned blocks are therefore at the front,
    where eviction and ``prune`` pop them without scanning the table. Manual blocks never go;
    one met at the front is moved to the end. The order is exact unless blocks are added with
    an older ``now`` than the newest (a clock stepped back): such a block ages when the blocks
    ahead of it do, late by at most the step.

    ``changes`` goes up with every add, removal (one step per batch) and origin change, and
    ``refreshes`` with every last-seen update: a writer compares them with the values it wrote
    last to skip an unchanged table.
    """

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._blocks: dict[BlockKey, Block] = {}
        self._client_specific = 0
        self._manual = 0
        self.evicted = 0
        self.changes = 0
        self.refreshes = 0
        # Set by a writer that mirrors the table (the kernel sets): every add, removal and
        # origin change notes its key.
        self.journal: Journal | None = None

    def __len__(self) -> int:
        return len(self._blocks)

    def __contains__(self, key: BlockKey) -> bool:
        return key in self._blocks

    def get(self, key: BlockKey) -> Block | None:
        """The block under exactly ``key`` (``match`` is what packets use)."""
        return self._blocks.get(key)

    def add(
        self,
        peer: bytes,
        port: int,
        client: bytes,
        origin: str,
        now: float,
        name: str | None = None,
        by: tuple[bytes, bytes] | None = None,
    ) -> bool:
        """Block, or refresh an existing block; True when the entry is new. ``by``: the two
        hosts whose evidence made a new block for every host (``CorroboratedBlock``)."""
        key = (peer, port, client)
        block = self._blocks.get(key)
        if block is not None:
            if now - block.seen >= REFRESH:
                self._refresh(key, block, now)
            if origin == MANUAL and block.origin != MANUAL:
                block.origin = MANUAL
                self._manual += 1
                self.changes += 1
                self._note(key)
            return False
        if len(self._blocks) >= self.cap and not self._evict():
            return False
        self._blocks[key] = (
            Block(origin, now, name) if by is None else CorroboratedBlock(origin, now, name, by)
        )
        if client:
            self._client_specific += 1
        if origin == MANUAL:
            self._manual += 1
        self.changes += 1
        self._note(key, existed=False)
        return True

    def remove(self, peer: bytes, port: int, client: bytes) -> bool:
        block = self._blocks.pop((peer, port, client), None)
        if block is None:
            return False
        if client:
            self._client_specific -= 1
        if block.origin == MANUAL:
            self._manual -= 1
        self.changes += 1
        self._note((peer, port, client))
        return True

    def _note(self, key: BlockKey, existed: bool = True) -> None:
        if self.journal is not None:
            self.journal.note(key, existed)

    def match(self, peer: bytes, port: int, client: bytes, now: float) -> Block | None:
        """The block that covers traffic from ``client`` to ``peer:port``, touched as seen.

        Port-specific blocks are looked up first: learned peers carry their port, so an admin's
        or DNS any-port block on the same address does not hide the block that time-locks the
        sender."""
        blocks = self._blocks
        block = blocks.get((peer, port, ANY_CLIENT))
        if block is None:
            specific = self._client_specific
            if specific:
                block = blocks.get((peer, port, client))
            if block is None:
                block = blocks.get((peer, ANY_PORT, ANY_CLIENT))
                if block is None and specific:
                    block = blocks.get((peer, ANY_PORT, client))
                if block is None:
                    return None
        if now - block.seen >= REFRESH:
            self._touch(block, peer, port, client, now)
        return block

    def items(self) -> Iterator[tuple[BlockKey, Block]]:
        return iter(list(self._blocks.items()))

    def snapshot(self) -> tuple[list[BlockKey], list[Block]]:
        """The keys and the blocks, in the same order: two list copies, cheap enough to take on
        the reactor thread and hand to a writer thread (which only reads the blocks)."""
        return list(self._blocks), list(self._blocks.values())

    def prune(self, cutoff: float) -> int:
        """Forget learned blocks not seen since ``cutoff``; manual blocks stay.

        Pops from the front (least recently seen) up to the first learned block seen since."""
        blocks = self._blocks
        if self._manual >= len(blocks):
            return 0
        stale: list[BlockKey] = []
        manual: list[BlockKey] = []
        for key, block in blocks.items():
            if block.origin == MANUAL:
                manual.append(key)
            elif block.seen < cutoff:
                stale.append(key)
            else:
                break
        self._drop(stale)
        self._to_end(manual)
        return len(stale)

    def _touch(self, block: Block, peer: bytes, port: int, client: bytes, now: float) -> None:
        """``_refresh`` for a block ``match`` found: which of its keys it is under is looked up
        only here, so the per-packet path does not keep track of it."""
        blocks = self._blocks
        for key in (
            (peer, port, ANY_CLIENT),
            (peer, ANY_PORT, ANY_CLIENT),
            (peer, ANY_PORT, client),
            (peer, port, client),
        ):
            if blocks.get(key) is block:
                self._refresh(key, block, now)
                return

    def _refresh(self, key: BlockKey, block: Block, now: float) -> None:
        """Mark ``block`` seen at ``now`` and move it to the end (the most recently seen)."""
        blocks = self._blocks
        del blocks[key]
        blocks[key] = block
        block.seen = now
        self.refreshes += 1

    def _evict(self) -> bool:
        """Drop the least recently seen tenth of learned blocks (``EVICT_MAX`` at most);
        False if none can go."""
        blocks = self._blocks
        if self._manual >= len(blocks):
            return False
        count = max(1, min(self.cap // 10, EVICT_MAX))
        victims: list[BlockKey] = []
        manual: list[BlockKey] = []
        for key, block in blocks.items():
            if block.origin == MANUAL:
                manual.append(key)
                continue
            victims.append(key)
            if len(victims) >= count:
                break
        self._drop(victims)
        self._to_end(manual)
        self.evicted += len(victims)
        return True

    def _drop(self, keys: list[BlockKey]) -> None:
        """Remove learned blocks (none of ``keys`` is manual)."""
        if not keys:
            return
        blocks = self._blocks
        for key in keys:
            del blocks[key]
            if key[2]:
                self._client_specific -= 1
            self._note(key)
        self.changes += 1

    def _to_end(self, keys: list[BlockKey]) -> None:
        """Move manual blocks met at the front to the end, so the next pass does not meet them."""
        blocks = self._blocks
        for key in keys:
            blocks[key] = blocks.pop(key)


Revealer = tuple[bytes, bytes | None]


class Revealers:
    """The first green host (address and MAC) that revealed each learned ``(peer, port)``.

    One host's evidence blocks a peer for that host alone; the same endpoint revealed by a
    second host, with another address and another MAC, is corroborated: no single host can
    forge that (the MAC is checked against the neighbour table before anything is learned).
    Bounded like the other tables: when full, the oldest tenth is forgotten.
    """

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._first: dict[tuple[bytes, int], Revealer] = {}

    def __len__(self) -> int:
        return len(self._first)

    def corroborated(
        self, peer: bytes, port: int, client: bytes, mac: bytes | None
    ) -> bytes | None:
        """Note ``client`` revealing ``peer:port``; when another host did so before, that
        host's address (the first revealer, which ``explain`` shows), else None."""
        key = (peer, port)
        first = self._first.get(key)
        if first is None:
            if len(self._first) >= self.cap:
                for old in list(itertools.islice(self._first, max(1, self.cap // 10))):
                    del self._first[old]
            self._first[key] = (client, mac)
            return None
        first_client, first_mac = first
        if first_client != client and mac is not None and first_mac not in (None, mac):
            return first_client
        return None


# Why a client is locked: when, the protocol, the reason, and the packet that showed it (its
# IP protocol number, source port, destination and destination port; the source is the client).
Evidence = tuple[float, str, str, int, int, bytes, int]


class Client:
    """A green host identified as a P2P client, with its time lock and probe state.

    ``probes`` holds one ``IProbe`` per protocol family the client was seen speaking (the
    detectors give them), ``protocols`` the names of the protocols it was locked for;
    ``locks_udp`` is set once it is locked for a protocol whose lock covers new UDP flows.
    ``probes_sent`` is counted by whoever sends the probes ``LockTable.due`` asks for (the
    engine, which sends none in dry-run mode); ``last_probe`` is when they were asked for."""

    __slots__ = (
        "addr",
        "until",
        "since",
        "probes",
        "protocols",
        "locks_udp",
        "probed_for",
        "last_probe",
        "probes_sent",
        "probes_answered",
        "scheduled",
        "identified",
        "renewed",
        "ended",
        "mac",
    )

    def __init__(self, addr: bytes, now: float) -> None:
        self.addr = addr
        self.since = now
        self.until = now
        self.probes: dict[str, IProbe] = {}
        self.protocols: set[str] = set()
        self.locks_udp = False
        self.probed_for = -1.0
        self.last_probe: float | None = None
        self.probes_sent = 0
        self.probes_answered = 0
        self.scheduled = 0.0
        # The evidence of the first lock and of the latest renewal (``explain``), and why the
        # lock ended (set when it is released, for the observers).
        self.identified: Evidence | None = None
        self.renewed: Evidence | None = None
        self.ended: str | None = None
        # The MAC address of the latest evidence (None: none, or a link without MACs): the
        # kernel's lock sets bind the lock to it.
        self.mac: bytes | None = None


# Seconds a probe over the tick's allowance is put off by.
PROBE_DEFER = 1.0
NO_LIMIT = 1 << 62


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
        # Set by a writer that mirrors the locks (the kernel sets): every lock, renewal and
        # early release notes the client's address. An expiry is not noted: the mirror's
        # copy expires by itself.
        self.journal: Journal | None = None

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
        client, new = self._lock(addr, now, now + self.seconds)
        if client is not None and self.journal is not None:
            self.journal.note(addr)
        return client, new

    def extend(self, addr: bytes, until: float, now: float) -> tuple[Client | None, bool]:
        """Make ``addr``'s lock run until ``until`` at least, as a mirror says it does (a lock
        the kernel renewed by itself). Not noted in the journal, which would only write it
        back. The client and whether it is newly locked."""
        return self._lock(addr, now, until)

    def _lock(self, addr: bytes, now: float, until: float) -> tuple[Client | None, bool]:
        if not self.enabled:
            return None, False
        client = self._clients.get(addr)
        new = client is None
        if client is None:
            if len(self._clients) >= self.cap:
                self._evict()
            client = Client(addr, now)
            self._clients[addr] = client
        client.until = max(client.until, until)
        if new:
            self._schedule(client)
        return client, new

    def set_probe(self, client: Client, probe: IProbe) -> None:
        """Probe ``client`` with ``probe`` from now on, in place of its protocol family's
        previous one (a client speaks each protocol once, so the dict stays tiny)."""
        first = not client.probes
        client.probes[probe.protocol.family] = probe
        if first and self._next_event(client) < client.scheduled:
            self._schedule(client)

    def release(self, addr: bytes) -> Client | None:
        """End ``addr``'s lock before its time (an expired lock is gone already)."""
        client = self._clients.pop(addr, None)
        if client is not None and self.journal is not None:
            self.journal.note(addr)
        return client

    def due(self, now: float, probes: int = NO_LIMIT, limit: int = NO_LIMIT) -> Iterator[Due]:
        """Yield the probes and expiries that are due at ``now``, updating state as it goes.

        Bounded, so that no tick stalls the daemon whatever the table holds: at most ``limit``
        heap entries are looked at, and at most ``probes`` probes yielded. A probe over that
        allowance is put off by ``PROBE_DEFER`` seconds (never past the client's expiry), so
        the expiries behind it are not held up by it.
        """
        heap = self._heap
        for _ in range(limit):
            if not heap or heap[0][0] > now:
                return
            when, _seq, addr = heapq.heappop(heap)
            client = self._clients.get(addr)
            if client is None or client.scheduled != when:
                continue
            if now >= client.until:
                del self._clients[addr]
                yield Due("expire", client)
            elif (
                client.probes
                and client.probed_for != client.until
                and (now >= client.until - self.seconds / 2)
            ):
                if probes <= 0:
                    self._push(client, min(now + PROBE_DEFER, client.until))
                    continue
                probes -= 1
                client.probed_for = client.until
                client.last_probe = now
                self._schedule(client)
                yield Due("probe", client)
            else:
                self._schedule(client)

    def _next_event(self, client: Client) -> float:
        if client.probes and client.probed_for != client.until:
            return client.until - self.seconds / 2
        return client.until

    def _schedule(self, client: Client) -> None:
        self._push(client, self._next_event(client))

    def _push(self, client: Client, when: float) -> None:
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
