"""Public test doubles: a fake kernel queue, a recording spoofer, packet crafting and an engine
factory, so tests (ours and those of new detectors) run without root or a network."""

from __future__ import annotations

import errno
import ipaddress
from collections.abc import Callable, Sequence

from twisted.internet.task import Clock
from zope.interface import implementer

from .detectors.fasttrack import FastTrackDetector
from .engine import Engine
from .events import EventLog
from .interfaces import IDetector, IPacketSource, ISpoofer, IVerdictTarget
from .networks import GreenNetworks
from .packet import Hook
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


@implementer(IVerdictTarget)
class FakeQueuedPacket:
    """A packet held for a verdict; refuses a second verdict, as the kernel would lose it."""

    def __init__(self, data: bytes, hook: int = Hook.FORWARD, hw: bytes | None = None) -> None:
        self.data = data
        self.hook = hook
        self.hw = hw
        self.verdict: str | None = None

    def get_payload(self) -> bytes:
        return self.data

    def get_hw(self) -> bytes | None:
        return self.hw

    def accept(self) -> None:
        self._set("accept")

    def drop(self) -> None:
        self._set("drop")

    def _set(self, verdict: str) -> None:
        if self.verdict is not None:
            raise RuntimeError(f"second verdict {verdict} after {self.verdict}")
        self.verdict = verdict


@implementer(IPacketSource)
class FakePacketSource:
    """Stands in for NetfilterQueue: ``queue`` packets, ``run_socket`` hands them to the
    callback the way the real one does, one per successful ``sock.recv``.

    Its fd is not a kernel one, so the reader asks it for the socket to read from
    (``open_socket``): a ``FakeNetlinkSocket`` that has a message while packets are waiting,
    raises its queued ``errors`` first, and raises EAGAIN when nothing is left.
    """

    fd = 1000

    def __init__(self) -> None:
        self.callback: Callable[[IVerdictTarget], None] | None = None
        self.bound: tuple | None = None
        self.unbound = False
        self.waiting: list[FakeQueuedPacket] = []
        self.socket: FakeNetlinkSocket | None = None

    def bind(self, queue_num, user_callback, max_len, mode, range, sock_len) -> None:  # noqa: A002
        self.bound = (queue_num, max_len, mode, range, sock_len)
        self.callback = user_callback

    def unbind(self) -> None:
        self.unbound = True
        self.callback = None

    def get_fd(self) -> int:
        return self.fd

    def open_socket(self, fd: int) -> FakeNetlinkSocket:
        assert fd == self.fd, f"socket asked for fd {fd}, not ours"
        self.socket = FakeNetlinkSocket(self)
        return self.socket

    def queue(self, *packets: FakeQueuedPacket) -> None:
        self.waiting.extend(packets)

    def run_socket(self, sock) -> None:
        """NetfilterQueue.run_socket's loop, with a fake packet per message."""
        assert self.callback is not None, "run_socket() on an unbound queue"
        while True:
            try:
                message = sock.recv(FakeNetlinkSocket.BUFFER_SIZE)
            except OSError as error:
                if error.args[0] == errno.ENOBUFS:
                    continue
                if error.args[0] in (errno.EAGAIN, errno.EWOULDBLOCK):
                    break
                raise
            assert message == FakeNetlinkSocket.MESSAGE, f"not a queue message: {message!r}"
            self.callback(self.waiting.pop(0))


class FakeNetlinkSocket:
    """The queue's socket for a ``FakePacketSource``: ``recv`` raises the next of ``errors``
    if any, else returns ``MESSAGE`` while packets are waiting, else raises EAGAIN."""

    BUFFER_SIZE = 4096
    MESSAGE = b"fake nfqueue message"

    def __init__(self, source: FakePacketSource) -> None:
        self.source = source
        self.errors: list[OSError] = []
        self.recvs = 0
        self.closed = False

    def recv(self, bufsize: int, /) -> bytes:
        assert not self.closed, "recv on a closed socket"
        self.recvs += 1
        if self.errors:
            raise self.errors.pop(0)
        if not self.source.waiting:
            raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")
        return self.MESSAGE

    def close(self) -> None:
        self.closed = True


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
