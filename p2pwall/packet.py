"""Decode the headers of one queued packet, fast.

This is the per-packet hot path: ``struct`` and ``memoryview`` only, no scapy, no copies of the
payload. Anything that is not a whole, unfragmented IPv4/IPv6 UDP or TCP packet decodes to
``None`` ("unknown"), which the engine accepts.
"""

from __future__ import annotations

import enum
import ipaddress
import struct

UDP = 17
TCP = 6

TCP_FIN = 0x01
TCP_SYN = 0x02
TCP_RST = 0x04
TCP_ACK = 0x10

_IPV4_HEADER = struct.Struct("!BBHHHBBH4s4s")
_IPV6_HEADER = struct.Struct("!IHBB16s16s")
_PORTS = struct.Struct("!HH")
_UDP_LENGTH = struct.Struct("!H")

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


class Packet:
    """The decoded headers of one UDP or TCP packet; addresses are packed bytes."""

    __slots__ = ("version", "src", "dst", "proto", "sport", "dport", "flags", "payload", "mac")

    def __init__(
        self,
        version: int,
        src: bytes,
        dst: bytes,
        proto: int,
        sport: int,
        dport: int,
        flags: int,
        payload: memoryview,
    ) -> None:
        self.version = version
        self.src = src
        self.dst = dst
        self.proto = proto
        self.sport = sport
        self.dport = dport
        self.flags = flags
        self.payload = payload
        self.mac: bytes | None = None

    @property
    def is_syn(self) -> bool:
        """A connection attempt: SYN without ACK."""
        return self.proto == TCP and self.flags & (TCP_SYN | TCP_ACK) == TCP_SYN

    def __repr__(self) -> str:
        return (
            f"<Packet {proto_name(self.proto)} {endpoint_text(self.src, self.sport)} -> "
            f"{endpoint_text(self.dst, self.dport)} flags={self.flags:#x} len={len(self.payload)}>"
        )


def decode(data: bytes) -> Packet | None:
    """Decode an IP packet as queued by the kernel; ``None`` when it is not whole UDP/TCP."""
    view = memoryview(data)
    if len(view) < 20:
        return None
    version = view[0] >> 4
    if version == 4:
        return _decode_ipv4(view)
    if version == 6:
        return _decode_ipv6(view)
    return None


def _decode_ipv4(view: memoryview) -> Packet | None:
    vihl, _tos, total, _ident, frag, _ttl, proto, _csum, src, dst = _IPV4_HEADER.unpack_from(view)
    ihl = (vihl & 0x0F) * 4
    if ihl < 20 or frag & 0x3FFF or total < ihl:
        return None
    end = min(total, len(view))
    return _decode_transport(4, src, dst, proto, view[ihl:end])


def _decode_ipv6(view: memoryview) -> Packet | None:
    if len(view) < 40:
        return None
    _vtcfl, plen, proto, _hops, src, dst = _IPV6_HEADER.unpack_from(view)
    end = min(40 + plen, len(view))
    offset = 40
    while proto in _IPV6_SKIPPABLE:
        if offset + 8 > end:
            return None
        proto, length = view[offset], view[offset + 1]
        offset += (length + 1) * 8
    if offset > end:
        return None
    return _decode_transport(6, src, dst, proto, view[offset:end])


def _decode_transport(
    version: int, src: bytes, dst: bytes, proto: int, seg: memoryview
) -> Packet | None:
    if proto == UDP:
        if len(seg) < 8:
            return None
        sport, dport = _PORTS.unpack_from(seg)
        (length,) = _UDP_LENGTH.unpack_from(seg, 4)
        if length < 8:
            return None
        return Packet(version, src, dst, UDP, sport, dport, 0, seg[8:length])
    if proto == TCP:
        if len(seg) < 20:
            return None
        sport, dport = _PORTS.unpack_from(seg)
        data_offset = (seg[12] >> 4) * 4
        if data_offset < 20 or data_offset > len(seg):
            return None
        return Packet(version, src, dst, TCP, sport, dport, seg[13], seg[data_offset:])
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
