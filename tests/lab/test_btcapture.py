"""The lab's capture reader and cleartext-BitTorrent matcher, against scapy-written captures and
the real client captures in tests/data (see tests/data/PROVENANCE.md)."""

from __future__ import annotations

import struct
from pathlib import Path

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.utils import PcapWriter
from twisted.trial.unittest import SynchronousTestCase

from lab import btcapture
from lab.btcapture import (
    BEP15_MAGIC,
    CaptureError,
    bytes_from,
    first_cleartext,
    is_cleartext_bittorrent,
    segments,
)

DATA = Path(__file__).resolve().parents[1] / "data"
CLIENT = "198.18.1.10"
SEEDER = "198.19.0.11"
CLIENTS = ("aria2", "libtorrent", "qbittorrent", "rtorrent", "transmission")


def frame(src: str, dst: str, layer: object, payload: bytes, when: float) -> Ether:
    packet = Ether() / IP(src=src, dst=dst) / layer / payload
    packet.time = when
    return packet


def pcap(self: SynchronousTestCase, packets: list, nano: bool = False) -> bytes:
    path = self.mktemp()
    with PcapWriter(path, linktype=1, nano=nano, sync=True) as writer:
        for packet in packets:
            writer.write(packet)
    return Path(path).read_bytes()


class MatcherTests(SynchronousTestCase):
    def test_krpc_in_any_key_order(self) -> None:
        query = b"d1:t2:aa1:y1:q1:q4:ping1:ad2:id20:" + b"x" * 20 + b"ee"
        self.assertTrue(is_cleartext_bittorrent(btcapture.UDP, query))
        self.assertTrue(is_cleartext_bittorrent(btcapture.UDP, b"d1:ad2:id20:" + b"x" * 20))

    def test_bep15_magic_only_at_offset_zero(self) -> None:
        connect = BEP15_MAGIC + struct.pack(">II", 0, 1234)
        self.assertTrue(is_cleartext_bittorrent(btcapture.UDP, connect))
        self.assertFalse(is_cleartext_bittorrent(btcapture.UDP, b"\0\0\0\0" + connect))

    def test_tcp_announce_and_handshake(self) -> None:
        self.assertTrue(is_cleartext_bittorrent(btcapture.TCP, b"GET /announce?info_hash=x"))
        self.assertTrue(is_cleartext_bittorrent(btcapture.TCP, b"\x13BitTorrent protocol\0"))

    def test_ordinary_traffic_is_not_bittorrent(self) -> None:
        for proto, payload in (
            (btcapture.TCP, b"GET /index.html HTTP/1.1\r\n"),
            (btcapture.TCP, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"),
            (btcapture.TCP, bytes(range(96))),  # an MSE key exchange looks like this
            (btcapture.UDP, b"lab user 3"),
            (btcapture.UDP, b"d2:ip6:abcdef1:rd2:id20:" + b"x" * 20 + b"e1:t2:aa1:y1:re"),
            (btcapture.UDP, b"\x41\x00" + b"\0" * 18),  # a uTP SYN alone
            (btcapture.TCP, b"d1:ad2:id"),  # bencode on TCP is not KRPC
        ):
            self.assertFalse(is_cleartext_bittorrent(proto, payload), payload)


class ReaderTests(SynchronousTestCase):
    def test_segments_of_a_scapy_capture(self) -> None:
        data = pcap(
            self,
            [
                frame(CLIENT, SEEDER, UDP(sport=6881, dport=6881), b"d1:ad2:id", 100.25),
                frame(SEEDER, CLIENT, TCP(sport=6881, dport=40000, flags="PA"), b"z" * 50, 101.5),
            ],
        )
        first, second = segments(data)
        self.assertEqual(
            (first.time, first.proto, first.src, first.sport, first.dst, first.dport),
            (100.25, btcapture.UDP, CLIENT, 6881, SEEDER, 6881),
        )
        self.assertEqual((first.payload, first.length), (b"d1:ad2:id", 9))
        self.assertEqual(
            (second.proto, second.payload, second.length), (btcapture.TCP, b"z" * 50, 50)
        )

    def test_nanosecond_captures(self) -> None:
        data = pcap(self, [frame(CLIENT, SEEDER, UDP(), BEP15_MAGIC, 7.5)], nano=True)
        self.assertEqual(first_cleartext(data, CLIENT), 7.5)

    def test_big_endian_captures(self) -> None:
        little = pcap(self, [frame(CLIENT, SEEDER, UDP(), b"d1:ad2:id", 9.0)])
        header = struct.unpack("<IHHiIII", little[:24])
        record = struct.unpack("<IIII", little[24:40])
        big = struct.pack(">IHHiIII", *header) + struct.pack(">IIII", *record) + little[40:]
        self.assertEqual(first_cleartext(big, CLIENT), 9.0)

    def test_a_cut_last_record_ends_the_capture(self) -> None:
        data = pcap(self, [frame(CLIENT, SEEDER, UDP(), b"d1:ad2:id", 1.0)] * 2)
        self.assertEqual(len(list(segments(data[:-5]))), 1)

    def test_not_a_capture(self) -> None:
        self.assertRaises(CaptureError, list, segments(b"short"))
        self.assertRaises(CaptureError, list, segments(b"\0" * 24))
        raw = struct.pack("<IHHiIII", btcapture.PCAP_MAGIC_US, 2, 4, 0, 0, 65535, 101)
        self.assertRaises(CaptureError, list, segments(raw))


class MeasureTests(SynchronousTestCase):
    def test_first_cleartext_is_the_clients_own_and_after_since(self) -> None:
        data = pcap(
            self,
            [
                frame(SEEDER, CLIENT, UDP(sport=6881, dport=6881), b"d1:ad2:id", 1.0),
                frame(CLIENT, SEEDER, TCP(dport=6881, flags="PA"), bytes(96), 2.0),
                frame(CLIENT, SEEDER, UDP(sport=6881, dport=6881), b"d1:ad2:id", 3.0),
                frame(CLIENT, "198.19.0.2", TCP(dport=6969, flags="PA"), b"GET /announce?", 4.0),
            ],
        )
        self.assertEqual(first_cleartext(data, CLIENT), 3.0)
        self.assertEqual(first_cleartext(data, CLIENT, since=3.5), 4.0)
        self.assertIsNone(first_cleartext(data, "198.18.1.30"))

    def test_bytes_from_seeders_count_tcp_and_utp_not_krpc(self) -> None:
        data = pcap(
            self,
            [
                frame(SEEDER, CLIENT, TCP(sport=6881, flags="PA"), b"p" * 300, 1.0),
                frame(SEEDER, CLIENT, UDP(sport=6881), b"\x01\x01" + b"u" * 98, 2.0),
                frame(SEEDER, CLIENT, UDP(sport=6881), b"d1:rd2:id20:" + b"x" * 20, 3.0),
                frame("198.19.0.2", CLIENT, TCP(sport=6969, flags="PA"), b"t" * 40, 4.0),
                frame(SEEDER, "198.18.1.30", TCP(sport=6881, flags="PA"), b"o" * 40, 5.0),
            ],
        )
        self.assertEqual(bytes_from(data, CLIENT, [SEEDER]), 400)
        self.assertEqual(bytes_from(data, CLIENT, [SEEDER], since=1.5), 100)

    def test_bytes_beyond_the_snapshot_length_still_count(self) -> None:
        path = self.mktemp()
        with PcapWriter(path, linktype=1, snaplen=100, sync=True) as writer:
            writer.write(frame(SEEDER, CLIENT, TCP(sport=6881, flags="PA"), b"p" * 1000, 1.0))
        whole = Path(path).read_bytes()
        header = struct.unpack("<IIII", whole[24:40])
        cut = whole[:24] + struct.pack("<IIII", *header[:2], 100, header[3]) + whole[40:140]
        self.assertEqual(bytes_from(cut, CLIENT, [SEEDER]), 1000)


class RealCaptureTests(SynchronousTestCase):
    """Each real client's first cleartext packet in its trimmed capture is its HTTP announce
    (frame 1: the capture starts with its -http run)."""

    def test_first_signal_of_each_client_is_its_announce(self) -> None:
        for client in CLIENTS:
            data = (DATA / f"bt-{client}.pcap").read_bytes()
            first = next(seg for seg in segments(data) if seg.src == CLIENT)
            self.assertTrue(first.payload.startswith(b"GET /announce?"), client)
            self.assertEqual(first_cleartext(data, CLIENT), first.time, client)

    def test_aria2_signals(self) -> None:
        """aria2's capture keeps, from the client: the announce, the UDP connect (the UDP
        announce carries a connection id, not the magic), then a ping, a get_peers, an
        announce_peer and a reply in KRPC; the encrypted MSE frame is no signal."""
        data = (DATA / "bt-aria2.pcap").read_bytes()
        mine = [seg for seg in segments(data) if seg.src == CLIENT]
        hits = [seg for seg in mine if is_cleartext_bittorrent(seg.proto, seg.payload)]
        self.assertEqual(len(hits), 6)
        self.assertEqual(sum(seg.payload.startswith(BEP15_MAGIC) for seg in hits), 1)
        self.assertEqual(sum(seg.proto == btcapture.UDP for seg in hits), 5)
