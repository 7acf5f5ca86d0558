"""The NFQUEUE reader: NetfilterQueue's netlink fd as a reactor read descriptor.

Every queued packet gets exactly one verdict, also when decoding or the engine raises (that
packet gets the configured failure verdict and the error is logged). Modelled on
``twisted.pair.tuntap.TuntapPort``, read budget included: one ``doRead`` reads at most
``budget`` netlink messages (one per packet), so a flood cannot starve the reactor's timers
and the control port. The reactor polls level-triggered, so it calls ``doRead`` again on its
next turn while messages remain.

``NetfilterQueue.run(block=False)`` reads until EAGAIN and takes no budget, so the reader uses
``run_socket(sock)`` instead: that loop calls ``sock.recv`` until it raises EAGAIN, and our
``sock`` says EAGAIN once the budget is spent.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable
from typing import Protocol

from twisted.internet import abstract
from twisted.internet.interfaces import IReactorFDSet
from twisted.logger import Logger
from twisted.python.failure import Failure

from .interfaces import IPacketSource, IVerdictTarget
from .packet import ACCEPT, Packet, Verdict, decode

Decide = Callable[[Packet, int], Verdict]

COPY_PACKET = 2
_COPY_RANGE = 0xFFFF
READ_BUDGET = 256


class Receiver(Protocol):
    """The part of a socket that ``run_socket`` and the reader use."""

    def recv(self, bufsize: int, /) -> bytes: ...
    def close(self) -> None: ...


def netfilter_queue() -> IPacketSource:
    """The real packet source; imported late so tests and ``--help`` work without it."""
    from netfilterqueue import NetfilterQueue

    return NetfilterQueue()


def netlink_socket(fd: int) -> socket.socket:
    """The queue's netlink socket as a non-blocking Python socket, on a dup of ``fd``: closing
    it leaves NetfilterQueue's own fd open. (The non-blocking flag is shared with that fd.)"""
    sock = socket.fromfd(fd, socket.AF_NETLINK, socket.SOCK_RAW)
    sock.setblocking(False)
    return sock


class BudgetedSocket:
    """What ``run_socket`` reads from: ``sock.recv`` at most ``left`` times, then EAGAIN.

    It also sees the ENOBUFS that ``run_socket`` swallows (the kernel dropped messages because
    the socket buffer was full) and counts them in ``overruns``.
    """

    def __init__(self, sock: Receiver) -> None:
        self.sock = sock
        self.left = 0
        self.overruns = 0

    def recv(self, bufsize: int, /) -> bytes:
        if self.left <= 0:
            raise BlockingIOError(errno.EAGAIN, "read budget spent for this reactor turn")
        self.left -= 1
        try:
            return self.sock.recv(bufsize)
        except OSError as error:
            if error.errno == errno.ENOBUFS:
                self.overruns += 1
            raise

    def close(self) -> None:
        self.sock.close()


class QueueReader(abstract.FileDescriptor):
    """Drains the queue when its fd is readable and hands each packet to ``decide``."""

    log = Logger()

    def __init__(
        self,
        queue_num: int,
        decide: Decide,
        reactor: IReactorFDSet,
        source: IPacketSource | None = None,
        max_len: int = 4096,
        sock_len: int = 4 * 1024 * 1024,
        failure_verdict: Verdict = Verdict.ACCEPT,
        want_mac: bool = False,
        budget: int = READ_BUDGET,
        open_socket: Callable[[int], Receiver] | None = None,
    ) -> None:
        """``budget``: netlink messages read per ``doRead``. ``open_socket(fd)``: the socket
        that ``run_socket`` reads; by default ``netlink_socket``, or the source's own
        ``open_socket`` when it has one (the tests' fake source has no kernel fd)."""
        super().__init__(reactor)
        self.queue_num = queue_num
        self.decide = decide
        self.failure_verdict = failure_verdict
        self.want_mac = want_mac
        self.budget = budget
        self.errors = 0
        self.undecoded = 0
        self._source = source if source is not None else netfilter_queue()
        if open_socket is None:
            open_socket = getattr(self._source, "open_socket", netlink_socket)
        self._source.bind(queue_num, self._handle, max_len, COPY_PACKET, _COPY_RANGE, sock_len)
        self._fd = self._source.get_fd()
        try:
            self._socket = BudgetedSocket(open_socket(self._fd))
        except BaseException:
            self._source.unbind()
            raise

    @property
    def overruns(self) -> int:
        """ENOBUFS seen: times the kernel dropped messages for a full socket buffer (the
        packets themselves are counted in /proc/net/netfilter/nfnetlink_queue)."""
        return self._socket.overruns

    def stats(self) -> dict[str, int]:
        """The reader's counters, as the control port's ``stats`` shows them."""
        return {
            "reader_errors": self.errors,
            "reader_undecoded": self.undecoded,
            "reader_enobufs": self.overruns,
        }

    def fileno(self) -> int:
        return self._fd

    def logPrefix(self) -> str:
        return f"nfqueue-{self.queue_num}"

    def doRead(self) -> None:
        self._socket.left = self.budget
        try:
            self._source.run_socket(self._socket)
        except OSError as error:
            self.errors += 1
            self.log.error(
                "reading queue {queue} failed: {error}", queue=self.queue_num, error=error
            )

    def connectionLost(self, reason: Failure) -> None:
        super().connectionLost(reason)
        self.close()

    def close(self) -> None:
        """Stop reading and detach from the kernel queue (``--queue-bypass`` then applies)."""
        self.stopReading()
        if self._fd >= 0:
            self._socket.close()
            self._source.unbind()
            self._fd = -1

    def _handle(self, queued: IVerdictTarget) -> None:
        try:
            packet = decode(queued.get_payload())
            if packet is None:
                self.undecoded += 1
                verdict = ACCEPT
            else:
                if self.want_mac:
                    packet.mac = queued.get_hw()
                verdict = self.decide(packet, queued.hook)
        except Exception:
            self.errors += 1
            self.log.failure(
                "deciding a packet failed; it gets {verdict}", verdict=self.failure_verdict.name
            )
            verdict = self.failure_verdict
        try:
            if verdict == ACCEPT:
                queued.accept()
            else:
                queued.drop()
        except Exception:
            self.errors += 1
            self.log.failure("setting a verdict failed")
