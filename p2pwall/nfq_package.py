"""The queue reader built on the NetfilterQueue package (``--reader netfilterqueue``).

The package binds the queue through libnetfilter_queue and calls back with a packet object
that carries the hook, the input interface, the MAC and the verdict calls. What it cannot do,
and how this reader deals with it:

- it copies at most 4,016 bytes of a packet (``COPY_RANGE``): a longer one arrives cut, and
  the handler counts it and accepts it undecided (a cut DNS answer is never read as whole);
- it cannot set the queue's fail-open flag: ``--fail-open`` is refused with it (options);
- it sends one verdict per packet (no batch verdicts), and a verdict whose send fails is lost
  silently (the package ignores the result); the kernel's refusals still reach the socket, and
  are counted and logged as with the native reader;
- its packet object gives the 8 bytes of the kernel's hardware address field, not the address's
  length: the first ``MAC_SIZE`` are taken (Ethernet), which is what the neighbour table holds.

A budget per reactor turn: ``run(block=False)`` reads until the socket is empty, so the reader
calls ``run_socket`` with ``BudgetedSocket``, whose ``recv`` says EAGAIN once ``budget``
messages were read this turn. It also reads up to ``RECV_SIZE`` bytes, not the package's 4,096:
a cut copy plus the kernel's attributes can exceed 4,096, and a message cut by ``recv`` is
dropped by the library without a callback (its packet would never get a verdict).
"""

from __future__ import annotations

import errno
import os
import socket
from typing import Any, Protocol

from . import netlink
from .interfaces import IPacketHandler
from .nfqueue import READ_BUDGET, QueueReader, Reactor
from .packet import ACCEPT

# NetfilterQueue's copy limit: its 4,096-byte buffer less 80 bytes for metadata (it caps any
# ``range`` given to ``bind`` at this).
COPY_RANGE = 4016
# Bytes read per message: a cut copy and any attributes the kernel adds to it.
RECV_SIZE = 8192
# The hardware address bytes taken from the package's 8-byte field (an Ethernet MAC).
MAC_SIZE = 6


class NfqPacket(Protocol):
    """The package's packet object, as far as this reader uses it."""

    hook: int
    indev: int

    def get_payload(self) -> bytes: ...
    def get_hw(self) -> bytes | None: ...
    def accept(self) -> None: ...
    def drop(self) -> None: ...


def open_netfilterqueue() -> Any:
    """A ``netfilterqueue.NetfilterQueue`` (not yet bound); ``OSError`` without privileges."""
    from netfilterqueue import NetfilterQueue

    return NetfilterQueue()


class BudgetedSocket:
    """The queue's socket as ``run_socket`` reads it: ``left`` messages, then EAGAIN.

    A duplicate of the package's fd, read with ``MSG_DONTWAIT`` (the package's own socket stays
    blocking: libnetfilter_queue waits for acks on it when it unbinds). Error reports from the
    kernel go to the reader instead of the library, which would drop them unseen."""

    def __init__(self, fd: int, reader: NetfilterQueueReader) -> None:
        self._sock = socket.socket(fileno=os.dup(fd))
        self._reader = reader
        self.left = 0

    def recv(self, _size: int) -> bytes:
        recv, reader = self._sock.recv, self._reader
        while self.left > 0:
            self.left -= 1
            try:
                data = recv(RECV_SIZE, socket.MSG_DONTWAIT)
            except OSError as error:
                if error.errno == errno.ENOBUFS:
                    reader.overruns += 1
                raise  # run_socket goes on after ENOBUFS, stops at EAGAIN, raises the rest
            if netlink.message_type(data) != netlink.NLMSG_ERROR:
                return data
            try:
                reader._kernel_reports(data, len(data))
            except ValueError as error:
                reader._malformed(memoryview(data), len(data), error)
        raise BlockingIOError(errno.EAGAIN, "read budget spent")

    def close(self) -> None:
        self._sock.close()


class NetfilterQueueReader(QueueReader):
    """Reads a queue bound through a ``netfilterqueue.NetfilterQueue`` (or a fake of it)."""

    copy_range = COPY_RANGE

    def __init__(
        self,
        nfq: Any,
        queue_num: int,
        handler: IPacketHandler,
        reactor: Reactor,
        max_len: int = 4096,
        sock_len: int = 4 * 1024 * 1024,
        budget: int = READ_BUDGET,
        name: str = "nfqueue",
    ) -> None:
        """Binds ``queue_num`` on ``nfq`` (an unbound ``NetfilterQueue``); ``OSError`` when
        the kernel refuses."""
        nfq.bind(queue_num, self._packet, max_len=max_len, range=COPY_RANGE, sock_len=sock_len)
        try:
            self._socket = BudgetedSocket(nfq.get_fd(), self)
        except BaseException:
            nfq.unbind()
            raise
        super().__init__(handler, reactor, nfq.get_fd(), budget, name)
        self.nfq = nfq
        self._handle = handler.handle

    def doRead(self) -> None:
        """One reactor turn: up to ``budget`` messages, each packet's verdict sent as it is
        decided (the package has no batch verdicts)."""
        self._socket.left = self.budget
        try:
            self.nfq.run_socket(self._socket)
        except OSError as error:
            self._read_failed(error)

    def _packet(self, packet: NfqPacket) -> None:
        """The package's callback, once per packet: the handler's verdict, applied."""
        try:
            payload = packet.get_payload()
        except RuntimeError as error:  # no payload: the package says why
            self.errors += 1
            self.log.error("unreadable packet from {name}: {error}", name=self.name, error=error)
            verdict = self.handler.failure_verdict
        else:
            hw = packet.get_hw()
            mac = hw[:MAC_SIZE] if hw is not None else None
            verdict = self._handle(payload, 0, len(payload), packet.hook, mac, packet.indev)
        if verdict == ACCEPT:
            packet.accept()
        else:
            packet.drop()

    def _release(self) -> None:
        self._socket.close()
        self.nfq.unbind()
        # The package closes its netlink socket when the object goes (no close method).
        self.nfq = None
