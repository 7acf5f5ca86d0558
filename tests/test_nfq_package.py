"""What only the NetfilterQueue reader does (the contract both readers share is in
test_readers): it reads messages longer than the package's 4,096-byte buffer whole, answers a
packet without payload with the failure verdict, and takes an Ethernet MAC from the package's
8-byte field."""

from __future__ import annotations

from twisted.internet.testing import MemoryReactorClock
from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from p2pwall import netlink
from p2pwall.handler import PacketHandler
from p2pwall.nfq_package import COPY_RANGE, NetfilterQueueReader
from p2pwall.packet import Packet, Verdict
from p2pwall.testing import FakeNetfilterQueue, udp

ACCEPT, DROP = Verdict.ACCEPT, Verdict.DROP


class NetfilterQueueReaderTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.nfq = FakeNetfilterQueue()
        self.seen: list[Packet] = []
        handler = PacketHandler(self.record, DROP, COPY_RANGE)
        self.reader = NetfilterQueueReader(self.nfq, 0, handler, MemoryReactorClock())
        self.addCleanup(self.reader.close)

    def record(self, packet: Packet, hook: int) -> Verdict:
        self.seen.append(packet)
        return ACCEPT

    def test_a_message_longer_than_the_packages_buffer_is_read_whole(self) -> None:
        """A cut copy plus the attributes the kernel adds to a forwarded packet (input and
        output interface, MAC, timestamp, mark) passes 4,096 bytes: cut by ``recv``, the library
        would drop the message and its packet would wait for ever."""
        data = udp("198.19.0.53", "198.18.1.10", 53, 4000, bytes(4500))[:COPY_RANGE]
        attributes = [
            netlink.attribute(netlink.NFQA_PACKET_HDR, b"\0\0\0\x01\x08\0\x02"),
            netlink.attribute(netlink.NFQA_IFINDEX_INDEV, b"\0\0\0\x02"),
            netlink.attribute(6, b"\0\0\0\x03"),  # NFQA_IFINDEX_OUTDEV
            netlink.attribute(netlink.NFQA_HWADDR, b"\0\x06\0\0\x02\0\0\0\0\x07\0\0"),
            netlink.attribute(3, b"\0\0\0\x09"),  # NFQA_MARK
            netlink.attribute(11, bytes(16)),  # NFQA_TIMESTAMP
            netlink.attribute(netlink.NFQA_PAYLOAD, data),
        ]
        message = netlink.message(netlink.MSG_PACKET, 0, b"".join(attributes))
        self.assertGreater(len(message), 4096)
        self.nfq.held[1] = data
        self.nfq.send_raw(message)
        with capturedLogs():
            self.reader.doRead()
        self.assertEqual((self.nfq.verdict(1), self.reader.stats()["reader_cut"]), (ACCEPT, 1))

    def test_a_packet_without_payload_gets_the_failure_verdict(self) -> None:
        empty = self.nfq.queue(b"")
        with capturedLogs() as events:
            self.reader.doRead()
        self.assertEqual((self.nfq.verdict(empty), self.seen), (DROP, []))
        self.assertEqual(self.reader.stats()["reader_errors"], 1)
        self.assertIn(
            "unreadable packet from nfqueue: Packet has no payload", formatEvent(events[0])
        )

    def test_the_mac_is_the_first_six_bytes_of_the_hardware_field(self) -> None:
        self.nfq.queue(udp("198.18.1.10", "198.19.1.1", 5, 6), hw=b"\x02\0\0\0\0\x07")
        self.reader.doRead()
        self.assertEqual([packet.mac for packet in self.seen], [b"\x02\0\0\0\0\x07"])
