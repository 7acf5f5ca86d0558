"""Public test doubles: a fake kernel queue and a fake NetfilterQueue package, a recording
spoofer, fake kernel sets, packet crafting and an engine factory, so tests (ours and those of
new detectors) run without root or a network."""

from __future__ import annotations

import copy
import errno
import ipaddress
import math
import socket
from collections.abc import Iterable, Sequence

from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from zope.interface import implementer

from . import netlink
from .detectors.dns import DNS_ORIGIN
from .detectors.fasttrack import FastTrackDetector
from .engine import Engine
from .errors import KernelSetsError
from .events import EventLog
from .interfaces import IDetector, IKernelSets, IPacketSource, IProbe, ISpoofer, IVerdictTarget
from .kernel.elements import Element, Lock
from .networks import GreenNetworks, Network
from .origins import Origins, Protocol
from .packet import Hook, Packet, Verdict
from .tables import BlockTable, LockTable


def packed(text: str) -> bytes:
    return ipaddress.ip_address(text).packed


def udp(src: str, dst: str, sport: int, dport: int, payload: bytes = b"") -> bytes:
    """A whole IPv4/IPv6 UDP datagram, crafted with scapy."""
    from scapy.layers.inet import UDP

    return bytes(_ip(src, dst) / UDP(sport=sport, dport=dport) / payload)


def tcp(
    src: str, dst: str, sport: int, dport: int, flags: str = "S", payload: bytes = b""
) -> bytes:
    """A whole IPv4/IPv6 TCP segment, crafted with scapy."""
    from scapy.layers.inet import TCP

    return bytes(_ip(src, dst) / TCP(sport=sport, dport=dport, flags=flags) / payload)


def _ip(src: str, dst: str):
    from scapy.layers.inet import IP
    from scapy.layers.inet6 import IPv6

    return (IPv6 if ":" in src else IP)(src=src, dst=dst)


@implementer(IPacketSource, IVerdictTarget)
class FakeKernelQueue:
    """A kernel queue in memory that speaks the real protocol: ``queue`` a packet and its
    ``MSG_PACKET`` message waits on a socket pair (a real fd, so a real reactor can poll it);
    verdicts are encoded, parsed back and applied by the kernel's rules, batch accepts
    included. A verdict for a packet not held is kept in ``refused``, never applied twice.
    ``errors`` are raised by ``recv_into`` before anything else."""

    def __init__(self, queue_num: int = 0, first_id: int = 1) -> None:
        """``first_id``: the id of the first packet (ids wrap at 2**32, as the kernel's)."""
        self.queue_num = queue_num
        self._kernel, self._user = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._user.setblocking(False)
        self._next_id = first_id
        self.held: dict[int, bytes] = {}
        self.verdicts: dict[int, Verdict] = {}
        self.refused: list[tuple[int, int]] = []
        self.errors: list[OSError] = []
        self.recvs = 0
        self.closed = False

    def queue(
        self,
        data: bytes,
        hook: int = Hook.FORWARD,
        hw: bytes | None = None,
        cut: int | None = None,
        indev: int = 0,
    ) -> int:
        """Hold ``data`` for a verdict and announce it; returns its packet id. ``cut``: send
        only that many bytes of its message (one the kernel would never send)."""
        packet_id = self._next_id
        self._next_id = (packet_id + 1) % 2**32
        self.held[packet_id] = data
        message = netlink.packet_message(self.queue_num, packet_id, hook, data, hw, indev)
        self.send_raw(message[:cut])
        return packet_id

    def send_raw(self, message: bytes) -> None:
        """Put any message on the socket, as the kernel would (error reports, junk)."""
        self._kernel.send(message)

    def verdict(self, packet_id: int) -> Verdict | None:
        return self.verdicts.get(packet_id)

    def fileno(self) -> int:
        return self._user.fileno()

    def recv_into(self, buffer: bytearray) -> int:
        assert not self.closed, "recv_into on a closed queue"
        self.recvs += 1
        if self.errors:
            raise self.errors.pop(0)
        return self._user.recv_into(buffer)

    def set_verdicts(self, drops: list[int], accept_through: int | None) -> None:
        data = netlink.verdicts(self.queue_num, drops, accept_through)
        for kind, verdict, last in netlink.verdicts_in(data):
            if kind == netlink.MSG_VERDICT_BATCH:
                # Every held id not after ``last``, in the kernel's wrapping order (nfq_id_after).
                ids = [packet_id for packet_id in self.held if (last - packet_id) % 2**32 < 2**31]
            else:
                ids = [last] if last in self.held else []
            if not ids:
                self.refused.append((kind, last))
            for packet_id in ids:
                del self.held[packet_id]
                self.verdicts[packet_id] = Verdict(verdict)

    def close(self) -> None:
        self.closed = True
        self._kernel.close()
        self._user.close()


class FakeNetfilterQueue:
    """The NetfilterQueue package's ``NetfilterQueue`` in memory, over the same kind of socket
    pair as ``FakeKernelQueue``: ``queue`` a packet and its ``MSG_PACKET`` message, copied up
    to the package's 4,016 bytes, waits on the socket; ``run_socket`` reads as the package's
    does (until EAGAIN, past ENOBUFS) and calls back with a ``FakeNfqPacket`` for each packet
    message, ignoring any other message as libnetfilter_queue does."""

    COPY_RANGE = 4016

    def __init__(self, refuse: OSError | None = None) -> None:
        """``refuse``: raised by ``bind`` (the kernel said no)."""
        self._kernel, self._user = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._refuse = refuse
        self._next_id = 1
        self._parser = netlink.PacketParser()
        self.callback = None
        self.bound: dict[str, int] = {}
        self.held: dict[int, bytes] = {}
        self.verdicts: dict[int, Verdict] = {}
        self.unbound = False

    def bind(
        self,
        queue_num: int,
        user_callback,
        max_len: int = 1024,
        mode: int = netlink.COPY_PACKET,
        range: int = 0xFFFF,
        sock_len: int = 0,
    ) -> None:
        if self._refuse is not None:
            raise self._refuse
        if self.callback is not None:
            raise RuntimeError("A queue is already bound; use unbind() first")
        self.callback = user_callback
        self.bound = {"queue_num": queue_num, "max_len": max_len, "range": range,
                      "sock_len": sock_len}  # fmt: skip

    def unbind(self) -> None:
        self.callback = None
        if not self.unbound:
            self.unbound = True
            self._kernel.close()
            self._user.close()

    def get_fd(self) -> int:
        return self._user.fileno()

    def queue(
        self, data: bytes, hook: int = Hook.FORWARD, hw: bytes | None = None, indev: int = 0
    ) -> int:
        """Hold ``data`` for a verdict and announce it, cut to the copy range; its id."""
        packet_id = self._next_id
        self._next_id += 1
        self.held[packet_id] = data
        copy = data[: min(self.bound.get("range", 0xFFFF), self.COPY_RANGE)]
        self.send_raw(netlink.packet_message(0, packet_id, hook, copy, hw, indev))
        return packet_id

    def send_raw(self, message: bytes) -> None:
        self._kernel.send(message)

    def verdict(self, packet_id: int) -> Verdict | None:
        return self.verdicts.get(packet_id)

    def set_verdict(self, packet_id: int, verdict: Verdict) -> None:
        if packet_id in self.verdicts:
            raise RuntimeError("Verdict already given for this packet")
        del self.held[packet_id]
        self.verdicts[packet_id] = verdict

    def run_socket(self, s) -> None:
        while True:
            try:
                buf = s.recv(4096)
            except OSError as error:
                if error.args[0] == errno.ENOBUFS:
                    continue
                if error.args[0] in (errno.EAGAIN, errno.EWOULDBLOCK):
                    break
                raise
            try:
                queued = self._parser.parse(buf, len(buf))
            except ValueError:
                continue
            if queued is None or self.callback is None:
                continue
            packet_id, hook, start, end, hw_at, indev_at = queued
            hw = netlink.hwaddr(buf, hw_at)
            self.callback(
                FakeNfqPacket(
                    self,
                    packet_id,
                    hook,
                    buf[start:end],
                    None if hw is None else hw.ljust(8, b"\0"),
                    netlink.ifindex(buf, indev_at),
                )
            )


class FakeNfqPacket:
    """The package's packet: hook, input interface, payload, the 8-byte hardware address
    field, and one verdict (a second raises, as the package's does)."""

    def __init__(
        self,
        queue: FakeNetfilterQueue,
        packet_id: int,
        hook: int,
        payload: bytes,
        hw: bytes | None,
        indev: int,
    ) -> None:
        self._queue = queue
        self.id = packet_id
        self.hook = hook
        self.indev = indev
        self._payload = payload
        self._hw = hw

    def get_payload(self) -> bytes:
        if not self._payload:
            raise RuntimeError("Packet has no payload -- perhaps you're using COPY_META mode?")
        return self._payload

    def get_hw(self) -> bytes | None:
        return self._hw

    def accept(self) -> None:
        self._queue.set_verdict(self.id, Verdict.ACCEPT)

    def drop(self) -> None:
        self._queue.set_verdict(self.id, Verdict.DROP)


@implementer(IReactorFromThreads)
class ThreadsReactor(MemoryReactorClock):
    """A memory reactor that also runs ``callFromThread`` calls (what signal handlers use)."""

    def callFromThread(self, f, *args, **kwargs) -> None:
        f(*args, **kwargs)


@implementer(ISpoofer)
class RecordingSpoofer:
    """Keeps every forged datagram instead of sending it."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes | None, int, bytes, int, bytes]] = []
        self.state = "new"

    def open(self) -> None:
        self.state = "open"

    def close(self) -> None:
        self.state = "closed"

    def send_udp(self, src, sport, dst, dport, payload) -> None:
        self.sent.append((src, sport, dst, dport, payload))


TEST_PROTOCOL = Protocol("Test", "test")
# The origins of the detectors as a daemon with default options has them, for store tests.
ORIGINS = Origins([*FastTrackDetector().origins, DNS_ORIGIN])


@implementer(IProbe)
class FakeProbe:
    """A probe that numbers its payloads and accepts as its answer any packet to its
    ``source_port`` whose payload is the last payload sent."""

    def __init__(
        self, port: int = 1214, source_port: int = 2000, protocol: Protocol = TEST_PROTOCOL
    ) -> None:
        self.protocol = protocol
        self.port = port
        self.source_port = source_port
        self.sent = 0

    def payload(self) -> bytes:
        self.sent += 1
        return b"probe %d" % self.sent

    def answers(self, packet: Packet) -> bool:
        return packet.dport == self.source_port and bytes(packet.payload) == b"probe %d" % self.sent


class MemoryEvents(EventLog):
    """An ``EventLog`` with every class on, keeping the events in ``records``."""

    def __init__(self, classes: str = "uUtTcpxm", debug: str = "daDthp") -> None:
        self.records: list[dict] = []
        super().__init__(
            syslog=classes,
            debug=debug,
            syslog_target=self.records.append,
            daemon_log=self.records.append,
        )

    def of(self, cls: str, debug: bool = False) -> list[str]:
        """Rendered events of one class (``debug=True``: of that debug class)."""
        from twisted.logger import formatEvent

        return [
            formatEvent(e)
            for e in self.records
            if e["p2pwall_class"] == cls and e["p2pwall_debug"] == debug
        ]


def make_engine(
    clock: Clock | None = None,
    time_lock: float = 120,
    green: Sequence[str] = ("198.18.1.0/24", "10.0.0.0/8", "fd00::/8"),
    detectors: Sequence[IDetector] | None = None,
    max_peers: int = 1000,
    max_clients: int = 100,
    **kwargs,
) -> Engine:
    """An engine with fakes around it: ``engine.spoofer.sent``, ``engine.events.of("p")``."""
    return Engine(
        clock=clock or Clock(),
        blocks=BlockTable(max_peers),
        clients=LockTable(time_lock, max_clients),
        green=GreenNetworks(green),
        detectors=[FastTrackDetector()] if detectors is None else detectors,
        spoofer=RecordingSpoofer(),
        events=MemoryEvents(),
        **kwargs,
    )


@implementer(IKernelSets)
class FakeKernelSets:
    """Kernel sets in memory, as strict as nft: adding an element that is there with another
    action, or removing one that is not, fails the whole batch (``KernelSetsError``) and
    changes nothing. ``kernel_lock`` plays the kernel locking a client by itself; ``refuse``
    makes the next calls fail."""

    name = "fake"

    def __init__(self, lock_seconds: float = 120) -> None:
        self.lock_seconds = lock_seconds
        self.blocks: dict[Element, str] = {}
        # (family, address text, MAC text or None) -> (seconds left, covers UDP flows)
        self.locked: dict[tuple[int, str, str | None], tuple[float, bool]] = {}
        self.allowed: list[Network] = []
        self.present = True
        self.refuse = 0
        self.batches = 0
        self.loads = 0

    def _refused(self) -> None:
        if self.refuse:
            self.refuse -= 1
            raise KernelSetsError("nft: Could not process rule: Operation not permitted")

    def check(self, lock_seconds: float) -> None:
        if not self.present:
            raise KernelSetsError("no set locked4 in table inet p2pwall")
        if math.ceil(lock_seconds) != self.lock_seconds:
            raise KernelSetsError(f"the kernel's lock set times out after {self.lock_seconds} s")

    def load(self, blocks: Iterable[tuple[Element, str]], allowed: Sequence[Network]) -> int:
        self._refused()
        self.blocks = dict(blocks)
        self.allowed = list(allowed)
        self.loads += 1
        return len(self.blocks)

    def set_allowed(self, networks: Sequence[Network]) -> None:
        self._refused()
        self.allowed = list(networks)

    def apply(
        self,
        add: Sequence[tuple[Element, str]],
        replace: Sequence[tuple[Element, str]],
        remove: Sequence[Element],
        locks: Sequence[Lock],
        unlocks: Sequence[tuple[int, str]],
    ) -> None:
        self._refused()
        blocks = copy.copy(self.blocks)
        for item, action in add:
            if blocks.setdefault(item, action) != action:
                raise KernelSetsError(f"nft: File exists: {item}")
        for item, action in replace:
            if blocks.pop(item, None) is None:
                raise KernelSetsError(f"nft: No such file or directory: {item}")
            blocks[item] = action
        for item in remove:
            if blocks.pop(item, None) is None:
                raise KernelSetsError(f"nft: No such file or directory: {item}")
        self.blocks = blocks
        for lock in locks:
            # As the nft sets: every lock by its bare address, and one bound to a MAC too.
            for mac in {None, lock.mac}:
                self.locked[lock.family, lock.addr, mac] = (lock.seconds, lock.flows)
        for family, addr in unlocks:
            for key in [key for key in self.locked if key[:2] == (family, addr)]:
                del self.locked[key]
        self.batches += 1

    def kernel_lock(
        self, addr: str, seconds: float, flows: bool = False, mac: str | None = None
    ) -> None:
        """The kernel locking a sender by itself: by address and MAC on Ethernet."""
        family = ipaddress.ip_address(addr).version
        self.locked[family, addr, mac] = (seconds, flows)

    def is_locked(self, addr: str) -> bool:
        return any(key[1] == addr for key in self.locked)

    def locks(self) -> list[Lock]:
        self._refused()
        return [
            Lock(addr, family, seconds, flows, mac)
            for (family, addr, mac), (seconds, flows) in self.locked.items()
        ]

    def clear(self) -> None:
        self._refused()
        self.blocks.clear()
        self.locked.clear()
