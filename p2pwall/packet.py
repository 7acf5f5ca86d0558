"""Decode the headers of one queued packet, fast.

This is the per-packet hot path: ``struct`` and offsets only, no scapy; the transport payload
is the one copy made. Anything that is not a whole, unfragmented IPv4/IPv6 UDP or TCP packet
decodes to ``None`` ("unknown"), which the engine accepts.
"""

from __future__ import annotations

import enum
import ipaddress
import struct

UDP = 17
TCP = 6

TCP_SYN = 0x02
TCP_ACK = 0x10

_IPV4_HEADER = struct.Struct("!BxHxxHxB2x4s4s")
_IPV6_HEADER = struct.Struct("!4xHBx16s16s")
_TRANSPORT = struct.Struct("!HHH")

# IPv6 extension headers that can be skipped to reach the transport header. A fragment header
# (44) is deliberately absent: fragments decode to unknown, as IPv4 fragments do.
_IPV6_SKIPPABLE = frozenset((0, 43, 60))


class Hook(enum.IntEnum):
    """Netfilter hooks a packet can be queued from (``NF_INET_*`` numbers)."""

    PREROUTING = 0
    INPUT = 1
    FORWARD = 2
    OUTPUT = 3
    POSTROUTING = 4


class Verdict(enum.IntEnum):
    """What happens to a queued packet (``NF_DROP`` / ``NF_ACCEPT`` numbers)."""

    DROP = 0
    ACCEPT = 1


# Plain module constants for the hot path: an enum member lookup costs ~100 ns.
INPUT = Hook.INPUT
FORWARD = Hook.FORWARD
ACCEPT = Verdict.ACCEPT
DROP = Verdict.DROP


class Packet:
    """The decoded headers of one UDP or TCP packet; addresses are packed bytes."""

    __slots__ = (
        "version", "src", "dst", "proto", "sport", "dport", "flags", "payload", "mac", "indev",
    )  # fmt: skip

    def __init__(
        self,
        version: int,
        src: bytes,
        dst: bytes,
        proto: int,
        sport: int,
        dport: int,
        flags: int,
        payload: bytes | bytearray,
    ) -> None:
        self.version = version
        self.src = src
        self.dst = dst
        self.proto = proto
        self.sport = sport
        self.dport = dport
        self.flags = flags
        self.payload = payload
        # Filled in by the queue reader: the sender's MAC (None: none on that link) and the
        # index of the interface the packet came in on (0: unknown, e.g. locally sent).
        self.mac: bytes | None = None
        self.indev = 0

    def __repr__(self) -> str:
        return (
            f"<Packet {proto_name(self.proto)} {endpoint_text(self.src, self.sport)} -> "
            f"{endpoint_text(self.dst, self.dport)} flags={self.flags:#x} len={len(self.payload)}>"
        )


def decode(data: bytes | bytearray, at: int = 0, end: int | None = None) -> Packet | None:
    """Decode the IP packet in ``data[at:end]`` as queued by the kernel; ``None`` when it is
    not whole UDP/TCP.

    One function, offsets into ``data`` (the reader's receive buffer, so nothing is copied
    before the packet is known) and one slice for the payload, a copy of the transport payload
    alone: this runs for every queued packet.
    """
    limit = len(data) if end is None else end
    size = limit - at
    if size < 20:
        return None
    version = data[at] >> 4
    if version == 4:
        vihl, total, frag, proto, src, dst = _IPV4_HEADER.unpack_from(data, at)
        header = (vihl & 0x0F) * 4
        if header < 20 or frag & 0x3FFF or total < header:
            return None
        start = at + header
        stop = at + total if total < size else limit
    elif version == 6:
        if size < 40:
            return None
        plen, proto, src, dst = _IPV6_HEADER.unpack_from(data, at)
        stop = at + 40 + plen if 40 + plen < size else limit
        start = at + 40
        while proto in _IPV6_SKIPPABLE:
            if start + 8 > stop:
                return None
            proto = data[start]
            start += (data[start + 1] + 1) * 8
    else:
        return None
    if proto == UDP:
        if stop - start < 8:
            return None
        sport, dport, length = _TRANSPORT.unpack_from(data, start)
        if length < 8:
            return None
        last = start + length if start + length < stop else stop
        return Packet(version, src, dst, UDP, sport, dport, 0, data[start + 8 : last])
    if proto == TCP:
        if stop - start < 20:
            return None
        sport, dport, _seq = _TRANSPORT.unpack_from(data, start)
        offset = start + (data[start + 12] >> 4) * 4
        if offset < start + 20 or offset > stop:
            return None
        return Packet(version, src, dst, TCP, sport, dport, data[start + 13], data[offset:stop])
    return None


def proto_name(proto: int) -> str:
    return {UDP: "UDP", TCP: "TCP"}.get(proto, str(proto))


def addr_text(addr: bytes) -> str:
    """Packed address to its usual text form."""
    return str(ipaddress.ip_address(addr))


def endpoint_text(addr: bytes, port: int | None) -> str:
    """``a.b.c.d:port`` or ``[v6]:port``; the bare address when the port is absent."""
    text = addr_text(addr)
    if not port:
        return text
    return f"[{text}]:{port}" if len(addr) == 16 else f"{text}:{port}"


def mac_text(hw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in hw)
