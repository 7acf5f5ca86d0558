"""Forged datagrams: the bytes ``build_udp`` makes (scapy parses them back and recomputes every
checksum), and the raw-socket sender's bookkeeping, with a real send over loopback as root."""

import errno
import os
import random
import socket
import struct

from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.utils import checksum
from twisted.trial.unittest import SynchronousTestCase

from p2pwall import spoof
from p2pwall.spoof import SPOOF_MARK, RawSpoofer, build_udp, local_address
from p2pwall.testing import packed

V4 = ("198.19.1.1", "198.18.1.10")
V6 = ("2001:2::1", "2001:2:0:1::10")
PAYLOADS = (b"", b"x", b"pong", b"\x27\x00\x00\x00\x29\x80KaZaA\x00", bytes(1500), b"\xff" * 1501)
PORTS = ((0, 0), (65535, 65535), (1214, 3000), (0, 65535))


def scapy_build(src: str, sport: int, dst: str, dport: int, payload: bytes) -> bytes:
    """Scapy's datagram for the same fields (id 0, DF clear, TTL/hop limit 64: its defaults,
    except the id, which the kernel fills in for a raw send)."""
    layer = IPv6(src=src, dst=dst) if ":" in src else IP(src=src, dst=dst, id=0)
    return bytes(layer / UDP(sport=sport, dport=dport) / payload)


def recomputed(data: bytes) -> bytes:
    """``data`` rebuilt by scapy with every checksum and length recomputed."""
    parsed = (IPv6 if data[0] >> 4 == 6 else IP)(data)
    if IP in parsed:
        del parsed[IP].chksum
        del parsed[IP].len
    else:
        del parsed[IPv6].plen
    del parsed[UDP].chksum
    del parsed[UDP].len
    return bytes(parsed)


class BuildTests(SynchronousTestCase):
    def check(self, src: str, sport: int, dst: str, dport: int, payload: bytes) -> None:
        data = build_udp(packed(src), sport, packed(dst), dport, payload)
        self.assertEqual(recomputed(data), data)
        parsed = (IPv6 if ":" in src else IP)(data)
        self.assertEqual((parsed.src, parsed.dst), (src, dst))
        self.assertEqual((parsed[UDP].sport, parsed[UDP].dport), (sport, dport))
        self.assertEqual(parsed[UDP].len, 8 + len(payload))
        self.assertEqual(bytes(parsed[UDP].payload), payload)
        self.assertNotEqual(parsed[UDP].chksum, 0, "0 means no checksum: never sent")
        if IP in parsed:
            ip = parsed[IP]
            self.assertEqual((ip.version, ip.ihl, ip.tos, ip.ttl, ip.proto), (4, 5, 0, 64, 17))
            self.assertEqual((ip.len, ip.id, int(ip.flags), ip.frag), (len(data), 0, 0, 0))
        else:
            ip = parsed[IPv6]
            self.assertEqual((ip.tc, ip.fl, ip.nh, ip.hlim), (0, 0, 17, 64))
            self.assertEqual(ip.plen, 8 + len(payload))
        self.assertEqual(data, scapy_build(src, sport, dst, dport, payload))

    def test_ipv4_and_ipv6_odd_even_empty_and_full_payloads_extreme_ports(self) -> None:
        for src, dst in (V4, V6):
            for payload in PAYLOADS:
                for sport, dport in PORTS:
                    with self.subTest(src=src, size=len(payload), ports=(sport, dport)):
                        self.check(src, sport, dst, dport, payload)

    def test_random_fields_agree_with_scapy(self) -> None:
        rng = random.Random(9)
        for size in (4, 16) * 150:
            src, dst = rng.randbytes(size), rng.randbytes(size)
            sport, dport = rng.randrange(65536), rng.randrange(65536)
            payload = rng.randbytes(rng.randrange(80))
            text = (socket.inet_ntop(socket.AF_INET if size == 4 else socket.AF_INET6, a)
                    for a in (src, dst))  # fmt: skip
            src_text, dst_text = text
            self.assertEqual(
                build_udp(src, sport, dst, dport, payload),
                scapy_build(src_text, sport, dst_text, dport, payload),
            )

    def test_a_udp_checksum_of_zero_is_sent_as_ffff(self) -> None:
        for src, dst in (V4, V6):
            # A payload word equal to the checksum of the same datagram with a zero word there
            # brings the sum to 0xFFFF: the computed checksum is 0.
            zero_word = build_udp(packed(src), 1, packed(dst), 2, b"\0\0")
            word = zero_word[-4:-2]
            data = build_udp(packed(src), 1, packed(dst), 2, word)
            self.assertEqual(data[-4:-2], b"\xff\xff")
            self.check(src, 1, dst, 2, word)

    def test_an_ipv4_header_checksum_of_zero_stays_zero(self) -> None:
        # The header with a source ending in a zero word, then that word set to its checksum.
        header = bytes(IP(src="198.19.0.0", dst=V4[1], id=0, len=28, proto=17))
        word = struct.unpack("!H", header[10:12])[0]
        src = f"198.19.{word >> 8}.{word & 0xFF}"
        data = build_udp(packed(src), 1, packed(V4[1]), 2, b"")
        self.assertEqual((data[10:12], checksum(data[:20])), (b"\0\0", 0))
        self.check(src, 1, V4[1], 2, b"")

    def test_mixed_families_are_refused(self) -> None:
        with self.assertRaises(ValueError):
            build_udp(packed(V4[0]), 1, packed(V6[1]), 2, b"x")

    def test_local_address_is_the_source_towards_a_destination(self) -> None:
        for family, addr in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
            with socket.socket(family, socket.SOCK_DGRAM) as probe:
                self.assertEqual(local_address(probe, packed(addr)), packed(addr))


class Sink:
    """A raw socket's ``sendto``, recording instead of sending (or failing with ``error``)."""

    def __init__(self, error: OSError | None = None) -> None:
        self.sent: list[tuple[bytes, tuple]] = []
        self.error = error
        self.closed = False

    def sendto(self, data: bytes, address: tuple) -> int:
        if self.error is not None:
            raise self.error
        self.sent.append((data, address))
        return len(data)

    def close(self) -> None:
        self.closed = True


class SpooferTests(SynchronousTestCase):
    def spoofer(self, **kwargs) -> tuple[RawSpoofer, Sink, Sink]:
        spoofer = RawSpoofer(**kwargs)
        spoofer._sockets = {4: Sink(), 16: Sink()}
        self.addCleanup(spoofer.close)
        return spoofer, spoofer._sockets[4], spoofer._sockets[16]

    def test_sends_the_built_datagram_to_the_destination(self) -> None:
        spoofer, v4, v6 = self.spoofer()
        spoofer.send_udp(packed(V4[0]), 1214, packed(V4[1]), 3000, b"pong")
        spoofer.send_udp(packed(V6[0]), 1214, packed(V6[1]), 3000, b"pong")
        self.assertEqual(
            v4.sent, [(build_udp(packed(V4[0]), 1214, packed(V4[1]), 3000, b"pong"), (V4[1], 0))]
        )
        self.assertEqual(
            v6.sent, [(build_udp(packed(V6[0]), 1214, packed(V6[1]), 3000, b"pong"), (V6[1], 0))]
        )
        self.assertEqual((spoofer.sent, spoofer.failed), (2, 0))

    def test_probe_source_defaults_to_the_route_and_can_be_set(self) -> None:
        spoofer, _, _ = self.spoofer()
        self.assertEqual(spoofer._source_for(packed("127.0.0.1")), packed("127.0.0.1"))
        fixed, _, _ = self.spoofer(probe_source=packed("198.18.1.1"))
        self.assertEqual(fixed._source_for(packed("127.0.0.1")), packed("198.18.1.1"))
        self.assertEqual(fixed._source_for(packed("::1")), packed("::1"))

    def test_a_failed_send_is_counted_not_raised(self) -> None:
        spoofer, v4, _ = self.spoofer()
        v4.error = PermissionError(errno.EPERM, "Operation not permitted")
        spoofer.send_udp(packed(V4[0]), 1, packed("127.0.0.1"), 2, b"x")
        self.assertEqual((spoofer.sent, spoofer.failed), (0, 1))

    def test_a_failed_route_lookup_is_counted_not_raised_nor_cached(self) -> None:
        spoofer, v4, _ = self.spoofer()
        # Connecting a UDP socket to the broadcast address without SO_BROADCAST: EACCES.
        spoofer.send_udp(None, 1, packed("255.255.255.255"), 2, b"x")
        spoofer.send_udp(None, 1, packed("255.255.255.255"), 2, b"x")
        self.assertEqual((spoofer.sent, spoofer.failed, v4.sent, spoofer._routes), (0, 2, [], {}))
        spoofer.send_udp(None, 1, packed("127.0.0.1"), 2, b"x")
        self.assertEqual(
            (spoofer.sent, spoofer._routes), (1, {packed("127.0.0.1"): packed("127.0.0.1")})
        )

    def test_one_route_socket_per_family_serves_every_lookup_until_closed(self) -> None:
        spoofer, v4, v6 = self.spoofer()
        for addr in ("127.0.0.1", "127.0.0.2", "::1"):
            spoofer.send_udp(None, 1, packed(addr), 2, b"x")
        probes = dict(spoofer._route_sockets)
        self.assertEqual(sorted((size, sock.family) for size, sock in probes.items()),
                         [(4, socket.AF_INET), (16, socket.AF_INET6)])  # fmt: skip
        self.assertEqual(spoofer._source_for(packed("127.0.0.3")), packed("127.0.0.1"))
        self.assertEqual(spoofer._route_sockets, probes)
        opened = list(probes.values())
        spoofer.close()
        self.assertEqual([sock.fileno() for sock in opened], [-1, -1])
        self.assertEqual((spoofer._route_sockets, spoofer._sockets, v4.closed, v6.closed),
                         ({}, {}, True, True))  # fmt: skip

    def test_mixed_families_are_counted_not_raised(self) -> None:
        spoofer, v4, v6 = self.spoofer()
        spoofer.send_udp(packed(V6[0]), 1, packed(V4[1]), 2, b"x")
        self.assertEqual((spoofer.sent, spoofer.failed, v4.sent, v6.sent), (0, 1, [], []))

    def test_the_route_cache_is_bounded(self) -> None:
        lookups: list[bytes] = []

        def lookup(probe: socket.socket, dst: bytes) -> bytes:
            lookups.append(dst)
            return packed("198.18.1.1")

        self.patch(spoof, "local_address", lookup)
        spoofer, v4, _ = self.spoofer(max_routes=2)
        clients = [packed(f"198.18.1.{n}") for n in (10, 11, 12, 10)]
        for client in clients:
            spoofer.send_udp(None, 1, client, 2, b"x")
            self.assertLessEqual(len(spoofer._routes), 2)
        self.assertEqual(lookups, clients, "the full cache was emptied, 10 looked up again")
        spoofer.send_udp(None, 1, clients[0], 2, b"x")
        self.assertEqual((len(lookups), spoofer.sent), (4, 5))


class SendTests(SynchronousTestCase):
    def setUp(self) -> None:
        if os.geteuid() != 0:
            raise self.skipTest("raw sockets need root")
        self.spoofer = RawSpoofer()
        self.addCleanup(self.spoofer.close)
        self.spoofer.open()

    def receive(self, family: int, host: str) -> tuple[socket.socket, int]:
        receiver = socket.socket(family, socket.SOCK_DGRAM)
        self.addCleanup(receiver.close)
        receiver.bind((host, 0))
        receiver.settimeout(5)
        return receiver, receiver.getsockname()[1]

    def test_forged_source_arrives_over_loopback(self) -> None:
        for sock in self.spoofer._sockets.values():
            self.assertEqual(sock.getsockopt(socket.SOL_SOCKET, socket.SO_MARK), SPOOF_MARK)
        receiver, port = self.receive(socket.AF_INET, "127.0.0.1")
        self.spoofer.send_udp(packed("127.0.0.2"), 1214, packed("127.0.0.1"), port, b"hello")
        data, sender = receiver.recvfrom(100)
        self.assertEqual((data, sender), (b"hello", ("127.0.0.2", 1214)))
        self.assertEqual((self.spoofer.sent, self.spoofer.failed), (1, 0))

    def test_ipv6_probe_from_the_route_source_arrives_over_loopback(self) -> None:
        receiver, port = self.receive(socket.AF_INET6, "::1")
        self.spoofer.send_udp(None, 1214, packed("::1"), port, b"hello")
        data, sender = receiver.recvfrom(100)
        self.assertEqual((data, sender[:2]), (b"hello", ("::1", 1214)))
        self.assertEqual((self.spoofer.sent, self.spoofer.failed), (1, 0))
