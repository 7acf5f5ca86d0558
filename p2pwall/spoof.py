"""Sending forged UDP: ``struct`` builds the bytes (about 1 µs; scapy took ~400), one
long-lived raw socket per family sends them.

Sockets are non-blocking: a full send buffer drops the datagram (counted), it never stalls the
reactor. A ``None`` source means "the gateway's own address towards the destination", found by
connecting a UDP socket there (``connect`` on UDP sends nothing) unless ``--probe-source`` is
set; the answers are cached for up to ``max_routes`` destinations.
"""

from __future__ import annotations

import socket
import struct

from twisted.logger import Logger
from zope.interface import implementer

from .interfaces import ISpoofer
from .packet import addr_text

# SO_MARK on forged datagrams ("p2pw"); p2pwall-rules exempts it from conntrack (raw table), so
# a forged pong or probe never opens a flow that the client's next packet would belong to.
SPOOF_MARK = 0x70327077

TTL = 64
_UDP = 17
_IPV4 = struct.Struct("!BBHHHBBH4s4s")
_IPV6 = struct.Struct("!IHBB16s16s")
_UDP_HEADER = struct.Struct("!HHHH")
# Version 4, IHL 5; TTL and protocol: the constant words of the IPv4 header checksum.
_IPV4_CONSTANT = 0x4500 + (TTL << 8 | _UDP)
_IPV6_FIRST_WORD = 6 << 28  # version 6, traffic class 0, flow label 0


def _words(data: bytes) -> int:
    """``data`` as one integer, odd lengths padded with a zero byte: its ones'-complement sum
    of 16-bit words is this modulo 0xFFFF (2**16 = 1 mod 0xFFFF), computed in C."""
    value = int.from_bytes(data, "big")
    return value << 8 if len(data) & 1 else value


def _complement(total: int) -> int:
    """The checksum of words summing to ``total`` (nonzero): the complement of the folded sum.

    The folded sum is ``total % 0xFFFF``, or 0xFFFF when that is 0 (its complement then is 0)."""
    return -total % 0xFFFF


def build_udp(src: bytes, sport: int, dst: bytes, dport: int, payload: bytes) -> bytes:
    """The whole IP datagram, checksums included, IPv4 or IPv6 after the addresses' size.

    IPv4 goes without DF and with id 0, as the kernel expects of a header-included raw send:
    raw(7) fills in a zero id (``ip_select_ident``, which needs DF clear to pick a real one), and
    a forged pong or probe travels one hop to a directly attached LAN host, so there is no path
    MTU to discover (a datagram over the MTU is refused with EMSGSIZE either way, and counted).
    """
    if len(src) != len(dst) or len(dst) not in (4, 16):
        raise ValueError(f"src and dst must both be IPv4 or both IPv6, not {len(src)}/{len(dst)}")
    addresses = _words(src + dst)
    length = 8 + len(payload)
    # Pseudo-header, then the UDP header with a zero checksum, then the payload. The sum is
    # nonzero (protocol, length), so a checksum of 0 is sent as 0xFFFF: 0 means "none".
    total = addresses + _UDP + length + sport + dport + length + _words(payload)
    udp = _UDP_HEADER.pack(sport, dport, length, _complement(total) or 0xFFFF)
    if len(dst) == 4:
        size = 20 + length
        check = _complement(_IPV4_CONSTANT + size + addresses)
        header = _IPV4.pack(0x45, 0, size, 0, 0, TTL, _UDP, check, src, dst)
    else:
        header = _IPV6.pack(_IPV6_FIRST_WORD, length, _UDP, TTL, src, dst)
    return header + udp + payload


def _family(size: int) -> socket.AddressFamily:
    """The address family of packed addresses of ``size`` bytes."""
    return socket.AF_INET if size == 4 else socket.AF_INET6


def local_address(probe: socket.socket, dst: bytes) -> bytes:
    """The gateway's address on the route to ``dst``: ``connect`` on ``probe``, a UDP socket of
    ``dst``'s family, sends nothing. One socket connected again and again costs a few µs a
    lookup; a new socket each time cost ~15."""
    family = _family(len(dst))
    probe.connect((socket.inet_ntop(family, dst), 9))
    return socket.inet_pton(family, probe.getsockname()[0])


@implementer(ISpoofer)
class RawSpoofer:
    """Writes forged datagrams through raw sockets owned by the daemon."""

    log = Logger()

    def __init__(self, probe_source: bytes | None = None, max_routes: int = 4096) -> None:
        self.probe_source = probe_source
        self.sent = 0
        self.failed = 0
        self._sockets: dict[int, socket.socket] = {}
        self._route_sockets: dict[int, socket.socket] = {}
        self._routes: dict[bytes, bytes] = {}
        self._max_routes = max_routes

    def send_udp(
        self, src: bytes | None, sport: int, dst: bytes, dport: int, payload: bytes
    ) -> None:
        try:
            if src is None:
                src = self._source_for(dst)
            self._socket(len(dst)).sendto(
                build_udp(src, sport, dst, dport, payload),
                (socket.inet_ntop(_family(len(dst)), dst), 0),
            )
            self.sent += 1
        except (OSError, ValueError) as error:
            self.failed += 1
            self.log.warn("spoofing to {dst} failed: {error}", dst=addr_text(dst), error=error)

    def open(self) -> None:
        """Open both raw sockets now, while privileged (``twistd --uid`` drops root later)."""
        for size in (4, 16):
            self._socket(size)

    def close(self) -> None:
        for sockets in (self._sockets, self._route_sockets):
            for sock in sockets.values():
                sock.close()
            sockets.clear()

    def _source_for(self, dst: bytes) -> bytes:
        """A lookup that fails raises (the send is counted as failed) and is not cached."""
        if self.probe_source is not None and len(self.probe_source) == len(dst):
            return self.probe_source
        src = self._routes.get(dst)
        if src is None:
            probe = self._route_sockets.get(len(dst))
            if probe is None:
                probe = self._route_sockets[len(dst)] = socket.socket(
                    _family(len(dst)), socket.SOCK_DGRAM
                )
            if len(self._routes) >= self._max_routes:
                self._routes.clear()
            src = self._routes[dst] = local_address(probe, dst)
        return src

    def _socket(self, size: int) -> socket.socket:
        sock = self._sockets.get(size)
        if sock is None:
            sock = socket.socket(_family(size), socket.SOCK_RAW, socket.IPPROTO_RAW)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, SPOOF_MARK)
            sock.setblocking(False)
            self._sockets[size] = sock
        return sock
