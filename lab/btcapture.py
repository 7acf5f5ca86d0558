"""The lab's own reading of a gateway capture: when a client first spoke BitTorrent in the clear,
and how many bytes the seeders sent it.

This is the measuring stick for the daemon, so it is deliberately independent of p2pwall's
detector: a classic pcap file (as ``tcpdump -w`` writes it, Ethernet, IPv4) read with
``struct``, and a small matcher for the cleartext signals every client sends even with
encryption required (BEP 5 KRPC, BEP 15 UDP tracker, HTTP tracker announce, the plain
handshake).
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

PCAP_MAGIC_US = 0xA1B2C3D4
PCAP_MAGIC_NS = 0xA1B23C4D
LINKTYPE_ETHERNET = 1
ETH_IPV4 = 0x0800
TCP, UDP = 6, 17
BEP15_MAGIC = struct.pack(">Q", 0x41727101980)
HANDSHAKE = b"\x13BitTorrent protocol"


class CaptureError(ValueError):
    """Not a capture this reader understands; the message says why."""


@dataclass(frozen=True)
class Segment:
    """One IPv4 TCP or UDP packet of a capture: when, who, and the payload captured."""

    time: float
    proto: int
    src: str
    sport: int
    dst: str
    dport: int
    payload: bytes
    length: int  # the payload's length on the wire (the capture may have cut it)


def frames(data: bytes) -> Iterator[tuple[float, bytes, int]]:
    """(time, captured bytes, length on the wire) of each frame of a classic pcap file.

    A truncated last record (tcpdump stopped mid-write) ends the iteration.
    """
    if len(data) < 24:
        raise CaptureError("not a pcap file: shorter than its header")
    for order in "<>":
        magic, *_version, link = struct.unpack_from(order + "IHHiIII", data)
        if magic in (PCAP_MAGIC_US, PCAP_MAGIC_NS):
            break
    else:
        raise CaptureError("not a pcap file: bad magic")
    if link != LINKTYPE_ETHERNET:
        raise CaptureError(f"link type {link} is not Ethernet")
    scale = 1e-6 if magic == PCAP_MAGIC_US else 1e-9
    offset = 24
    while offset + 16 <= len(data):
        sec, frac, caplen, wirelen = struct.unpack_from(order + "IIII", data, offset)
        offset += 16
        if offset + caplen > len(data):
            return
        yield sec + frac * scale, data[offset : offset + caplen], wirelen
        offset += caplen


def segments(data: bytes) -> Iterator[Segment]:
    """The IPv4 TCP and UDP packets of a capture (other frames, fragments after the first and
    frames cut inside their headers are skipped)."""
    for when, frame, wirelen in frames(data):
        if len(frame) < 34 or struct.unpack_from(">H", frame, 12)[0] != ETH_IPV4:
            continue
        ihl = (frame[14] & 0x0F) * 4
        total = struct.unpack_from(">H", frame, 16)[0]
        proto, frag = frame[23], struct.unpack_from(">H", frame, 20)[0] & 0x1FFF
        start = 14 + ihl
        if proto not in (TCP, UDP) or frag or ihl < 20 or len(frame) < start + 8:
            continue
        sport, dport = struct.unpack_from(">HH", frame, start)
        if proto == TCP:
            if len(frame) < start + 20:
                continue
            start += (frame[start + 12] >> 4) * 4
        else:
            start += 8
        length = max(0, min(total, wirelen - 14) - (start - 14))
        yield Segment(
            when,
            proto,
            socket.inet_ntoa(frame[26:30]),
            sport,
            socket.inet_ntoa(frame[30:34]),
            dport,
            frame[start : 14 + total],
            length,
        )


def is_cleartext_bittorrent(proto: int, payload: bytes) -> bool:
    """Whether a payload is one of the cleartext BitTorrent signals: a KRPC message (UDP, a
    bencoded dict ``d1:``... or any dict holding ``1:y1:q``), a BEP 15 tracker connect (the
    magic at offset 0), an HTTP tracker announce, or the plain handshake."""
    if proto == UDP:
        return payload.startswith(b"d1:") or b"1:y1:q" in payload or payload.startswith(BEP15_MAGIC)
    if proto == TCP:
        return payload.startswith(b"GET /announce") or payload.startswith(HANDSHAKE)
    return False


def first_cleartext(data: bytes, client: str, since: float = 0.0) -> float | None:
    """Time of ``client``'s first cleartext BitTorrent packet at or after ``since``, or None."""
    for seg in segments(data):
        if (
            seg.src == client
            and seg.time >= since
            and is_cleartext_bittorrent(seg.proto, seg.payload)
        ):
            return seg.time
    return None


def bytes_from(data: bytes, client: str, sources: Iterable[str], since: float = 0.0) -> int:
    """Payload bytes on the wire from ``sources`` to ``client`` at or after ``since``: TCP, and
    UDP that is not KRPC (uTP). A cross-check of what the client itself reports (protocol
    overhead counts too; a capture may miss packets of a download at full speed)."""
    senders = set(sources)
    return sum(
        seg.length
        for seg in segments(data)
        if seg.dst == client
        and seg.src in senders
        and seg.time >= since
        and (seg.proto == TCP or not seg.payload.startswith(b"d"))
    )
