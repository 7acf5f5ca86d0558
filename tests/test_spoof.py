"""Forged datagrams: the bytes scapy builds, and a real raw-socket send over loopback."""

import os
import socket

from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6
from twisted.trial.unittest import SynchronousTestCase

from p2pwall.spoof import SPOOF_MARK, RawSpoofer, build_udp, local_address
from p2pwall.testing import packed


class BuildTests(SynchronousTestCase):
    def test_ipv4_datagram_with_valid_checksums(self) -> None:
        data = build_udp(packed("198.19.1.1"), 1214, packed("198.18.1.10"), 3000, b"pong")
        parsed = IP(data)
        self.assertEqual((parsed.src, parsed.dst), ("198.19.1.1", "198.18.1.10"))
        self.assertEqual((parsed[UDP].sport, parsed[UDP].dport), (1214, 3000))
        self.assertEqual(bytes(parsed[UDP].payload), b"pong")
        checked = IP(data)
        del checked.chksum
        del checked[UDP].chksum
        again = IP(bytes(checked))
        self.assertEqual((again.chksum, again[UDP].chksum), (parsed.chksum, parsed[UDP].chksum))

    def test_ipv6_datagram(self) -> None:
        data = build_udp(packed("2001:db8::1"), 1214, packed("fd00::10"), 3000, b"x")
        parsed = IPv6(data)
        self.assertEqual((parsed.src, parsed[UDP].dport, bytes(parsed[UDP].payload)),
                         ("2001:db8::1", 3000, b"x"))  # fmt: skip

    def test_local_address_is_the_source_towards_a_destination(self) -> None:
        self.assertEqual(local_address(packed("127.0.0.1")), packed("127.0.0.1"))


class SendTests(SynchronousTestCase):
    def test_forged_source_arrives_over_loopback(self) -> None:
        if os.geteuid() != 0:
            raise self.skipTest("raw sockets need root")
        receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(receiver.close)
        receiver.bind(("127.0.0.1", 0))
        receiver.settimeout(5)
        port = receiver.getsockname()[1]
        spoofer = RawSpoofer()
        self.addCleanup(spoofer.close)
        spoofer.open()
        for sock in spoofer._sockets.values():
            self.assertEqual(sock.getsockopt(socket.SOL_SOCKET, socket.SO_MARK), SPOOF_MARK)
        spoofer.send_udp(packed("127.0.0.2"), 1214, packed("127.0.0.1"), port, b"hello")
        data, sender = receiver.recvfrom(100)
        self.assertEqual((data, sender), (b"hello", ("127.0.0.2", 1214)))
        self.assertEqual((spoofer.sent, spoofer.failed), (1, 0))

    def test_probe_source_defaults_to_the_route_and_can_be_set(self) -> None:
        spoofer = RawSpoofer()
        self.assertEqual(spoofer._source_for(packed("127.0.0.1")), packed("127.0.0.1"))
        fixed = RawSpoofer(probe_source=packed("198.18.1.1"))
        self.assertEqual(fixed._source_for(packed("127.0.0.1")), packed("198.18.1.1"))
        self.assertEqual(fixed._source_for(packed("::1")), packed("::1"))

    def test_a_failed_send_is_counted_not_raised(self) -> None:
        spoofer = RawSpoofer()

        class Broken:
            def sendto(self, data: bytes, address: tuple) -> int:
                raise PermissionError(1, "Operation not permitted")

        spoofer._sockets[4] = Broken()
        spoofer.send_udp(packed("198.19.1.1"), 1, packed("127.0.0.1"), 2, b"x")
        self.assertEqual((spoofer.sent, spoofer.failed), (0, 1))
        self.assertEqual(len(self.flushLoggedErrors()), 0)
