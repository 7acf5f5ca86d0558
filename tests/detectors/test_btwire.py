"""BitTorrent wire parsers: BEP examples and packets built here, real packets of five clients
(tests/data/bt-*.pcap, see PROVENANCE.md), and hostile input that must never raise."""

from __future__ import annotations

import ipaddress
import random
import struct
from dataclasses import dataclass
from pathlib import Path

from scapy.layers.inet import IP, TCP, UDP
from scapy.utils import rdpcap
from twisted.trial.unittest import SynchronousTestCase

from p2pwall.bencode import encode
from p2pwall.detectors.btwire import (
    CONNECT_MAGIC,
    MAX_KRPC,
    MAX_PEERS,
    Announce,
    Krpc,
    UdpTrackerRequest,
    is_handshake,
    is_utp_syn,
    krpc_ping,
    parse_announce,
    parse_krpc,
    parse_tracker_reply,
    parse_udp_tracker_reply,
    parse_udp_tracker_request,
)

DATA = Path(__file__).resolve().parents[1] / "data"
CLIENT = "198.18.1.10"
TRACKER = ("198.19.0.2", 6969)
SEEDERS = {("198.19.0.11", 6881), ("198.19.0.12", 51413), ("198.19.0.13", 6881)}
INFO_HASH = bytes.fromhex("11149960113f7ea0b518330e220a76a819f259ac")
NODE_ID = b"abcdefghij0123456789"

# BEP 5's examples, byte for byte.
PING_QUERY = b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe"
GET_PEERS_VALUES = (
    b"d1:rd2:id20:abcdefghij01234567895:token8:aoeusnth6:valuesl6:axje.u6:idhtnmee1:t2:aa1:y1:re"
)
ANNOUNCE_PEER = (
    b"d1:ad2:id20:abcdefghij012345678912:implied_porti1e9:info_hash20:mnopqrstuvwxyz123456"
    b"4:porti6881e5:token8:aoeusnthe1:q13:announce_peer1:t2:aa1:y1:qe"
)
ERROR = b"d1:eli201e23:A Generic Error Ocurrede1:t2:aa1:y1:ee"


def v4(text: str, port: int) -> tuple[bytes, int]:
    return ipaddress.ip_address(text).packed, port


def compact(*peers: tuple[str, int]) -> bytes:
    return b"".join(ipaddress.ip_address(a).packed + struct.pack("!H", p) for a, p in peers)


def as_text(peers) -> set[tuple[str, int]]:
    return {(str(ipaddress.ip_address(addr)), port) for addr, port in peers}


def http_reply(body: bytes, headers: bytes | None = None, status: bytes = b"200 OK") -> bytes:
    if headers is None:
        headers = b"Content-Type: text/plain\r\nContent-Length: %d\r\n" % len(body)
    return b"HTTP/1.1 " + status + b"\r\n" + headers + b"\r\n" + body


class KrpcTests(SynchronousTestCase):
    def test_bep5_ping(self) -> None:
        self.assertEqual(parse_krpc(PING_QUERY), Krpc(b"q", b"aa", b"ping", 0, ()))

    def test_bep5_get_peers_reply_values(self) -> None:
        self.assertEqual(
            parse_krpc(GET_PEERS_VALUES),
            Krpc(b"r", b"aa", None, 0, ((b"axje", 0x2E75), (b"idht", 0x6E6D))),
        )

    def test_bep5_announce_peer_port_and_implied_port(self) -> None:
        message = parse_krpc(ANNOUNCE_PEER)
        self.assertEqual(
            (message.query, message.port, message.implied_port), (b"announce_peer", 6881, True)
        )

    def test_bep5_error(self) -> None:
        self.assertEqual(parse_krpc(ERROR), Krpc(b"e", b"aa", None, 0, ()))

    def test_keys_in_any_order_and_a_reply_starting_with_ip(self) -> None:
        unsorted = b"d1:y1:q1:q4:ping1:t2:aa1:ad2:id20:abcdefghij0123456789ee"
        self.assertEqual(parse_krpc(unsorted), parse_krpc(PING_QUERY))
        bep42 = encode(
            {"ip": compact(("198.18.1.10", 6881)), "r": {"id": NODE_ID}, "t": b"xy", "y": "r"}
        )
        self.assertTrue(bep42.startswith(b"d2:ip"))
        self.assertEqual(parse_krpc(bep42), Krpc(b"r", b"xy", None, 0, ()))

    def test_version_key(self) -> None:
        message = encode(
            {"a": {"id": NODE_ID}, "q": "ping", "t": b"pn", "v": b"LT\x02\x08", "y": "q"}
        )
        self.assertEqual(parse_krpc(message).version, b"LT\x02\x08")

    def test_announce_peer_without_a_valid_port(self) -> None:
        for port in (0, 65536, -1, b"6881"):
            message = encode(
                {"a": {"id": NODE_ID, "port": port}, "q": "announce_peer", "t": b"a", "y": "q"}
            )
            self.assertEqual(parse_krpc(message).port, 0, port)
        other = encode({"a": {"id": NODE_ID, "port": 6881}, "q": "get_peers", "t": b"a", "y": "q"})
        self.assertEqual(parse_krpc(other).port, 0)

    def test_values_ipv4_ipv6_malformed_and_port_zero(self) -> None:
        v6 = ipaddress.ip_address("2001:2::5").packed
        reply = {
            "r": {
                "id": NODE_ID,
                "values": [
                    compact(("198.19.0.11", 6881)),
                    compact(("198.19.0.12", 0)),
                    v6 + b"\x1a\xe1",
                    b"12345",
                    compact(("198.19.0.13", 6881), ("198.19.0.14", 6881)),
                    7,
                ],
                "values6": [v6 + b"\xc8\xd5"],
            },
            "t": b"gp",
            "y": "r",
        }
        self.assertEqual(
            parse_krpc(encode(reply)).values,
            (v4("198.19.0.11", 6881), (v6, 6881), (v6, 51413)),
        )

    def test_values_are_bounded(self) -> None:
        values = [struct.pack("!IH", 0xC6130000 + i, 6881) for i in range(MAX_PEERS + 40)]
        reply = encode({"r": {"id": NODE_ID, "values": values}, "t": b"gp", "y": "r"})
        self.assertEqual(len(parse_krpc(reply).values), MAX_PEERS)

    def test_a_message_of_more_values_than_any_real_one_is_not_read(self) -> None:
        values = [struct.pack("!IH", 0xC6130000 + i, 6881) for i in range(300)]
        reply = encode({"r": {"id": NODE_ID, "values": values}, "t": b"gp", "y": "r"})
        self.assertLess(len(reply), MAX_KRPC)
        self.assertIsNone(parse_krpc(reply))

    def test_values_only_in_replies(self) -> None:
        query = encode(
            {
                "a": {"id": NODE_ID},
                "q": "ping",
                "r": {"values": [compact(("198.19.0.1", 1))]},
                "t": b"a",
                "y": "q",
            }
        )
        self.assertEqual(parse_krpc(query).values, ())

    def test_memoryview(self) -> None:
        self.assertEqual(parse_krpc(memoryview(GET_PEERS_VALUES)), parse_krpc(GET_PEERS_VALUES))

    def test_not_krpc(self) -> None:
        for data in (
            b"",
            b"d1:y1:qe",  # too short to be one
            PING_QUERY[:-1],
            PING_QUERY + b"e",
            b"l" + PING_QUERY[1:],
            b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:xe",  # y not q/r/e
            b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:ti1e1:y1:qe",  # t not a string
            b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:y1:qe",  # no t
            b"d1:q4:ping1:t2:aa1:y1:qe",  # a query without arguments
            b"d1:ad2:id20:abcdefghij0123456789e1:qi1e1:t2:aa1:y1:qe",  # q not a string
            b"d1:r4:spam1:t2:aa1:y1:re",  # r not a dict
            b"d1:e4:spam1:t2:aa1:y1:ee",  # e not a list
            b"d1:y1:q" + b"x" * 20 + b"e",
            b"d8:announce" + b"i1e" * 10 + b"e",
        ):
            self.assertIsNone(parse_krpc(data), data)

    def test_longer_than_any_real_message_is_not_read(self) -> None:
        padded = encode(
            {"a": {"id": NODE_ID, "pad": b"x" * MAX_KRPC}, "q": "ping", "t": b"a", "y": "q"}
        )
        self.assertIsNone(parse_krpc(padded))

    def test_krpc_ping_is_bep5s_example(self) -> None:
        self.assertEqual(krpc_ping(b"aa", NODE_ID), PING_QUERY)
        self.assertEqual(
            parse_krpc(krpc_ping(b"\x01\x02", NODE_ID)), Krpc(b"q", b"\x01\x02", b"ping", 0, ())
        )


def udp_announce(port: int, event: int = 2, extra: bytes = b"") -> bytes:
    return (
        struct.pack("!QII", 0x1122334455667788, 1, 77)
        + INFO_HASH
        + b"-XX0000-123456789012"
        + struct.pack("!QQQIIIiH", 0, 20971520, 0, event, 0, 9, -1, port)
        + extra
    )


class UdpTrackerTests(SynchronousTestCase):
    def test_connect(self) -> None:
        connect = struct.pack("!QII", CONNECT_MAGIC, 0, 0xDEADBEEF)
        self.assertEqual(parse_udp_tracker_request(connect), UdpTrackerRequest(0, 0xDEADBEEF, 0))
        self.assertIsNone(parse_udp_tracker_request(connect + b"\0"))
        self.assertIsNone(parse_udp_tracker_request(struct.pack("!QII", CONNECT_MAGIC + 1, 0, 1)))

    def test_announce(self) -> None:
        self.assertEqual(len(udp_announce(6881)), 98)
        self.assertEqual(
            parse_udp_tracker_request(udp_announce(6881)), UdpTrackerRequest(1, 77, 6881)
        )
        self.assertIsNone(parse_udp_tracker_request(udp_announce(6881)[:97]))
        self.assertIsNone(parse_udp_tracker_request(udp_announce(6881, event=4)))

    def test_announce_with_bep41_options(self) -> None:
        url = udp_announce(51413, extra=b"\x02\x09/announce")
        self.assertEqual(parse_udp_tracker_request(url), UdpTrackerRequest(1, 77, 51413))

    def test_scrape(self) -> None:
        head = struct.pack("!QII", 0x1122334455667788, 2, 5)
        self.assertEqual(
            parse_udp_tracker_request(head + INFO_HASH * 2), UdpTrackerRequest(2, 5, 0)
        )
        for bad in (head, head + INFO_HASH[:19], head + INFO_HASH + b"x"):
            self.assertIsNone(parse_udp_tracker_request(bad))

    def test_other_actions(self) -> None:
        for action in (3, 4, 0x01000000):
            self.assertIsNone(
                parse_udp_tracker_request(struct.pack("!QII", 1, action, 1) + b"\0" * 82)
            )
        self.assertIsNone(parse_udp_tracker_request(b"\0" * 15))

    def test_announce_reply(self) -> None:
        head = struct.pack("!IIIII", 1, 77, 1800, 1, 3)
        peers = compact(("198.19.0.11", 6881), ("198.19.0.12", 0), ("198.19.0.13", 51413))
        self.assertEqual(
            parse_udp_tracker_reply(head + peers, False),
            (v4("198.19.0.11", 6881), v4("198.19.0.13", 51413)),
        )
        self.assertEqual(parse_udp_tracker_reply(memoryview(head), False), ())
        self.assertIsNone(parse_udp_tracker_reply(head + peers + b"x", False))
        self.assertIsNone(parse_udp_tracker_reply(head + peers[:12], True))  # 18 bytes a peer

    def test_announce_reply_ipv6(self) -> None:
        head = struct.pack("!IIIII", 1, 77, 1800, 1, 3)
        peer = ipaddress.ip_address("2001:2::11").packed + struct.pack("!H", 6881)
        self.assertEqual(parse_udp_tracker_reply(head + peer * 2, True), ((peer[:16], 6881),) * 2)
        self.assertIsNone(parse_udp_tracker_reply(head + peer * 2 + b"\0" * 6, True))

    def test_announce_reply_bounded(self) -> None:
        head = struct.pack("!IIIII", 1, 77, 1800, 1, 3)
        many = b"".join(struct.pack("!IH", 0xC6130000 + i, 6881) for i in range(MAX_PEERS + 50))
        self.assertEqual(len(parse_udp_tracker_reply(head + many, False)), MAX_PEERS)

    def test_not_an_announce_reply(self) -> None:
        for data in (
            struct.pack("!IIQ", 0, 77, 12345),  # connect reply
            struct.pack("!II", 3, 77) + b"unknown torrent",  # error
            struct.pack("!IIIII", 2, 77, 1, 2, 3)[:20],  # scrape reply
            struct.pack("!IIII", 1, 77, 1800, 1),  # short
        ):
            self.assertIsNone(parse_udp_tracker_reply(data, False), data)


def http_announce(query: bytes, method: bytes = b"GET") -> bytes:
    return (
        method
        + b" /announce?"
        + query
        + b" HTTP/1.1\r\nHost: 198.19.0.2:6969\r\nUser-Agent: x\r\n\r\n"
    )


QUERY = (
    b"info_hash=%11%14%99%60%11%3F~%A0%B5%183%0E%22%0Av%A8%19%F2Y%AC&peer_id=-TR3000-hsk6ovwp9b0d"
)


class AnnounceTests(SynchronousTestCase):
    def test_announce(self) -> None:
        self.assertEqual(
            parse_announce(http_announce(QUERY + b"&port=51413&compact=1")),
            Announce(51413, "/announce", b"-TR3000-hsk6ovwp9b0d"),
        )

    def test_peer_id_percent_decoded(self) -> None:
        query = b"info_hash=x&peer_id=-lt0D80-%2F%B3%2B%AD%zz%4&port=6881"
        self.assertEqual(parse_announce(http_announce(query)).peer_id, b"-lt0D80-/\xb3+\xad%zz%4")

    def test_port_absent_or_invalid_is_zero(self) -> None:
        for query in (
            QUERY,
            QUERY + b"&port=",
            QUERY + b"&port=65536",
            QUERY + b"&port=-1",
            QUERY + b"&port=1e3",
            QUERY + b"&port=000006881",
        ):
            self.assertEqual(parse_announce(http_announce(query)).port, 0, query)

    def test_request_line_without_a_version(self) -> None:
        self.assertEqual(parse_announce(b"GET /announce?" + QUERY + b"&port=6881\r\n").port, 6881)

    def test_other_path(self) -> None:
        request = b"GET /a/b/announce.php?" + QUERY + b"&port=1 HTTP/1.0\r\n\r\n"
        self.assertEqual(
            parse_announce(request), Announce(1, "/a/b/announce.php", b"-TR3000-hsk6ovwp9b0d")
        )

    def test_not_an_announce(self) -> None:
        for request in (
            http_announce(QUERY, method=b"POST"),
            http_announce(b"info_hash=1"),
            http_announce(b"peer_id=1"),
            http_announce(b"xinfo_hash=1&xpeer_id=2"),
            b"GET / HTTP/1.1\r\nX: info_hash=1&peer_id=2\r\n\r\n",  # not in the request line
            b"GET /?" + b"a" * 2048 + b"&" + QUERY + b" HTTP/1.1\r\n\r\n",  # beyond the peek
            b"GET /",
        ):
            self.assertIsNone(parse_announce(request), request[:60])


class TrackerReplyTests(SynchronousTestCase):
    PEERS = (("198.19.0.11", 6881), ("198.19.0.12", 51413))

    def test_compact(self) -> None:
        body = encode(
            {"complete": 2, "interval": 1800, "peers": compact(*self.PEERS, ("198.19.0.13", 0))}
        )
        self.assertEqual(parse_tracker_reply(http_reply(body)), tuple(v4(*p) for p in self.PEERS))

    def test_dictionary_model(self) -> None:
        peers = [
            {"ip": "198.19.0.11", "peer id": b"-LT2080-" + b"x" * 12, "port": 6881},
            {"ip": "2001:2::12", "port": 51413},
            {"ip": "tracker.example", "port": 6881},  # a name: nothing resolved here
            {"ip": "198.19.0.13", "port": 0},
            {"ip": "198.19.0.14"},
            {"ip": "198.19.0.15", "port": b"6881"},
            {"ip": b"198.19.0.\xff", "port": 6881},
            {"ip": "1" * 46, "port": 6881},
            {"ip": "198.19.0.16\x00", "port": 6881},
            b"junk",
        ]
        reply = http_reply(encode({"interval": 1800, "peers": peers}))
        self.assertEqual(
            as_text(parse_tracker_reply(reply)), {("198.19.0.11", 6881), ("2001:2::12", 51413)}
        )

    def test_peers6(self) -> None:
        v6 = ipaddress.ip_address("2001:2::11").packed
        body = encode({"interval": 1800, "peers": b"", "peers6": v6 + b"\x1a\xe1" + v6 + b"\0\0"})
        self.assertEqual(parse_tracker_reply(http_reply(body)), ((v6, 6881),))

    def test_empty_peers_and_no_peers(self) -> None:
        self.assertEqual(parse_tracker_reply(http_reply(b"d8:intervali1e5:peers0:e")), ())
        failure = http_reply(encode({"failure reason": "unregistered torrent"}))
        self.assertIsNone(parse_tracker_reply(failure))

    def test_http_1_0_and_no_reason_phrase(self) -> None:
        body = encode({"peers": compact(*self.PEERS)})
        for status_line in (b"HTTP/1.0 200 OK", b"HTTP/1.1 200"):
            reply = status_line + b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body
            self.assertEqual(len(parse_tracker_reply(reply)), 2, status_line)

    def test_what_follows_the_body_is_not_read(self) -> None:
        body = encode({"peers": compact(*self.PEERS)})
        self.assertEqual(len(parse_tracker_reply(http_reply(body + b"garbage"))), 2)

    def test_chunked(self) -> None:
        body = encode({"interval": 1800, "peers": compact(*self.PEERS)})
        chunked = b"%x\r\n%s\r\n%x;ext=1\r\n%s\r\n0\r\n\r\n" % (
            10,
            body[:10],
            len(body) - 10,
            body[10:],
        )
        reply = http_reply(chunked, b"Transfer-Encoding: chunked\r\n")
        self.assertEqual(len(parse_tracker_reply(reply)), 2)
        self.assertEqual(len(parse_tracker_reply(reply[: reply.index(b"0\r\n\r\n") - 8])), 1)

    def test_a_cut_body_yields_the_complete_peers(self) -> None:
        peers = [(f"198.19.0.{i}", 6881) for i in range(1, 11)]
        compact_reply = http_reply(encode({"interval": 1800, "peers": compact(*peers)}))
        at = compact_reply.index(b"5:peers") + len(b"5:peers60:")
        self.assertEqual(len(parse_tracker_reply(compact_reply[: at + 6 * 3 + 4])), 3)
        self.assertIsNone(parse_tracker_reply(compact_reply[: at - 12]))  # cut before the key
        dicts = http_reply(
            encode({"interval": 1800, "peers": [{"ip": a, "port": p} for a, p in peers]})
        )
        cut = dicts[: dicts.index(b"198.19.0.5")]
        self.assertEqual(as_text(parse_tracker_reply(cut)), set(peers[:4]))

    def test_bounded(self) -> None:
        many = [(f"198.19.{i // 250}.{i % 250 + 1}", 6881) for i in range(MAX_PEERS + 50)]
        self.assertEqual(
            len(parse_tracker_reply(http_reply(encode({"peers": compact(*many)})))), MAX_PEERS
        )
        dicts = encode({"peers": [{"ip": a, "port": p} for a, p in many]})
        self.assertEqual(len(parse_tracker_reply(http_reply(dicts))), MAX_PEERS)

    def test_not_a_readable_reply(self) -> None:
        body = encode({"peers": compact(*self.PEERS)})
        for reply in (
            http_reply(body, status=b"404 Not Found"),
            http_reply(body, status=b"2000 OK"),
            http_reply(body, b"Content-Encoding: gzip\r\n"),
            b"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n" + body,  # no end of headers
            http_reply(b"l" + body + b"e"),
            b"HTTP/2 200\r\n\r\n" + body,
            b"GET / HTTP/1.1\r\n\r\n" + body,
        ):
            self.assertIsNone(parse_tracker_reply(reply), reply[:40])


class HandshakeAndUtpTests(SynchronousTestCase):
    def test_handshake(self) -> None:
        handshake = b"\x13BitTorrent protocol" + bytes(8) + INFO_HASH + b"-LT2080-" + b"x" * 12
        self.assertTrue(is_handshake(handshake))
        self.assertTrue(is_handshake(memoryview(handshake)[:20]))
        self.assertFalse(is_handshake(handshake[:19]))
        self.assertFalse(is_handshake(b"\x14BitTorrent protocol"))

    def test_utp_syn(self) -> None:
        header = struct.pack("!BBHIIIHH", 0x41, 0, 0x98D4, 1, 0, 0, 0x7561, 0)
        self.assertTrue(is_utp_syn(header))
        libutp = struct.pack("!BBHIIIHH", 0x41, 2, 1, 1, 0, 0x40000, 1, 0) + b"\x00\x08" + bytes(8)
        self.assertTrue(is_utp_syn(libutp))
        chain = header[:1] + b"\x01" + header[2:] + b"\x01\x00" * 3 + b"\x00\x04" + bytes(4)
        self.assertTrue(is_utp_syn(chain))  # four extensions

    def test_not_a_utp_syn(self) -> None:
        header = struct.pack("!BBHIIIHH", 0x41, 0, 1, 1, 0, 0, 1, 0)
        for data in (
            header[:19],
            header + b"data",  # a SYN carries nothing
            b"\x01" + header[1:],  # ST_DATA
            b"\x42" + header[1:],  # version 2
            header[:1] + b"\x09" + header[2:] + b"\x00\x00",  # unknown extension
            header[:1] + b"\x01" + header[2:] + b"\x00\x08abc",  # extension runs past the end
            header[:1] + b"\x01" + header[2:],  # extension announced, none there
            header[:1] + b"\x01" + header[2:] + b"\x01\x00" * 8,  # endless chain
        ):
            self.assertFalse(is_utp_syn(data), data.hex())


@dataclass(frozen=True)
class Frame:
    src: str
    sport: int
    dst: str
    dport: int
    udp: bool
    payload: bytes

    @property
    def outgoing(self) -> bool:
        return self.src == CLIENT


def frames(name: str) -> list[Frame]:
    found = []
    for packet in rdpcap(str(DATA / name)):
        layer = packet[UDP] if UDP in packet else packet[TCP]
        found.append(
            Frame(
                packet[IP].src,
                layer.sport,
                packet[IP].dst,
                layer.dport,
                UDP in packet,
                bytes(layer.payload),
            )
        )
    return found


def classify(frame: Frame) -> str:
    """What the parsers make of one real packet, as a short label."""
    data = frame.payload
    if frame.udp:
        if message := parse_krpc(data):
            return "krpc-" + (message.query or message.kind).decode()
        if request := parse_udp_tracker_request(data):
            return ("udp-connect", "udp-announce", "udp-scrape")[request.action]
        if parse_udp_tracker_reply(data, False) is not None:
            return "udp-reply"
        return "utp-syn" if is_utp_syn(data) else "-"
    if parse_announce(data):
        return "http-announce"
    if parse_tracker_reply(data) is not None:
        return "http-reply"
    return "handshake" if is_handshake(data) else "-"


# The HTTP announce and its reply, the first peer-wire payload (MSE: nothing to read), the UDP
# tracker's connect, its reply (nothing to learn) and the announce with its reply.
TRACKER_LABELS = [
    "http-announce",
    "http-reply",
    "-",
    "udp-connect",
    "-",
    "udp-announce",
    "udp-reply",
]


class RealClientTests(SynchronousTestCase):
    """Each client's trimmed capture: every kept packet is recognised as what it is, the
    signals the lab reference lists for that client are there, and every peer the client
    contacts was named by a cleartext reply the parsers read."""

    def check(
        self, name: str, labels: list[str], peer_id: bytes, version: bytes, dht_port: int
    ) -> list[Frame]:
        captured = frames(name)
        self.assertEqual([classify(f) for f in captured], labels)
        (announce,) = [a for f in captured if (a := parse_announce(f.payload))]
        self.assertTrue(announce.peer_id.startswith(peer_id), announce.peer_id)
        self.assertEqual((announce.path, announce.port), ("/announce", dht_port))
        (udp,) = [
            r
            for f in captured
            if f.udp and (r := parse_udp_tracker_request(f.payload)) and r.action == 1
        ]
        self.assertEqual(udp.port, dht_port)
        queries = [
            (f, m)
            for f in captured
            if f.udp and f.outgoing and (m := parse_krpc(f.payload)) and m.kind == b"q"
        ]
        self.assertIn(b"get_peers", {m.query for _, m in queries})
        self.assertEqual({m.version for _, m in queries}, {version})
        self.assertEqual({f.sport for f, _ in queries}, {dht_port})
        learned: set[tuple[str, int]] = set()
        for f in captured:
            if f.outgoing:
                continue
            if f.udp and (message := parse_krpc(f.payload)):
                learned |= as_text(message.values)
            elif f.udp and f.sport == TRACKER[1]:
                learned |= as_text(parse_udp_tracker_reply(f.payload, False) or ())
            elif not f.udp:
                learned |= as_text(parse_tracker_reply(f.payload) or ())
        self.assertLessEqual(SEEDERS, learned)
        contacted = {
            (f.dst, f.dport) for f in captured if f.outgoing and classify(f) in ("-", "utp-syn")
        }
        self.assertTrue(contacted and contacted <= learned, contacted)
        for f in captured:
            if classify(f) == "utp-syn":
                self.assertEqual(f.sport, dht_port)  # uTP on the DHT port
        return captured

    # qBittorrent is built on libtorrent: the same DHT and uTP, its own peer id.
    LIBTORRENT = [
        *TRACKER_LABELS,
        "krpc-get_peers",
        "krpc-r",
        "utp-syn",
        "krpc-r",
        "krpc-announce_peer",
        "krpc-r",
    ]

    def test_libtorrent(self) -> None:
        self.check("bt-libtorrent.pcap", self.LIBTORRENT, b"-LT2080-", b"LT\x02\x08", 6881)

    def test_qbittorrent(self) -> None:
        self.check("bt-qbittorrent.pcap", self.LIBTORRENT, b"-qB4520-", b"LT\x02\x08", 6881)

    def test_aria2(self) -> None:
        labels = TRACKER_LABELS + [
            "krpc-ping",
            "krpc-get_peers",
            "krpc-r",
            "krpc-r",
            "krpc-announce_peer",
            "krpc-r",
        ]
        captured = self.check("bt-aria2.pcap", labels, b"A2-1-36-0-", b"A2\x00\x03", 6881)
        self.assertNotIn("utp-syn", [classify(f) for f in captured])

    def test_transmission(self) -> None:
        labels = TRACKER_LABELS + [
            "udp-scrape",
            "krpc-ping",
            "krpc-find_node",
            "krpc-r",
            "krpc-get_peers",
            "krpc-r",
            "krpc-r",
            "utp-syn",
        ]
        captured = self.check("bt-transmission.pcap", labels, b"-TR3000-", b"", 51413)
        txids = [m.txid[:2] for f in captured if (m := parse_krpc(f.payload)) and m.kind == b"q"]
        self.assertEqual(txids, [b"pn", b"fn", b"gp"])
        # The replies to the get_peers echo its transaction id: what a probe's answer check uses.
        (get_peers,) = [
            m for f in captured if (m := parse_krpc(f.payload)) and m.query == b"get_peers"
        ]
        replies = [
            m for f in captured if (m := parse_krpc(f.payload)) and m.kind == b"r" and m.values
        ]
        self.assertEqual({m.txid for m in replies}, {get_peers.txid})

    def test_rtorrent(self) -> None:
        labels = [
            "http-announce",
            "http-reply",
            "-",
            "krpc-e",
            "udp-connect",
            "-",
            "udp-announce",
            "udp-reply",
            "krpc-ping",
            "krpc-find_node",
            "krpc-r",
            "krpc-get_peers",
            "krpc-r",
            "krpc-announce_peer",
            "krpc-r",
            "handshake",
        ]
        captured = self.check("bt-rtorrent.pcap", labels, b"-lt0D80-", b"lt\x0d\x80", 6881)
        self.assertNotIn("utp-syn", [classify(f) for f in captured])
        (handshake,) = [f for f in captured if is_handshake(f.payload)]
        self.assertEqual((handshake.src, handshake.payload[28:48]), ("198.19.0.11", INFO_HASH))


PARSERS = (
    parse_krpc,
    parse_udp_tracker_request,
    lambda data: parse_udp_tracker_reply(data, False),
    lambda data: parse_udp_tracker_reply(data, True),
    parse_announce,
    parse_tracker_reply,
    is_handshake,
    is_utp_syn,
)


def check_result(test: SynchronousTestCase, result: object) -> None:
    """Whatever a parser returns is well formed: peers bounded, packed, with a port."""
    peers = result if isinstance(result, tuple) else getattr(result, "values", ())
    test.assertLessEqual(len(peers), MAX_PEERS)
    for addr, port in peers:
        test.assertIn(len(addr), (4, 16))
        test.assertTrue(0 < port < 65536)


class HostileInputTests(SynchronousTestCase):
    """Nothing a packet holds makes a parser raise."""

    def run_all(self, data: bytes) -> None:
        for parse in PARSERS:
            check_result(self, parse(data))
            check_result(self, parse(memoryview(data)))

    def real_payloads(self) -> list[bytes]:
        return [f.payload for name in sorted(DATA.glob("bt-*.pcap")) for f in frames(name.name)]

    def test_random_bytes(self) -> None:
        rng = random.Random(11)
        for _ in range(3000):
            self.run_all(rng.randbytes(rng.choice((0, 1, 16, 20, 30, 98, rng.randrange(2000)))))

    def test_every_truncation_of_every_real_packet(self) -> None:
        for payload in self.real_payloads():
            for end in range(len(payload)):
                self.run_all(payload[:end])

    def test_mutated_real_packets(self) -> None:
        rng = random.Random(12)
        payloads = self.real_payloads()
        for _ in range(6000):
            data = bytearray(rng.choice(payloads))
            for _ in range(rng.randint(1, 6)):
                at = rng.randrange(len(data) + 1)
                choice = rng.randrange(3)
                if choice == 0 and at < len(data):
                    data[at] = rng.choice(b"deil0123456789:-\x00\xff")
                elif choice == 1:
                    data[at:at] = rng.choice(
                        (b"l", b"d", b"e", b"i", b"9:", b"999999999:", b"\r\n")
                    )
                else:
                    del data[at : at + rng.randrange(1, 8)]
            self.run_all(bytes(data))

    def test_hostile_bencode(self) -> None:
        reply = b"HTTP/1.1 200 OK\r\n\r\n"
        for body in (
            b"d1:t2:aa1:y1:q1:q4:ping1:a" + b"l" * 4000 + b"e" * 4000 + b"e",
            b"d5:peers" + b"l" * 8000 + b"e" * 8000 + b"e",
            b"d5:peers" + b"ld2:ipl" * 2000,
            b"d5:peers999999999:" + b"\x01" * 100,
            b"d5:peersl" + b"d2:ip11:198.19.0.144:porti6881ee" * 1000 + b"ee",
            b"d" + b"1:xi1e" * 3000 + b"5:peers6:\x01\x02\x03\x04\x00\x01e",
            b"d1:t2:aa1:y1:r1:rd6:valuesl" + b"6:\x01\x02\x03\x04\x00\x01" * 500 + b"eee",
            b"d1:t2:aa1:y1:r1:rd6:valuesl" + b"i1e" * 1300 + b"eee",
            b"d1:t2:aa1:y1:q1:q9999999999:x1:ad2:id20:abcdefghij0123456789ee",
        ):
            self.run_all(body)
            self.run_all(reply + body)
        self.assertEqual(
            len(
                parse_tracker_reply(
                    reply + b"d5:peersl" + b"d2:ip11:198.19.0.144:porti6881ee" * 1000 + b"ee"
                )
            ),
            MAX_PEERS,
        )
        many_keys = reply + b"d" + b"1:xi1e" * 100 + b"5:peers6:\x01\x02\x03\x04\x00\x01e"
        self.assertIsNone(parse_tracker_reply(many_keys))  # the walk gives up first
