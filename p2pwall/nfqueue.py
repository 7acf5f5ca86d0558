"""The queue readers' common part and the native reader: the kernel queue's netlink socket
as a reactor read descriptor.

A reader reads at most ``budget`` messages (one per packet) per ``doRead``, so a flood cannot
starve the reactor's timers and the control port (the reactor polls level-triggered and calls
``doRead`` again while messages remain), hands each packet to its ``IPacketHandler`` (which
decodes, decides and answers a failure with the failure verdict), and sends the verdicts.
Modelled on ``twisted.pair.tuntap.TuntapPort``. ``QueueReader`` holds what both readers share:
the counters, the kernel's error reports, the fd and closing.

The native reader sends a turn's verdicts in one ``send`` at its end: a drop per dropped packet
and one batch accept for the rest (``netlink.verdicts``). Verdicts whose ``send`` failed are
kept: they go first in the next turn's, and a timer retries them (with a bounded back-off) in
case no packet comes. A message the kernel could not deliver (ENOBUFS) never reaches us, and the
kernel does not hold its packet: it drops it (``queue_user_dropped``), or accepts it with
``--fail-open``.
"""

from __future__ import annotations

import errno
import socket
from typing import Any

from twisted.internet import abstract
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from . import netlink
from .interfaces import IPacketHandler, IPacketSource, IVerdictTarget
from .packet import ACCEPT

READ_BUDGET = 256
# Seconds before unsent verdicts are sent again; doubled at each failure, up to the last.
RETRY_FIRST = 0.01
RETRY_MAX = 1.0
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)


@implementer(IPacketSource, IVerdictTarget)
class KernelQueue:
    """A bound ``nfnetlink_queue`` queue: whole packets copied, ``max_len`` held at most,
    a ``sock_len`` receive buffer, optionally fail-open (the kernel accepts what a full queue
    cannot hold, instead of dropping it). Closing the socket unbinds the queue."""

    def __init__(
        self,
        queue_num: int,
        max_len: int = 4096,
        sock_len: int = 4 * 1024 * 1024,
        fail_open: bool = False,
        timeout: float = 5.0,
    ) -> None:
        self.queue_num = queue_num
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, netlink.NETLINK_NETFILTER)
        try:
            self._sock.bind((0, 0))
            set_receive_buffer(self._sock, sock_len)
            self._sock.settimeout(timeout)
            self._sock.send(
                netlink.config(
                    queue_num,
                    netlink.CMD_BIND,
                    copy_range=netlink.MAX_COPY_RANGE,
                    max_len=max_len,
                    fail_open=fail_open,
                    seq=1,
                )
            )
            early = self._await_ack(1)
            self._sock.setblocking(False)
            if early is not None:
                self.set_verdicts([], early)
        except BaseException:
            self._sock.close()
            raise
        # IPacketSource.recv_into, bound straight to the socket's: it runs once per packet.
        self.recv_into = self._sock.recv_into

    def _await_ack(self, seq: int) -> int | None:
        """Wait for the kernel's answer to config message ``seq``; a refusal raises
        ``OSError`` with the kernel's errno. Packets queued in the meantime are accepted (the
        daemon is not running yet, as with ``--queue-bypass`` a moment before): returns the
        last one's id, if any."""
        early = None
        while True:
            try:
                data = self._sock.recv(netlink.MAX_MESSAGE)
            except TimeoutError:
                raise OSError(errno.ETIMEDOUT, "nfnetlink_queue did not answer") from None
            except OSError as error:
                if error.errno == errno.ENOBUFS:
                    continue
                raise
            kind = netlink.message_type(data)
            if kind == netlink.MSG_PACKET:
                found = netlink.packet_id(data, len(data))
                early = early if found is None else found
            elif kind == netlink.NLMSG_ERROR and netlink.message_seq(data, 0) == seq:
                code = netlink.error_code(data, 0, len(data))
                if code:
                    raise OSError(code, netlink.error_text(code))
                return early

    def fileno(self) -> int:
        return self._sock.fileno()

    def set_verdicts(self, drops: list[int], accept_through: int | None) -> None:
        self._sock.send(netlink.verdicts(self.queue_num, drops, accept_through))

    def close(self) -> None:
        self._sock.close()


def set_receive_buffer(sock: socket.socket, size: int) -> None:
    """``size`` bytes of receive buffer; beyond ``rmem_max`` only with CAP_NET_ADMIN."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, size)
    except PermissionError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)


# A reactor providing IReactorFDSet (reading) and IReactorTime (the verdict retry timer).
Reactor = Any


class QueueReader(abstract.FileDescriptor):
    """What both readers share: the fd in the reactor, the transport's counters and logs
    (read errors, ENOBUFS, malformed messages, the kernel's error reports), ``stats`` and
    ``close``. A subclass reads in ``doRead`` and releases its transport in ``_release``."""

    log = Logger()
    # Bytes of each packet the transport copies (longer packets arrive cut).
    copy_range = netlink.MAX_COPY_RANGE

    def __init__(
        self, handler: IPacketHandler, reactor: Reactor, fd: int, budget: int, name: str
    ) -> None:
        """``budget``: messages read per ``doRead``; ``name`` names the queue in logs."""
        super().__init__(reactor)
        self.handler = handler
        self.budget = budget
        self.name = name
        self.errors = 0
        self.overruns = 0
        self.refused = 0
        self._fd = fd

    def stats(self) -> dict[str, int]:
        """The reader's counters and its handler's, as the control port's ``stats`` shows
        them (errors are both kinds)."""
        stats = self.handler.stats()
        stats["reader_errors"] += self.errors
        stats["reader_enobufs"] = self.overruns
        stats["reader_refused"] = self.refused
        return stats

    def fileno(self) -> int:
        return self._fd

    def logPrefix(self) -> str:
        return self.name

    def _read_failed(self, error: OSError) -> None:
        """A read error other than EAGAIN: ENOBUFS is counted (the kernel dropped messages for
        a full socket buffer; reading goes on), anything else counted and logged."""
        if error.errno == errno.ENOBUFS:
            self.overruns += 1
            return
        self.errors += 1
        self.log.error("reading {name} failed: {error}", name=self.name, error=error)

    def _malformed(self, view: memoryview, size: int, error: Exception) -> int | None:
        """A message the kernel should never send: counted and logged. If it still names a
        packet, its id is returned, so the packet gets the failure verdict."""
        self.errors += 1
        self.log.error("malformed message from {name}: {error}", name=self.name, error=error)
        return netlink.packet_id(view, size)

    def _kernel_reports(self, view: memoryview | bytes, size: int) -> None:
        """The kernel answers a message it refused (a verdict for an unknown id, say) with an
        error report; there is nothing to retry, so count and log it. EPERM means our verdicts
        are not heard at all (the daemon lost CAP_NET_ADMIN): every queued packet waits and
        the green hosts are blackholed, so it is counted apart and said loudly, once."""
        for kind, start, end in netlink.messages(view, size):
            code = netlink.error_code(view, start, end) if kind == netlink.NLMSG_ERROR else 0
            if not code:
                continue
            self.errors += 1
            if code == errno.EPERM:
                self.refused += 1
                if self.refused == 1:
                    self.log.critical(
                        "{name} refuses our verdicts (EPERM): the daemon lacks CAP_NET_ADMIN; "
                        "queued packets are held and the green hosts are cut off",
                        name=self.name,
                    )
                continue
            self.log.error(
                "{name} refused a message: {error}", name=self.name, error=netlink.error_text(code)
            )

    def connectionLost(self, reason: Failure) -> None:
        super().connectionLost(reason)
        self.close()

    def close(self) -> None:
        """Stop reading and detach from the kernel queue (``--queue-bypass`` then applies)."""
        self.stopReading()
        if self._fd >= 0:
            self._release()
            self._fd = -1

    def _release(self) -> None:
        raise NotImplementedError


class NativeReader(QueueReader):
    """Reads a ``KernelQueue`` (or a fake): whole packets, a turn's verdicts in one send."""

    def __init__(
        self,
        queue: IPacketSource,
        handler: IPacketHandler,
        reactor: Reactor,
        budget: int = READ_BUDGET,
        name: str = "nfqueue",
    ) -> None:
        """``queue`` provides ``IPacketSource`` and ``IVerdictTarget``."""
        super().__init__(handler, reactor, queue.fileno(), budget, name)
        self.queue = queue
        self._buffer = bytearray(netlink.MAX_MESSAGE)
        self._view = memoryview(self._buffer)
        self._parser = netlink.PacketParser()
        # Verdicts whose send failed: they go first in the next send, the timer's or a turn's.
        self._unsent: tuple[list[int], int | None] = ([], None)
        self._retry: IDelayedCall | None = None
        self._retry_delay = RETRY_FIRST

    def doRead(self) -> None:
        """One reactor turn: up to ``budget`` messages, then the turn's verdicts in one send.
        This loop runs once per queued packet: only reading is inline, the handler decides."""
        drops, accept_through = self._unsent
        self._unsent = ([], None)
        recv_into = self.queue.recv_into
        buffer, view = self._buffer, self._view
        handle, parse = self.handler.handle, self._parser.parse
        hwaddr, ifindex = netlink.hwaddr, netlink.ifindex
        for _ in range(self.budget):
            try:
                size = recv_into(buffer)
            except BlockingIOError:
                break
            except OSError as error:
                self._read_failed(error)
                if error.errno == errno.ENOBUFS:
                    continue
                break
            try:
                queued = parse(view, size)
                if queued is None:
                    self._kernel_reports(view, size)
                    continue
                packet_id, hook, start, end, hw_at, indev_at = queued
                mac, indev = hwaddr(buffer, hw_at), ifindex(buffer, indev_at)
            except Exception as error:
                packet_id = self._malformed(view, size, error)
                if packet_id is None:
                    continue
                verdict = self.handler.failure_verdict
            else:
                verdict = handle(buffer, start, end, hook, mac, indev)
            if verdict == ACCEPT:
                accept_through = packet_id
            else:
                drops.append(packet_id)
        if drops or accept_through is not None:
            self._send(drops, accept_through)

    def _send(self, drops: list[int], accept_through: int | None) -> None:
        """Send verdicts; when that fails, keep them and have the timer try again."""
        try:
            self.queue.set_verdicts(drops, accept_through)
        except OSError as error:
            self.errors += 1
            self.log.error("sending verdicts failed, kept and retried: {error}", error=error)
            self._unsent = (drops, accept_through)
            if self._retry is None:
                self._retry = self.reactor.callLater(self._retry_delay, self._resend)
                self._retry_delay = min(self._retry_delay * 2, RETRY_MAX)
            return
        self._retry_delay = RETRY_FIRST
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None

    def _resend(self) -> None:
        """The timer: send what is still unsent (a turn may have sent it meanwhile)."""
        self._retry = None
        drops, accept_through = self._unsent
        self._unsent = ([], None)
        if drops or accept_through is not None:
            self._send(drops, accept_through)

    def _release(self) -> None:
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        self.queue.close()
