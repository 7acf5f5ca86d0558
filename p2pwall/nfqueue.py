"""The NFQUEUE reader: the kernel queue's netlink socket as a reactor read descriptor.

Every queued packet gets exactly one verdict, also when decoding or the engine raises (that
packet gets the configured failure verdict and the error is logged). Modelled on
``twisted.pair.tuntap.TuntapPort``, read budget included: one ``doRead`` reads at most
``budget`` messages (one per packet), so a flood cannot starve the reactor's timers and the
control port; the reactor polls level-triggered and calls ``doRead`` again while messages remain.

A turn's verdicts leave in one ``send`` at its end: a drop per dropped packet and one batch
accept for the rest (``netlink.verdicts``). Nothing is held across turns, so no flush timer is
needed (only verdicts whose ``send`` failed wait, to go first in the next turn's). A message the
kernel could not deliver (ENOBUFS) never reaches us, and the kernel does not hold its packet:
it drops it (``queue_user_dropped``), or accepts it with ``--fail-open``.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable

from twisted.internet import abstract
from twisted.internet.interfaces import IReactorFDSet
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from . import netlink
from .interfaces import IPacketSource, IVerdictTarget
from .packet import ACCEPT, Packet, Verdict, decode

Decide = Callable[[Packet, int], Verdict]

READ_BUDGET = 256
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


class QueueReader(abstract.FileDescriptor):
    """Reads a queue's messages when its fd is readable, hands each packet to ``decide`` and
    sends the turn's verdicts."""

    log = Logger()

    def __init__(
        self,
        queue: IPacketSource,
        decide: Decide,
        reactor: IReactorFDSet,
        failure_verdict: Verdict = Verdict.ACCEPT,
        want_mac: bool = False,
        budget: int = READ_BUDGET,
        name: str = "nfqueue",
    ) -> None:
        """``queue`` provides ``IPacketSource`` and ``IVerdictTarget`` (a ``KernelQueue``, or a
        fake); ``budget``: messages read per ``doRead``; ``name`` names the queue in logs."""
        super().__init__(reactor)
        self.queue = queue
        self.decide = decide
        self.failure_verdict = failure_verdict
        self.want_mac = want_mac
        self.budget = budget
        self.name = name
        self.errors = 0
        self.undecoded = 0
        self.overruns = 0
        self.refused = 0
        self._fd = queue.fileno()
        self._buffer = bytearray(netlink.MAX_MESSAGE)
        self._view = memoryview(self._buffer)
        self._parser = netlink.PacketParser()
        # Verdicts whose send failed: they go first in the next turn's.
        self._unsent: tuple[list[int], int | None] = ([], None)

    def stats(self) -> dict[str, int]:
        """The reader's counters, as the control port's ``stats`` shows them."""
        return {
            "reader_errors": self.errors,
            "reader_undecoded": self.undecoded,
            "reader_enobufs": self.overruns,
            "reader_refused": self.refused,
        }

    def fileno(self) -> int:
        return self._fd

    def logPrefix(self) -> str:
        return self.name

    def doRead(self) -> None:
        """One reactor turn: up to ``budget`` messages, then the turn's verdicts in one send.
        Decoding and deciding are inline: this loop runs once per queued packet."""
        drops, accept_through = self._unsent
        self._unsent = ([], None)
        recv_into = self.queue.recv_into
        buffer, view = self._buffer, self._view
        decide, want_mac, parse = self.decide, self.want_mac, self._parser.parse
        ifindex = netlink.ifindex
        for _ in range(self.budget):
            try:
                size = recv_into(buffer)
            except BlockingIOError:
                break
            except OSError as error:
                if error.errno != errno.ENOBUFS:
                    self.errors += 1
                    self.log.error("reading {name} failed: {error}", name=self.name, error=error)
                    break
                self.overruns += 1
                continue
            try:
                queued = parse(view, size)
                if queued is None:
                    self._kernel_reports(view, size)
                    continue
            except Exception as error:
                packet_id = self._malformed(view, size, error)
                if packet_id is None:
                    continue
                verdict = self.failure_verdict
            else:
                packet_id, hook, start, end, hw_at, indev_at = queued
                try:
                    packet = decode(buffer, start, end)
                    if packet is None:
                        self.undecoded += 1
                        verdict = ACCEPT
                    else:
                        if want_mac:
                            packet.mac = netlink.hwaddr(buffer, hw_at)
                        if indev_at:
                            packet.indev = ifindex(buffer, indev_at)
                        verdict = decide(packet, hook)
                except Exception:
                    self.errors += 1
                    self.log.failure(
                        "deciding a packet failed; it gets {verdict}",
                        verdict=self.failure_verdict.name,
                    )
                    verdict = self.failure_verdict
            if verdict == ACCEPT:
                accept_through = packet_id
            else:
                drops.append(packet_id)
        if drops or accept_through is not None:
            try:
                self.queue.set_verdicts(drops, accept_through)
            except OSError as error:
                self.errors += 1
                self.log.error(
                    "sending verdicts failed, kept for the next turn: {error}", error=error
                )
                self._unsent = (drops, accept_through)

    def _malformed(self, view: memoryview, size: int, error: Exception) -> int | None:
        """A message the kernel should never send: counted and logged. If it still names a
        packet, its id is returned, so the packet gets the failure verdict."""
        self.errors += 1
        self.log.error("malformed message from {name}: {error}", name=self.name, error=error)
        return netlink.packet_id(view, size)

    def _kernel_reports(self, view: memoryview, size: int) -> None:
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
            self.queue.close()
            self._fd = -1
