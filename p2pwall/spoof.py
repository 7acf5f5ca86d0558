"""Sending forged UDP: scapy builds the bytes, one long-lived raw socket per family sends them.

Sockets are non-blocking: a full send buffer drops the datagram (counted), it never stalls the
reactor. A ``None`` source means "the gateway's own address towards the destination", found
with a connected UDP socket (``connect`` on UDP sends nothing) unless ``--probe-source`` is set.
"""

from __future__ import annotations

import ipaddress
import socket

from twisted.logger import Logger
from zope.interface import implementer

from .interfaces import ISpoofer
from .packet import addr_text

# SO_MARK on forged datagrams ("p2pw"); p2pwall-rules exempts it from conntrack (raw table), so
# a forged pong or probe never opens a flow that the client's next packet would belong to.
SPOOF_MARK = 0x70327077


def build_udp(src: bytes, sport: int, dst: bytes, dport: int, payload: bytes) -> bytes:
    """The whole IP datagram, checksums included."""
    from scapy.layers.inet import IP, UDP
    from scapy.layers.inet6 import IPv6

    layer = IP if len(src) == 4 else IPv6
    return bytes(
        layer(src=addr_text(src), dst=addr_text(dst)) / UDP(sport=sport, dport=dport) / payload
    )


def local_address(dst: bytes) -> bytes:
    """The gateway's address on the route to ``dst``."""
    family = socket.AF_INET if len(dst) == 4 else socket.AF_INET6
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        probe.connect((addr_text(dst), 9))
        return ipaddress.ip_address(probe.getsockname()[0]).packed


@implementer(ISpoofer)
class RawSpoofer:
    """Writes forged datagrams through raw sockets owned by the daemon."""

    log = Logger()

    def __init__(self, probe_source: bytes | None = None, max_routes: int = 4096) -> None:
        self.probe_source = probe_source
        self.sent = 0
        self.failed = 0
        self._sockets: dict[int, socket.socket] = {}
        self._routes: dict[bytes, bytes] = {}
        self._max_routes = max_routes

    def send_udp(
        self, src: bytes | None, sport: int, dst: bytes, dport: int, payload: bytes
    ) -> None:
        try:
            if src is None:
                src = self._source_for(dst)
            self._socket(len(dst)).sendto(
                build_udp(src, sport, dst, dport, payload), (addr_text(dst), 0)
            )
            self.sent += 1
        except OSError as error:
            self.failed += 1
            self.log.warn("spoofing to {dst} failed: {error}", dst=addr_text(dst), error=error)

    def open(self) -> None:
        """Open both raw sockets now, while privileged (``twistd --uid`` drops root later)."""
        for size in (4, 16):
            self._socket(size)

    def close(self) -> None:
        for sock in self._sockets.values():
            sock.close()
        self._sockets.clear()

    def _source_for(self, dst: bytes) -> bytes:
        if self.probe_source is not None and len(self.probe_source) == len(dst):
            return self.probe_source
        src = self._routes.get(dst)
        if src is None:
            if len(self._routes) >= self._max_routes:
                self._routes.clear()
            src = self._routes[dst] = local_address(dst)
        return src

    def _socket(self, size: int) -> socket.socket:
        sock = self._sockets.get(size)
        if sock is None:
            family = socket.AF_INET if size == 4 else socket.AF_INET6
            sock = socket.socket(family, socket.SOCK_RAW, socket.IPPROTO_RAW)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, SPOOF_MARK)
            sock.setblocking(False)
            self._sockets[size] = sock
        return sock
