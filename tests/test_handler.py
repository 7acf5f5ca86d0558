"""The packet handler tells a packet cut by the reader's copy from a whole one, IPv4 and IPv6
alike: a cut packet is decided on its headers with its payload unread; one that is not IP is not
decided at all."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from p2pwall.handler import PacketHandler, declared_size
from p2pwall.packet import Hook, Packet, Verdict
from p2pwall.testing import udp

COPY = 4016


class PacketHandlerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.seen: list[Packet] = []
        self.handler = PacketHandler(self.record, Verdict.DROP, COPY)

    def record(self, packet: Packet, hook: int) -> Verdict:
        self.seen.append(packet)
        return Verdict.DROP

    def handle(self, data: bytes) -> Verdict:
        return self.handler.handle(data, 0, len(data), Hook.FORWARD, None, 0)

    def test_cut_packets_of_either_family_are_decided_on_their_headers_unread(self) -> None:
        for src, dst in (("198.19.0.53", "198.18.1.10"), ("2001:2::53", "2001:2:1::10")):
            whole = udp(src, dst, 53, 4000, bytes(5000))
            self.assertEqual(declared_size(whole, 0, len(whole)), len(whole))
            self.assertEqual(self.handle(whole[:COPY]), Verdict.DROP, "a block still applies")
        self.assertEqual([(p.sport, p.dport, p.payload) for p in self.seen], [(53, 4000, b"")] * 2)
        self.assertEqual(self.handler.cut, 2)

    def test_a_packet_as_long_as_the_copy_is_whole_and_decided(self) -> None:
        exact = udp("198.19.0.53", "198.18.1.10", 53, 4000, bytes(COPY - 28))
        self.assertEqual(len(exact), COPY)
        self.assertEqual(self.handle(exact), Verdict.DROP)
        self.assertEqual((len(self.seen), self.handler.cut), (1, 0))

    def test_a_long_message_that_is_not_ip_is_undecoded(self) -> None:
        self.assertEqual(self.handle(b"\x00" * 5000), Verdict.ACCEPT)
        self.assertEqual((self.handler.undecoded, self.handler.cut, self.seen), (1, 0, []))
        self.assertEqual(declared_size(b"\x45\x00", 0, 2), 0)
