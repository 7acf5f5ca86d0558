"""The BitTorrent detector on the engine: identification by cleartext, the lock that covers
uTP, peers learned for the asking client only, the KRPC ping probe with its transaction id,
and the real packets of five clients (tests/data/bt-*.pcap, see PROVENANCE.md)."""

from __future__ import annotations

import ipaddress
import struct
from pathlib import Path

from scapy.layers.inet import IP
from scapy.utils import rdpcap
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from p2pwall.bencode import encode
from p2pwall.detectors.bittorrent import PROBE_PORT, BitTorrentDetector, PingProbe, candidate
from p2pwall.detectors.btwire import CONNECT_MAGIC, krpc_ping, parse_krpc
from p2pwall.neighbours import KernelNeighbours
from p2pwall.packet import ACCEPT, DROP, TCP, UDP, Hook, Packet, Verdict, decode
from p2pwall.tables import ANY_CLIENT
from p2pwall.testing import make_engine, packed, tcp, udp

DATA = Path(__file__).resolve().parents[1] / "data"
CLIENT = "198.18.1.10"
USER = "198.18.1.20"
GATEWAY = "198.18.1.1"
NODE = "198.19.0.21"
TRACKER = "198.19.0.2"
PEER = "198.19.0.11"
DHT_PORT = 6881
MAC_CLIENT = b"\x02\x00\x00\x00\x00\x0a"
MAC_USER = b"\x02\x00\x00\x00\x00\x14"
GET_PEERS = encode(
    {b"a": {b"id": b"n" * 20, b"info_hash": b"i" * 20}, b"q": b"get_peers", b"t": b"gp",
     b"y": b"q"}
)  # fmt: skip
ANNOUNCE = (
    b"GET /announce?info_hash=%11%14%99&peer_id=-qB4520-abcdefghijkl&port=8999&uploaded=0 "
    b"HTTP/1.1\r\nHost: 198.19.0.2:6969\r\nUser-Agent: qBittorrent/4.5.2\r\n"
    b"Accept-Encoding: gzip\r\nConnection: close\r\n\r\n"
)
BROWSER_ANNOUNCE = (
    b"GET /announce?info_hash=%11%14%99&peer_id=-qB4520-abcdefghijkl&port=8999 HTTP/1.1\r\n"
    b"Host: 198.19.0.2:6969\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64)\r\n"
    b"Accept: image/avif,image/webp,*/*\r\nAccept-Language: en-US,en;q=0.5\r\n"
    b"Accept-Encoding: gzip, deflate\r\n\r\n"
)


def compact(*peers: tuple[str, int]) -> bytes:
    return b"".join(ipaddress.ip_address(a).packed + struct.pack("!H", p) for a, p in peers)


def values_reply(txid: bytes, *peers: tuple[str, int]) -> bytes:
    values = [compact(peer) for peer in peers]
    return encode({b"r": {b"id": b"m" * 20, b"values": values}, b"t": txid, b"y": b"r"})


def tracker_reply(*peers: tuple[str, int]) -> bytes:
    body = encode({b"interval": 1800, b"peers": compact(*peers)})
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


class DetectorCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.engine = make_engine(self.clock, detectors=[BitTorrentDetector()])

    def send(self, data: bytes, hook: Hook = Hook.FORWARD, mac: bytes | None = None) -> Verdict:
        packet = decode(data)
        assert packet is not None
        packet.mac = mac
        return self.engine.verdict(packet, hook)

    def client(self, addr: str = CLIENT):
        return self.engine.clients.get(packed(addr))

    def locked(self, addr: str = CLIENT) -> bool:
        return self.engine.clients.is_locked(packed(addr), self.clock.seconds())

    def reason(self, addr: str = CLIENT) -> str:
        client = self.client(addr)
        assert client is not None and client.renewed is not None
        return client.renewed[2]

    def dht_query(self, src: str = CLIENT, sport: int = DHT_PORT) -> Verdict:
        return self.send(udp(src, NODE, sport, DHT_PORT, GET_PEERS))


class IdentificationTests(DetectorCase):
    def test_a_dht_query_locks_the_client_and_is_dropped_by_the_lock(self) -> None:
        self.assertEqual(self.dht_query(), DROP)
        self.assertTrue(self.locked())
        self.assertEqual(self.reason(), "BitTorrent DHT message")
        self.assertEqual(self.engine.reasons[("drop_udp", "time lock")], 1)
        self.assertEqual(self.engine.events.of("c"), [f"client {CLIENT} identified: "
                                                      "BitTorrent DHT message"])  # fmt: skip

    def test_dht_messages_in_any_key_order(self) -> None:
        reply_first_ip = b"d2:ip6:" + compact((NODE, 6881)) + b"1:rd2:id20:" + b"r" * 20 + \
            b"e1:t2:aa1:y1:re"  # fmt: skip
        self.send(udp(CLIENT, NODE, DHT_PORT, DHT_PORT, reply_first_ip))
        self.assertTrue(self.locked())

    def test_udp_tracker_connect_locks_the_client(self) -> None:
        connect = struct.pack("!QII", CONNECT_MAGIC, 0, 77)
        self.assertEqual(self.send(udp(CLIENT, TRACKER, 40000, 6969, connect)), DROP)
        self.assertEqual(self.reason(), "BitTorrent UDP tracker request")

    def test_http_announce_locks_the_client_and_is_dropped(self) -> None:
        data = tcp(CLIENT, TRACKER, 40000, 6969, "PA", ANNOUNCE)
        self.assertEqual(self.send(data), DROP)
        self.assertEqual(self.reason(), "BitTorrent tracker announce")

    def test_an_announce_url_a_browser_fetches_identifies_nobody(self) -> None:
        data = tcp(USER, TRACKER, 40000, 6969, "PA", BROWSER_ANNOUNCE)
        self.assertEqual(self.send(data), ACCEPT)
        self.assertFalse(self.locked(USER))
        self.assertEqual(self.engine.stats["bittorrent_browser"], 1)

    def test_a_plain_handshake_locks_and_its_peer_is_learned_for_the_client(self) -> None:
        handshake = b"\x13BitTorrent protocol" + bytes(8) + b"i" * 20 + b"-lt0D80-" + b"x" * 12
        self.assertEqual(self.send(tcp(CLIENT, PEER, 40000, 6881, "PA", handshake)), DROP)
        self.assertEqual(self.reason(), "BitTorrent handshake")
        self.assertIn((packed(PEER), 6881, packed(CLIENT)), self.engine.blocks)
        self.assertNotIn((packed(PEER), 6881, ANY_CLIENT), self.engine.blocks)

    def test_a_utp_syn_counts_only_from_the_port_that_spoke_dht(self) -> None:
        syn = bytes((0x41, 0)) + bytes(18)
        self.send(udp(CLIENT, PEER, 50000, 6881, syn))
        self.assertFalse(self.locked(), "a uTP SYN alone identifies nobody")
        self.dht_query()
        self.send(udp(CLIENT, PEER, DHT_PORT, 6882, syn))
        self.assertEqual(self.reason(), "BitTorrent uTP connection")

    def test_bittorrent_between_green_hosts_is_not_the_gateways_business(self) -> None:
        self.send(udp(CLIENT, USER, DHT_PORT, DHT_PORT, GET_PEERS))
        self.assertFalse(self.locked())

    def test_ordinary_traffic_is_no_signal(self) -> None:
        self.send(tcp(USER, TRACKER, 40000, 80, "PA", b"GET /index.html HTTP/1.1\r\n\r\n"))
        self.send(udp(USER, NODE, 40000, 443, b"d" + bytes(40)))  # QUIC-sized, starts with d
        self.send(udp(USER, NODE, 40001, 5060, bytes((0x41,)) + bytes(30)))
        self.assertEqual(len(self.engine.clients), 0)

    def test_a_forged_source_address_locks_nobody(self) -> None:
        table = {packed(CLIENT): MAC_CLIENT, packed(USER): MAC_USER}
        self.engine.neighbours = KernelNeighbours(self.clock, read=lambda: dict(table))
        self.send(udp(USER, NODE, DHT_PORT, DHT_PORT, GET_PEERS), mac=MAC_CLIENT)
        self.assertFalse(self.locked(USER))
        self.assertEqual(self.engine.stats["forged_source"], 1)


class CandidateTests(SynchronousTestCase):
    """The first-bytes test most packets stop at: it lets every signal and reply through."""

    def test_signals_and_replies_pass(self) -> None:
        connect = struct.pack("!QII", CONNECT_MAGIC, 0, 77)
        announce = struct.pack("!QII", 12345, 1, 77) + bytes(86)
        reply = struct.pack("!IIIII", 1, 77, 1800, 0, 1) + compact((PEER, 6881))
        for proto, payload in (
            (UDP, GET_PEERS), (UDP, connect), (UDP, announce), (UDP, reply),
            (UDP, bytes((0x41, 0)) + bytes(18)), (TCP, ANNOUNCE), (TCP, tracker_reply()),
            (TCP, b"\x13BitTorrent protocol" + bytes(48)),
        ):  # fmt: skip
            self.assertTrue(candidate(proto, payload), payload[:20])

    def test_ordinary_payloads_stop_at_the_first_bytes(self) -> None:
        for proto, payload in (
            (UDP, bytes(64)), (UDP, b"\x17\xfe\xfd" + bytes(61)),
            (TCP, b"\x16\x03\x01" + bytes(60)),
            (TCP, b"GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n"),
        ):  # fmt: skip
            self.assertFalse(candidate(proto, payload), payload[:20])


class LockTests(DetectorCase):
    def test_the_lock_covers_new_udp_flows_and_tcp_but_not_dns(self) -> None:
        self.dht_query()
        self.assertEqual(self.send(udp(CLIENT, PEER, 50001, 51413, b"\x01" * 20)), DROP)
        self.assertEqual(self.send(tcp(CLIENT, PEER, 50002, 51413)), DROP)
        self.assertEqual(self.send(udp(CLIENT, "198.19.0.53", 50003, 53, b"\x00" * 20)), ACCEPT)
        self.assertEqual(self.send(udp(USER, PEER, 50004, 51413, b"\x01" * 20)), ACCEPT)

    def test_every_further_signal_restarts_the_lock(self) -> None:
        self.dht_query()
        self.clock.advance(100)
        self.dht_query()
        self.clock.advance(100)
        self.assertTrue(self.locked())
        self.clock.advance(21)
        self.assertFalse(self.locked())

    def test_the_lock_ends_when_the_client_goes_quiet(self) -> None:
        self.dht_query()
        self.clock.advance(121)
        self.engine.tick()
        self.assertIsNone(self.client())
        self.assertEqual(self.send(tcp(CLIENT, PEER, 50002, 80)), ACCEPT)


class ReplyTests(DetectorCase):
    def reply(self, data: bytes) -> Verdict:
        return self.send(data)

    def test_dht_values_are_learned_for_the_asking_client_alone(self) -> None:
        self.dht_query()
        reply = values_reply(b"gp", (PEER, 6881), ("198.19.0.12", 51413), ("198.19.0.13", 443))
        self.assertEqual(self.reply(udp(NODE, CLIENT, DHT_PORT, DHT_PORT, reply)), ACCEPT)
        blocks = {key for key, _ in self.engine.blocks.items()}
        self.assertEqual(
            blocks,
            {(packed(PEER), 6881, packed(CLIENT)), (packed("198.19.0.12"), 51413, packed(CLIENT))},
            "port 443 is a well-known service: never learned",
        )

    def test_the_same_peers_sent_to_two_clients_block_nothing_for_anyone_else(self) -> None:
        for host in (CLIENT, USER):
            self.dht_query(host)
            self.reply(udp(NODE, host, DHT_PORT, DHT_PORT, values_reply(b"gp", (PEER, 6881))))
        self.assertNotIn((packed(PEER), 6881, ANY_CLIENT), self.engine.blocks)
        self.assertEqual(self.send(tcp("198.18.1.30", PEER, 40000, 6881)), ACCEPT)

    def test_a_reply_that_came_in_on_a_green_interface_teaches_nothing(self) -> None:
        self.dht_query()
        self.engine.green_ifindexes = frozenset({3})
        packet = decode(udp(NODE, CLIENT, DHT_PORT, DHT_PORT, values_reply(b"gp", (PEER, 6881))))
        assert packet is not None
        packet.indev = 3
        self.engine.verdict(packet, Hook.FORWARD)
        self.assertEqual(len(self.engine.blocks), 0)

    def test_replies_to_a_host_that_is_no_client_teach_nothing(self) -> None:
        reply = values_reply(b"gp", (PEER, 6881))
        self.reply(udp(NODE, USER, DHT_PORT, DHT_PORT, reply))
        self.reply(tcp(TRACKER, USER, 6969, 40000, "PA", tracker_reply((PEER, 6881))))
        self.assertEqual(len(self.engine.blocks), 0)

    def test_http_and_udp_tracker_replies_teach_peers(self) -> None:
        self.dht_query()
        self.reply(tcp(TRACKER, CLIENT, 6969, 40000, "PA", tracker_reply((PEER, 6881))))
        udp_reply = struct.pack("!IIIII", 1, 77, 1800, 0, 1) + compact(("198.19.0.13", 6882))
        self.reply(udp(TRACKER, CLIENT, 6969, 40001, udp_reply))
        origins = {key[0]: block.origin for key, block in self.engine.blocks.items()}
        self.assertEqual(
            origins,
            {packed(PEER): "bittorrent-tracker", packed("198.19.0.13"): "bittorrent-tracker"},
        )

    def test_trying_a_learned_peer_restarts_the_lock(self) -> None:
        self.dht_query()
        self.reply(udp(NODE, CLIENT, DHT_PORT, DHT_PORT, values_reply(b"gp", (PEER, 6881))))
        self.clock.advance(110)
        self.assertEqual(self.send(tcp(CLIENT, PEER, 40000, 6881)), DROP)
        self.assertEqual(self.reason(), "tried a BitTorrent peer")
        self.clock.advance(100)
        self.assertTrue(self.locked())

    def test_replies_over_the_budget_are_not_parsed(self) -> None:
        self.engine = make_engine(self.clock, detectors=[BitTorrentDetector(budget=100)])
        self.dht_query()
        reply = values_reply(b"gp", (PEER, 6881))
        for port in range(30):
            self.reply(udp(NODE, CLIENT, DHT_PORT + 1 + port, DHT_PORT, reply))
        self.assertGreater(self.engine.stats["bittorrent_over_budget"], 0)
        self.assertLess(self.engine.stats["bittorrent_replies"], 30)


class ProbeTests(DetectorCase):
    def probe(self) -> bytes:
        """The ping the tick at half the lock sends; checks where it goes."""
        self.clock.advance(60)
        self.engine.tick()
        (sent,) = self.engine.spoofer.sent
        src, sport, dst, dport, payload = sent
        self.assertEqual((src, sport, dst, dport), (None, PROBE_PORT, packed(CLIENT), DHT_PORT))
        return payload

    def answer(self, txid: bytes) -> Verdict:
        pong = encode({b"r": {b"id": b"c" * 20}, b"t": txid, b"y": b"r"})
        return self.send(udp(CLIENT, GATEWAY, DHT_PORT, PROBE_PORT, pong), Hook.INPUT)

    def test_a_krpc_ping_at_half_the_lock_and_its_answer_restarts_the_lock(self) -> None:
        self.dht_query()
        ping = parse_krpc(self.probe())
        assert ping is not None
        self.assertEqual((ping.kind, ping.query), (b"q", b"ping"))
        self.assertEqual(self.answer(ping.txid), DROP)
        self.assertEqual(self.reason(), "answered a probe")
        self.assertEqual(self.client().probes_answered, 1)

    def test_an_answer_with_another_transaction_id_is_no_answer(self) -> None:
        self.dht_query()
        ping = parse_krpc(self.probe())
        assert ping is not None
        self.assertEqual(self.answer(bytes(b ^ 0xFF for b in ping.txid)), ACCEPT)
        self.assertEqual(self.client().probes_answered, 0)
        self.clock.advance(61)
        self.engine.tick()
        self.assertFalse(self.locked())

    def test_each_probe_has_a_new_transaction_id(self) -> None:
        probe = PingProbe(DHT_PORT)
        ids = {parse_krpc(probe.payload()).txid for _ in range(50)}  # type: ignore[union-attr]
        self.assertGreater(len(ids), 40)
        self.assertEqual(krpc_ping(probe.txid, probe.node_id)[:1], b"d")


def capture_packets(name: str) -> list[Packet]:
    packets = []
    for frame in rdpcap(str(DATA / f"bt-{name}.pcap")):
        packet = decode(bytes(frame[IP]))
        if packet is not None:
            packets.append(packet)
    return packets


class RealClientTests(SynchronousTestCase):
    """Each client's real packets, in order: identified at its first cleartext packet (so
    within the issue's 2 s, at any lab timing), and the peers its replies name are learned
    for it alone."""

    def check(self, name: str) -> None:
        clock = Clock()
        engine = make_engine(clock, detectors=[BitTorrentDetector()])
        packets = capture_packets(name)
        first = next(i for i, p in enumerate(packets) if p.src == packed(CLIENT))
        for index, packet in enumerate(packets):
            engine.verdict(packet, Hook.FORWARD)
            if index == first:
                self.assertTrue(engine.clients.is_locked(packed(CLIENT), 0.0), name)
        learned = {key for key, _ in engine.blocks.items()}
        self.assertTrue(learned, f"{name}: no peer learned from its replies")
        self.assertEqual({key[2] for key in learned}, {packed(CLIENT)})

    def test_libtorrent(self) -> None:
        self.check("libtorrent")

    def test_qbittorrent(self) -> None:
        self.check("qbittorrent")

    def test_aria2(self) -> None:
        self.check("aria2")

    def test_transmission(self) -> None:
        self.check("transmission")

    def test_rtorrent(self) -> None:
        self.check("rtorrent")
