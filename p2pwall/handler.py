"""What every queue reader hands each queued packet to: decoding, the engine's decision and the
rule that every packet gets exactly one verdict, also when deciding raises.

The readers (``nfqueue.NativeReader``, ``nfq_package.NetfilterQueueReader``) only move bytes
and verdicts; whatever they read, this decides the same way. It runs once per queued packet.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from twisted.logger import Logger
from zope.interface import implementer

from . import netlink
from .interfaces import IPacketHandler
from .packet import ACCEPT, Packet, Verdict, decode

Decide = Callable[[Packet, int], Verdict]

_LENGTH = struct.Struct("!H")
_IPV4_TOTAL_AT = 2  # the IPv4 header's total length field
_IPV6_PAYLOAD_AT = 4  # the IPv6 header's payload length field
_IPV6_HEADER = 40


def declared_size(data: bytes | bytearray | memoryview, start: int, end: int) -> int:
    """How long the IP packet at ``data[start:]`` says it is (0 when it cannot say)."""
    if end - start < _IPV6_PAYLOAD_AT + _LENGTH.size:
        return 0
    version = data[start] >> 4
    if version == 4:
        return _LENGTH.unpack_from(data, start + _IPV4_TOTAL_AT)[0]
    if version == 6:
        return _IPV6_HEADER + _LENGTH.unpack_from(data, start + _IPV6_PAYLOAD_AT)[0]
    return 0


@implementer(IPacketHandler)
class PacketHandler:
    """Decodes a queued packet and asks ``decide`` for its verdict.

    A packet that is not whole UDP/TCP is accepted without asking (``undecoded``). A packet at
    least ``copy_range`` bytes long may have been cut by the reader's copy (NetfilterQueue
    copies 4,016 bytes at most): when its IP header says it is longer than what arrived, it is
    counted (``cut``) and decided on its headers alone, with an empty payload. So no detector
    reads half a message (a cut DNS answer is never taken for a whole one), and the blocks and
    time locks still apply: padding a datagram past the copy does not get it past a block.
    """

    log = Logger()

    def __init__(
        self,
        decide: Decide,
        failure_verdict: Verdict = Verdict.ACCEPT,
        copy_range: int = netlink.MAX_COPY_RANGE,
    ) -> None:
        self.decide = decide
        self.failure_verdict = failure_verdict
        self.copy_range = copy_range
        self.errors = 0
        self.undecoded = 0
        self.cut = 0

    def handle(
        self,
        data: bytes | bytearray,
        start: int,
        end: int,
        hook: int,
        mac: bytes | None,
        indev: int,
    ) -> Verdict:
        try:
            packet = decode(data, start, end)
            if packet is None:
                self.undecoded += 1
                return ACCEPT
            if end - start >= self.copy_range and declared_size(data, start, end) > end - start:
                self._cut(end - start)
                packet.payload = b""
            packet.mac = mac
            packet.indev = indev
            return self.decide(packet, hook)
        except Exception:
            self.errors += 1
            self.log.failure(
                "deciding a packet failed; it gets {verdict}", verdict=self.failure_verdict.name
            )
            return self.failure_verdict

    def _cut(self, size: int) -> None:
        self.cut += 1
        if self.cut == 1:
            self.log.warn(
                "a packet arrived cut to {size} bytes (the reader's copy limit): decided on its "
                "headers, its payload unread, as every cut packet will be (stats reader_cut)",
                size=size,
            )

    def stats(self) -> dict[str, int]:
        return {
            "reader_errors": self.errors,
            "reader_undecoded": self.undecoded,
            "reader_cut": self.cut,
        }
