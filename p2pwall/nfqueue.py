"""The NFQUEUE reader: NetfilterQueue's netlink fd as a reactor read descriptor.

Every queued packet gets exactly one verdict, also when decoding or the engine raises (that
packet gets the configured failure verdict and the error is logged). Modelled on
``twisted.pair.tuntap.TuntapPort``.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet import abstract
from twisted.internet.interfaces import IReactorFDSet
from twisted.logger import Logger
from twisted.python.failure import Failure

from .interfaces import IPacketSource, IVerdictTarget
from .packet import ACCEPT, Packet, Verdict, decode

Decide = Callable[[Packet, int], Verdict]

COPY_PACKET = 2
_COPY_RANGE = 0xFFFF


def netfilter_queue() -> IPacketSource:
    """The real packet source; imported late so tests and ``--help`` work without it."""
    from netfilterqueue import NetfilterQueue

    return NetfilterQueue()


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
    ) -> None:
        super().__init__(reactor)
        self.queue_num = queue_num
        self.decide = decide
        self.failure_verdict = failure_verdict
        self.want_mac = want_mac
        self.errors = 0
        self.undecoded = 0
        self._source = source if source is not None else netfilter_queue()
        self._source.bind(queue_num, self._handle, max_len, COPY_PACKET, _COPY_RANGE, sock_len)
        self._fd = self._source.get_fd()

    def fileno(self) -> int:
        return self._fd

    def logPrefix(self) -> str:
        return f"nfqueue-{self.queue_num}"

    def doRead(self) -> None:
        try:
            self._source.run(False)
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
