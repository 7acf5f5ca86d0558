"""BitTorrent, encrypted included: ftwall's strategy carried over.

A client that requires encryption hides its peer connections, but not what it cannot encrypt:
DHT KRPC messages (BEP 5), UDP tracker requests (BEP 15), HTTP tracker announces (BEP 3), and,
from clients that allow plain connections, the handshake. The first of them from a green host
identifies it as a BitTorrent client and time-locks it; every further one restarts the lock. A
lock for BitTorrent covers new TCP connections and new UDP flows (uTP), DNS excepted
(``origins.Protocol.locks_udp``). Peers named in the cleartext replies the client receives (DHT
``values``/``values6``, tracker ``peers``/``peers6``) are learned for that client alone: the
replies come from untrusted hosts, so they never block anything for anyone else, and never a
well-known service port. A running client is probed at half the lock with a KRPC ``ping`` to
its DHT port; only a reply with the ping's transaction id restarts the lock.

Limits: a client with DHT off that reaches its tracker over HTTPS only sends nothing cleartext
and is not recognised; a client without DHT is not probed (its lock runs out unless it
announces again). Wire facts: docs/protocols.md section 5.
"""

from __future__ import annotations

import os
import re
from typing import Any

from zope.interface import implementer, provider

from ..budget import TokenBuckets
from ..interfaces import IDetector, IDetectorFactory, IEngine, IProbe
from ..origins import Origin, Protocol
from ..packet import DROP, FORWARD, INPUT, TCP, UDP, Packet, Verdict, addr_text
from . import btwire

BITTORRENT = Protocol("BitTorrent", "bittorrent", locks_udp=True)
DHT_ORIGIN = Origin("bittorrent-dht", BITTORRENT, locks=True)
TRACKER_ORIGIN = Origin("bittorrent-tracker", BITTORRENT, locks=True)
PEER_ORIGIN = Origin("bittorrent-peer", BITTORRENT, locks=True)

# The gateway's UDP port the KRPC ping probes come from; the rules queue replies to it.
PROBE_PORT = 6881
_TXID_BYTES = 2
_NODE_ID_BYTES = 20
# Bytes of KRPC and tracker messages a second one green host's traffic may have parsed: a
# hostile 4 KiB KRPC datagram costs ~0.2 ms, a 1,460-byte tracker reply segment ~0.5 ms
# (bench/bencode.py); real clients parse a few KB a second.
BUDGET = 64_000
_BURST_SECONDS = 4
_KRPC_FIRST = ord("d")
# The shortest signal: a UDP tracker connect request (16 bytes).
_MIN_SIGNAL = 16
_TRACKER_REPLY = b"HTTP/1."
_ANNOUNCE_START = b"GET /"
_INFO_HASH = b"info_hash="
_HANDSHAKE_FIRST = 0x13
_UDP_FIRST = frozenset((_KRPC_FIRST, 0x41))  # KRPC's dict, uTP's ST_SYN version 1
_ANNOUNCE_REPLY = b"\0\0\0\1"
# Headers every browser adds and no BitTorrent client sends: an announce URL in a web page
# (``<img src=...>``) makes a browser send the request, which must identify nobody.
_BROWSER = re.compile(
    rb"^(accept-language|sec-fetch-[a-z]+|origin|referer):|^user-agent:[ \t]*mozilla/",
    re.I | re.M,
)
_HEADERS_PEEK = 2048


@implementer(IProbe)
class PingProbe:
    """A KRPC ``ping`` to the client's DHT port; each probe has a new transaction id, and only
    a KRPC response echoing it, sent to the probe's port, is the answer."""

    protocol = BITTORRENT
    source_port = PROBE_PORT

    def __init__(self, port: int) -> None:
        self.port = port
        self.node_id = os.urandom(_NODE_ID_BYTES)
        self.txid = b""

    def payload(self) -> bytes:
        self.txid = os.urandom(_TXID_BYTES)
        return btwire.krpc_ping(self.txid, self.node_id)

    def answers(self, packet: Packet) -> bool:
        if packet.dport != self.source_port or not self.txid:
            return False
        reply = btwire.parse_krpc(packet.payload)
        return reply is not None and reply.kind == b"r" and reply.txid == self.txid


def candidate(proto: int, payload: bytes | memoryview) -> bool:
    """Whether a payload (at least ``_MIN_SIGNAL`` bytes) may be anything the detector reads,
    by its first bytes alone: most packets cost this test and nothing else (bench/engine.py)."""
    first = payload[0]
    if proto == UDP:
        if first in _UDP_FIRST or payload[:4] == _ANNOUNCE_REPLY:
            return True  # KRPC, uTP SYN, UDP tracker announce reply
        action = payload[8:12]  # UDP tracker requests: connect (16 bytes), announce, scrape
        return action[:3] == b"\0\0\0" and (action[3] in (1, 2) or len(payload) == 16)
    if first == _HANDSHAKE_FIRST or payload[:7] == _TRACKER_REPLY:
        return True
    return payload[:5] == _ANNOUNCE_START and _INFO_HASH in payload[:_HEADERS_PEEK]


def browser_request(payload: bytes | memoryview) -> bool:
    """Whether an HTTP request's headers show a browser sent it."""
    return _BROWSER.search(bytes(payload[:_HEADERS_PEEK])) is not None


@provider(IDetectorFactory)
@implementer(IDetector)
class BitTorrentDetector:
    """Identifies BitTorrent clients by their cleartext, learns their peers from cleartext
    replies, locks and probes them."""

    name = "bittorrent"
    # From green: KRPC, UDP tracker requests, uTP SYNs, announces, handshakes; from outside:
    # DHT and tracker replies (the rules queue the first of each flow); to the gateway: the
    # probes' replies.
    wants = frozenset(((UDP, FORWARD), (UDP, INPUT), (TCP, FORWARD)))
    origins = (DHT_ORIGIN, TRACKER_ORIGIN, PEER_ORIGIN)
    opt_flags: list[list[Any]] = []
    opt_parameters: list[list[Any]] = []
    debug_classes = {"b": "BitTorrent signals and replies"}
    counters = (
        ("bittorrent_signals", "bittorrent_signals", "Cleartext BitTorrent packets from green."),
        ("bittorrent_replies", "bittorrent_replies", "DHT and tracker replies read for peers."),
        ("bittorrent_browser", "bittorrent_browser", "Announce URLs a browser fetched (ignored)."),
        ("bittorrent_over_budget", "bittorrent_over_budget", "BitTorrent messages not parsed "
         "over the per-host budget."),
    )  # fmt: skip

    def __init__(self, budget: float = BUDGET) -> None:
        self._budget = TokenBuckets(budget, budget * _BURST_SECONDS)

    @classmethod
    def from_options(cls, options: Any) -> BitTorrentDetector:
        return cls()

    def reload(self, engine: IEngine) -> list[str]:
        return []

    def inspect(self, packet: Packet, hook: int, engine: IEngine) -> Verdict | None:
        payload = packet.payload
        if len(payload) < _MIN_SIGNAL or not candidate(packet.proto, payload):
            return None
        green = engine.green
        if packet.src in green:
            if hook == INPUT:
                return self._probe_reply(packet, engine) if packet.proto == UDP else None
            if packet.dst in green:
                return None  # BitTorrent between green hosts is not the gateway's business
            if packet.proto == UDP:
                return self._udp_signal(packet, engine)
            return self._tcp_signal(packet, engine)
        if hook == FORWARD and packet.dst in green:
            self._reply(packet, engine)
        return None

    # From green: what identifies a client.

    def _udp_signal(self, packet: Packet, engine: IEngine) -> Verdict | None:
        payload = packet.payload
        if payload[0] == _KRPC_FIRST:
            if not self._affordable(packet.src, len(payload), engine):
                return None
            message = btwire.parse_krpc(payload)
            if message is None:
                return None
            self._signal(packet, "BitTorrent DHT message", engine, dht=True)
            return None
        request = btwire.parse_udp_tracker_request(payload)
        if request is not None:
            self._signal(packet, "BitTorrent UDP tracker request", engine)
            return None
        if btwire.is_utp_syn(payload) and self._dht_port(packet, engine):
            self._signal(packet, "BitTorrent uTP connection", engine)
        return None

    def _tcp_signal(self, packet: Packet, engine: IEngine) -> Verdict | None:
        payload = packet.payload
        if btwire.is_handshake(payload):
            engine.learn_from(packet, packet.dst, packet.dport, PEER_ORIGIN)
            self._signal(packet, "BitTorrent handshake", engine)
            return DROP
        if payload[:5] == _ANNOUNCE_START:
            announce = btwire.parse_announce(payload)
            if announce is None:
                return None
            if browser_request(payload):
                engine.count("bittorrent_browser")
                return None
            self._signal(packet, "BitTorrent tracker announce", engine)
            return DROP
        return None

    def _signal(self, packet: Packet, reason: str, engine: IEngine, dht: bool = False) -> None:
        """Lock the sender (which checks the packet's MAC); a DHT message also names the
        port its probes go to."""
        engine.count("bittorrent_signals")
        engine.events.debug(
            "b",
            "{reason} from {client} to {peer}",
            reason=reason,
            client=addr_text(packet.src),
            peer=addr_text(packet.dst),
        )
        client = engine.lock(packet.src, reason, packet, BITTORRENT)
        if client is not None and dht and self._dht_port(packet, engine) != packet.sport:
            engine.probe_with(packet.src, PingProbe(packet.sport))

    @staticmethod
    def _dht_port(packet: Packet, engine: IEngine) -> int:
        """The port the sender's DHT speaks from, once known (0 before)."""
        probe = engine.probe_of(packet.src, BITTORRENT.family)
        return probe.port if probe is not None else 0

    # To the gateway: the probe's answer.

    def _probe_reply(self, packet: Packet, engine: IEngine) -> Verdict | None:
        if packet.dport != PROBE_PORT or packet.payload[0] != _KRPC_FIRST:
            return None
        if engine.probe_answered(packet, BITTORRENT.family):
            return DROP
        return None

    # From outside, to green: the replies that name peers.

    def _reply(self, packet: Packet, engine: IEngine) -> None:
        """Learn the peers a reply to a locked client names. The rules queue only the first
        replies of flows green opened, from outside; the input interface is checked again."""
        client = packet.dst
        if packet.indev in engine.green_ifindexes:
            return
        if not engine.is_locked_for(client, BITTORRENT.name):
            return  # only a known client's replies are read: nobody else's traffic costs
        payload = packet.payload
        if not self._affordable(client, len(payload), engine):
            return
        if packet.proto == UDP:
            if payload[0] == _KRPC_FIRST:
                message = btwire.parse_krpc(payload)
                peers = message.values if message is not None else ()
                origin = DHT_ORIGIN
            else:
                peers = btwire.parse_udp_tracker_reply(payload, len(client) == 16) or ()
                origin = TRACKER_ORIGIN
        elif payload[:7] == _TRACKER_REPLY:
            peers = btwire.parse_tracker_reply(payload) or ()
            origin = TRACKER_ORIGIN
        else:
            return
        if not peers:
            return
        engine.count("bittorrent_replies")
        learned = sum(engine.learn_for(client, peer, port, origin) for peer, port in peers)
        engine.events.debug(
            "b",
            "{origin} reply from {server} to {client}: {count} peers, {learned} new",
            origin=origin.name,
            server=addr_text(packet.src),
            client=addr_text(client),
            count=len(peers),
            learned=learned,
        )

    def _affordable(self, host: bytes, size: int, engine: IEngine) -> bool:
        """Charge parsing ``size`` bytes to ``host``'s budget; counted when refused."""
        if self._budget.charge(host, size, engine.clock.seconds()):
            return True
        engine.count("bittorrent_over_budget")
        return False
