"""Keeping the kernel's sets equal to the daemon's tables (``--enforce kernel``).

The daemon's tables stay the source of truth (the control port, the store file and probes
read them). Every change to them is noted in a ``tables.Journal``; the changes of one reactor
turn (one batch of queued packets) go to the kernel in one batch right after it, so a peer
learned from a hello is in the kernel before the client's next packet. Nothing the daemon
sends may get ahead of that: a forged pong makes a FastTrack client connect at once, a DHT
reply let through names the peers a BitTorrent client connects to next. So the changes a
packet made are written before its verdict goes out (``deciding``) and before the spoofer sends
(``FlushingSpoofer``). A full copy is written
at start, after a reload, when a journal overflowed and when a batch failed (the kernel and
the daemon then disagree). Locks go both ways: the kernel (re)locks a client that tries a
learned peer by itself, and ``poll`` reads those locks back so the daemon probes the client
and ``explain`` shows it.
"""

from __future__ import annotations

import socket
from collections.abc import Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from ..engine import Engine
from ..errors import KernelSetsError
from ..interfaces import IKernelSets, ISpoofer
from ..packet import Packet, Verdict, mac_text
from ..tables import Journal
from .elements import Lock, action_of, block_elements, element, family_of, text

log = Logger()

# Seconds between reads of the kernel's lock sets.
POLL_INTERVAL = 2.0
# Changes one journal keeps before a full copy is cheaper to write.
JOURNAL_CAP = 100_000
# A kernel lock with less than this left, on a client the daemon does not hold, is one the
# daemon just let expire (the kernel's copy ends up to a second later): not a new lock.
EXPIRY_SLACK = 2.0
_AF = {4: socket.AF_INET, 6: socket.AF_INET6}


class KernelSync:
    """Writes the engine's blocks, locks and allowed networks into ``sets``."""

    def __init__(self, engine: Engine, sets: IKernelSets, clock: IReactorTime) -> None:
        self.engine = engine
        self.sets = sets
        self.clock = clock
        self._pending: IDelayedCall | None = None
        self._allowed: object = None
        self._cleared = False
        self._stale = False
        self._journals = tuple(Journal(JOURNAL_CAP, self._schedule) for _ in range(2))

    def start(self) -> None:
        """Check the sets, follow the tables' changes, write everything (``KernelSetsError``
        when the sets are missing or refuse)."""
        if self.engine.clients.enabled:
            self.sets.check(self.engine.clients.seconds)
        self.engine.blocks.journal, self.engine.clients.journal = self._journals
        self.load()

    def stop(self) -> None:
        """Stop following the tables. The sets keep what they hold: learned peers stay
        blocked while no daemon runs, locks run out by themselves."""
        self.engine.blocks.journal = self.engine.clients.journal = None
        if self._pending is not None and self._pending.active():
            self._pending.cancel()
        self._pending = None

    def load(self) -> int:
        """Write the whole tables (the journals' changes are in them); the number of block
        elements written."""
        for journal in self._journals:
            journal.drain()
        engine = self.engine
        self._allowed = engine.allowed.lookup
        self._cleared = _off(engine)
        if self._cleared:
            self.sets.clear()
            self._stale = False
            return 0
        blocks = ((key, block.origin) for key, block in engine.blocks.items())
        networks = [network for network, _ in engine.allowed]
        count = self.sets.load(block_elements(blocks, engine.origins), networks)
        now = self.clock.seconds()
        locks = [self._lock(client.addr, now) for client in engine.clients]
        self.sets.apply((), (), (), [lock for lock in locks if lock is not None], ())
        self._stale = False
        engine.count("kernel_loads")
        log.info("kernel sets loaded: {count} blocks, {locks} locks", count=count, locks=len(locks))
        return count

    def _lock(self, addr: bytes, now: float) -> Lock | None:
        client = self.engine.clients.get(addr)
        if client is None or client.until <= now:
            return None
        mac = mac_text(client.mac) if client.mac is not None else None
        return Lock(text(addr), family_of(addr), client.until - now, client.locks_udp, mac)

    def _schedule(self) -> None:
        if self._pending is None:
            self._pending = self.clock.callLater(0, self.flush)

    def flush_pending(self) -> None:
        """Write the changes noted so far now, if there are any (cheap when there are none)."""
        if self._pending is not None:
            if self._pending.active():
                self._pending.cancel()
            self.flush()

    def deciding(
        self, decide: Callable[[Packet, int], Verdict]
    ) -> Callable[[Packet, int], Verdict]:
        """``decide`` (the engine's verdict), then the changes it made written to the kernel,
        before the verdict lets the packet go."""

        def decide_then_write(packet: Packet, hook: int) -> Verdict:
            verdict = decide(packet, hook)
            if self._pending is not None:
                self.flush_pending()
            return verdict

        return decide_then_write

    def flush(self) -> None:
        """Write the changes noted since the last flush, in one batch."""
        self._pending = None
        engine = self.engine
        (blocks, lost_blocks), (locked, lost_locks) = (j.drain() for j in self._journals)
        if self._cleared or self._stale:
            return
        if lost_blocks or lost_locks:
            self._resync("a journal overflowed")
            return
        add, replace, remove = [], [], []
        for key, existed in blocks.items():
            item = element(*key)
            if item is None:
                continue
            block = engine.blocks.get(key)
            if block is None:
                if existed:
                    remove.append(item)
                continue
            pair = (item, action_of(engine.origins.resolve(block.origin)))
            (replace if existed else add).append(pair)
        now = self.clock.seconds()
        locks, unlocks = [], []
        for addr in locked:
            lock = self._lock(addr, now)
            if lock is not None:
                locks.append(lock)
            elif engine.clients.get(addr) is None:
                unlocks.append((family_of(addr), text(addr)))
        try:
            self.sets.apply(add, replace, remove, locks, unlocks)
        except KernelSetsError as error:
            self._resync(str(error))
            return
        engine.count("kernel_batches")
        engine.count("kernel_elements", len(add) + len(replace) + len(remove))

    def _resync(self, why: str) -> None:
        """The kernel may differ from the tables: copy them whole."""
        self.engine.count("kernel_errors")
        log.warn("kernel sets: {why}; writing them whole", why=why)
        self._copy()

    def _copy(self) -> None:
        """``load``, or mark the sets stale for the next poll when the kernel refuses (said
        once, in one line, until a copy succeeds)."""
        try:
            self.load()
        except KernelSetsError as error:
            self._failed(error)

    def _failed(self, error: KernelSetsError) -> None:
        if not self._stale:
            log.error("kernel sets: {error}; retrying every {s:g} s", error=error, s=POLL_INTERVAL)
        self._stale = True

    def poll(self) -> None:
        """Follow accept-all, the allowed networks and the kernel's own locks; retry a
        failed copy. Driven by a timer. The sets gone (rules removed while the daemon runs)
        is one line, not a traceback a poll."""
        try:
            self._poll()
        except KernelSetsError as error:
            self._failed(error)

    def _poll(self) -> None:
        engine = self.engine
        if self._stale:
            try:
                self.load()
            except KernelSetsError:
                return
            log.info("kernel sets: written again")
            return
        if _off(engine) != self._cleared:
            self._copy()
            return
        if self._cleared:
            return
        if engine.allowed.lookup is not self._allowed:
            self._allowed = engine.allowed.lookup
            self.sets.set_allowed([network for network, _ in engine.allowed])
        now = self.clock.seconds()
        locks = self.sets.locks()
        bare = {(lock.family, lock.addr) for lock in locks if lock.mac is None}
        for lock in locks:
            addr = socket.inet_pton(_AF[lock.family], lock.addr)
            mac = bytes.fromhex(lock.mac.replace(":", "")) if lock.mac is not None else None
            # A lock bound to a MAC that does not own the address is a green host's forgery:
            # it drops that host's forged frames alone, and teaches the daemon nothing.
            if mac is not None and not engine.owns(addr, mac):
                continue
            if engine.clients.get(addr) is None and lock.seconds < EXPIRY_SLACK:
                continue
            mirrored = engine.kernel_locked(addr, now + lock.seconds, lock.flows, mac)
            if mirrored and (lock.family, lock.addr) not in bare:
                # A lock the kernel made on an Ethernet link, now checked: its bare address
                # goes into the sets traffic coming in is matched against.
                self._journals[1].note(addr)


def _off(engine: Engine) -> bool:
    """Whether the kernel must drop nothing: accept-all, or a dry run (turned on from the
    control port) that only logs."""
    return engine.accept_all or engine.dry_run


@implementer(ISpoofer)
class FlushingSpoofer:
    """A spoofer that writes the kernel's pending changes before each datagram it forges."""

    def __init__(self, spoofer: ISpoofer, sync: KernelSync) -> None:
        self.spoofer = spoofer
        self.sync = sync

    def send_udp(
        self, src: bytes | None, sport: int, dst: bytes, dport: int, payload: bytes
    ) -> None:
        self.sync.flush_pending()
        self.spoofer.send_udp(src, sport, dst, dport, payload)

    def open(self) -> None:
        self.spoofer.open()

    def close(self) -> None:
        self.spoofer.close()
