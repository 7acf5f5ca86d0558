"""FastTrack (Kazaa, KazaaLite, iMesh, Grokster): the UDP hello, its pongs, probes and the
clear-text HTTP download start, and what ftwall does on seeing each of them.

Wire facts: docs/protocols.md sections 1 and 2.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any

from zope.interface import implementer, provider

from ..interfaces import IDetector, IDetectorFactory, IEngine, IProbe
from ..origins import Origin, Protocol
from ..packet import ACCEPT, DROP, FORWARD, INPUT, TCP, UDP, Packet, Verdict, addr_text

HELLO = 0x27
PONG = 0x28
PONG2 = 0x29

KNOWN_NETWORKS = frozenset((b"KaZaA", b"fileshare", b"Grokster", b"MusicCity", b"iMesh"))

_MAX_HELLO = 7 + 32
_NAME_CHARS = bytes(range(0x21, 0x7F))
_HTTP_PEEK = 4096
_DOWNLOAD_FIRST_BYTES = frozenset(b"G")

FASTTRACK = Protocol("FastTrack", "fasttrack")
# A hello or a download to a well-known service port (DNS, NTP, HTTPS...) names no FastTrack
# peer, even for the host that sent it. Kazaa does listen on 80. Store files before the
# protocol-neutral core called these origins "udp" and "http".
_LOW_FASTTRACK_PORTS = frozenset((80,))


def fasttrack_origins(udp_passes: bool = False) -> tuple[Origin, Origin]:
    """The origins of peers learned from hellos and from downloads; ``udp_passes`` (``-n``)
    lets UDP to them through, as ftwall's ``-n`` does."""

    def origin(name: str, alias: str) -> Origin:
        return Origin(
            name,
            FASTTRACK,
            locks=True,
            low_ports=_LOW_FASTTRACK_PORTS,
            drops_udp=not udp_passes,
            aliases=(alias,),
        )

    return origin("fasttrack-udp", "udp"), origin("fasttrack-http", "http")


@implementer(IProbe)
class HelloProbe:
    """ftwall's probe: a copy of the client's own hello, from the port of the peer it last
    greeted (where the rules queue its pong to the gateway)."""

    protocol = FASTTRACK

    def __init__(self, hello: bytes, port: int, source_port: int) -> None:
        self.hello = hello
        self.port = port
        self.source_port = source_port

    def payload(self) -> bytes:
        return self.hello

    def answers(self, packet: Packet) -> bool:
        return packet.dport == self.source_port and is_pong(packet.payload)


@dataclass(frozen=True)
class Hello:
    """A 0x27 node ping: ``27 | min_enc(4) | 80 | name | 00``."""

    enc: bytes
    name: bytes


def parse_hello(payload: memoryview | bytes) -> Hello | None:
    """The hello in a UDP payload, or ``None``; cheap rejects first (this runs per UDP packet)."""
    size = len(payload)
    if size < 8 or size > _MAX_HELLO or payload[0] != HELLO or payload[5] != 0x80:
        return None
    if payload[1] or payload[2] or payload[3] or payload[size - 1]:
        return None
    name = bytes(payload[6 : size - 1])
    if name.translate(None, _NAME_CHARS):
        return None
    return Hello(bytes(payload[1:5]), name)


def is_pong(payload: memoryview | bytes) -> bool:
    """A 0x28 or 0x29 reply: how a live client answers a probe."""
    return (
        len(payload) >= 5
        and payload[0] in (PONG, PONG2)
        and not (payload[1] or payload[2] or payload[3])
    )


def build_pong(hello: Hello, load: int = 40) -> bytes:
    """A 0x28 supernode pong echoing the hello: 17 bytes for KaZaA; it invites the client to
    try TCP to that peer, which keeps it in its noisy, easily blocked first phase."""
    return bytes((PONG,)) + hello.enc + bytes((0, 1, 0, 0, load & 0xFF, 0)) + hello.name + b"\0"


@dataclass(frozen=True)
class Download:
    """The start of a FastTrack HTTP transfer and the addresses its headers name."""

    request: str
    headers: dict[str, str] = field(default_factory=dict)
    named: tuple[tuple[bytes, int, str], ...] = ()


_KAZAA_HEADER = re.compile(rb"^(x-kazaa[\w-]*|user-agent|useragent):[ \t]*(.*)$", re.I | re.M)
_GIVE = re.compile(rb"^GIVE [0-9]{1,12}\r?\n")
_ADDRESS_HEADERS = ("x-kazaa-supernodeip", "x-kazaa-ip")
_BROWSER_HEADER = re.compile(rb"^(accept-encoding|sec-fetch-[a-z]+|origin):", re.I | re.M)


def _has_marker(lowered: bytes) -> bool:
    """Cheap pre-check before the header regex: ``in`` on lowered bytes beats ``re.I`` 3x."""
    return b"x-kazaa" in lowered or b"peerenabler/" in lowered


def parse_download(payload: memoryview | bytes) -> Download | None:
    """A FastTrack download start: ``GET /`` with ``X-Kazaa-*`` headers, or ``GIVE n``.

    Only what a web page cannot make a browser send counts: a browser adds no ``X-Kazaa-*``
    header to a cross-origin request (it would need a CORS preflight the FastTrack peer never
    answers) and cannot start a request with ``GIVE n``. A ``/.hash=`` path or a user agent
    alone is an ``<img src>`` away, so it teaches nothing. A page may add ``X-Kazaa-*`` to a
    request to its own origin, but every browser request also carries headers a page cannot
    remove (``Accept-Encoding``, and ``Sec-Fetch-*``/``Origin`` where they apply), which no
    FastTrack client sends: such a request is a browser's."""
    head = bytes(payload[:_HTTP_PEEK])
    if head.startswith(b"GIVE "):
        match = _GIVE.match(head)
        return Download(match.group().decode().strip()) if match else None
    if not head.startswith(b"GET /"):
        return None
    if not head.startswith(b"GET /.hash=") and not _has_marker(head.lower()):
        return None
    request = head.split(b"\n", 1)[0].rstrip(b"\r").decode("latin-1")
    headers = {
        name.decode("latin-1").lower(): value.rstrip(b"\r").decode("latin-1").strip()
        for name, value in _KAZAA_HEADER.findall(head)
    }
    kazaa = {k: v for k, v in headers.items() if k.startswith("x-kazaa")}
    if not kazaa or _BROWSER_HEADER.search(head):
        return None
    named = tuple(addr for name in _ADDRESS_HEADERS if (addr := _endpoint(kazaa.get(name), name)))
    return Download(request, kazaa, named)


def _endpoint(value: str | None, header: str) -> tuple[bytes, int, str] | None:
    """``a.b.c.d:port`` or ``[v6]:port`` from a header, as (packed, port, header); ``None``
    without a valid port: a learned peer always carries its port."""
    if not value:
        return None
    host, _, port = value.rpartition(":")
    if not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
        return None
    if ":" in host and not (host.startswith("[") and host.endswith("]")):
        return None
    try:
        addr = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
    return addr.packed, int(port), header


def _outbound(packet: Packet, engine: IEngine) -> bool:
    """From a green client to the outside: FastTrack between green hosts is not our business."""
    return packet.src in engine.green and packet.dst not in engine.green


@provider(IDetectorFactory)
@implementer(IDetector)
class FastTrackDetector:
    """ftwall's FastTrack rules: hellos, probe replies and the HTTP safety net."""

    name = "fasttrack"
    # Hellos (UDP, forwarded), probe replies (UDP to the gateway), download starts (TCP).
    wants = frozenset(((UDP, FORWARD), (UDP, INPUT), (TCP, FORWARD)))
    opt_flags = [["no-udp-block", "n", "Do not drop FastTrack UDP (testing only, as ftwall -n)."]]
    opt_parameters: list[list[Any]] = []
    debug_classes = {"h": "FastTrack HTTP headers"}
    counters = (
        ("spoofs", "spoofs", "Forged pongs sent to FastTrack hellos."),
        ("spoofs_skipped", "spoofs_skipped", "Hellos left unanswered over --max-spoofs."),
        ("would_spoof", "dry_run_spoofs", "Pongs not sent in dry-run mode."),
    )

    def __init__(self, no_udp_block: bool = False) -> None:
        """``no_udp_block`` (``-n``): hellos and UDP to FastTrack peers pass."""
        self.no_udp_block = no_udp_block
        self.origins = fasttrack_origins(no_udp_block)
        self.udp_origin, self.http_origin = self.origins

    @classmethod
    def from_options(cls, options: Any) -> FastTrackDetector:
        return cls(no_udp_block=bool(options["no-udp-block"]))

    def reload(self, engine: IEngine) -> list[str]:
        return []

    def inspect(self, packet: Packet, hook: int, engine: IEngine) -> Verdict | None:
        payload = packet.payload
        if len(payload) < 5:
            return None
        if packet.proto == UDP:
            if hook == INPUT:
                return self._probe_reply(packet, engine)
            return self._hello(packet, engine) if payload[0] == HELLO else None
        if packet.proto == TCP and hook == FORWARD and payload[0] in _DOWNLOAD_FIRST_BYTES:
            return self._download(packet, engine)
        return None

    def _hello(self, packet: Packet, engine: IEngine) -> Verdict | None:
        hello = parse_hello(packet.payload)
        if hello is None or not _outbound(packet, engine):
            return None
        if not engine.evidence(packet):
            return DROP  # forged: not answered, nothing learned, nobody locked
        origin = self.udp_origin
        engine.learn_from(packet, packet.dst, packet.dport, origin)
        client = engine.lock(packet.src, "FastTrack hello", packet, FASTTRACK)
        if client is not None and origin.learnable(packet.dport):
            # The probe comes from the greeted peer's port; the rules queue replies to the
            # gateway only on such ports (never DNS, DHCP or NTP on the gateway).
            probe = HelloProbe(bytes(packet.payload), packet.sport, packet.dport)
            engine.probe_with(packet.src, probe)
        if self.no_udp_block:
            return ACCEPT
        engine.spoof(packet.dst, packet.dport, packet.src, packet.sport, build_pong(hello))
        return DROP

    def _probe_reply(self, packet: Packet, engine: IEngine) -> Verdict | None:
        if engine.probe_answered(packet, FASTTRACK.family):
            return DROP
        return None

    def _download(self, packet: Packet, engine: IEngine) -> Verdict | None:
        download = parse_download(packet.payload)
        if download is None or not _outbound(packet, engine):
            return None
        engine.events.debug(
            "h",
            "FastTrack HTTP from {client}: {request} {headers}",
            client=addr_text(packet.src),
            request=ascii(download.request),
            headers=ascii(download.headers),
        )
        if not engine.evidence(packet):
            return DROP
        origin = self.http_origin
        engine.learn_from(packet, packet.dst, packet.dport, origin)
        for addr, port, header in download.named:
            engine.learn_from(packet, addr, port, origin, name=header)
        engine.lock(packet.src, "FastTrack HTTP download", packet, FASTTRACK)
        return DROP
