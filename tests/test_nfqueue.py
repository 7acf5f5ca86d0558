"""The queue reader gives every packet exactly one verdict, whatever happens while deciding."""

from twisted.internet.testing import MemoryReactor
from twisted.trial.unittest import SynchronousTestCase

from p2pwall.nfqueue import QueueReader
from p2pwall.packet import Hook, Packet, Verdict
from p2pwall.testing import FakePacketSource, FakeQueuedPacket, tcp, udp


class QueueReaderTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = MemoryReactor()
        self.source = FakePacketSource()
        self.seen: list[tuple[Packet, int]] = []

    def reader(self, decide=None, **kwargs) -> QueueReader:
        def record(packet: Packet, hook: int) -> Verdict:
            self.seen.append((packet, hook))
            return Verdict.DROP if packet.dport == 1214 else Verdict.ACCEPT

        return QueueReader(3, decide or record, self.reactor, source=self.source, **kwargs)

    def test_binds_with_options_and_reads_from_the_reactor(self) -> None:
        reader = self.reader(max_len=77, sock_len=1 << 20)
        self.assertEqual(self.source.bound, (3, 77, 2, 0xFFFF, 1 << 20))
        reader.startReading()
        self.assertIn(reader, self.reactor.getReaders())
        self.assertEqual(reader.fileno(), FakePacketSource.fd)
        reader.close()
        self.assertTrue(self.source.unbound)
        self.assertNotIn(reader, self.reactor.getReaders())
        self.assertEqual(reader.fileno(), -1)

    def test_verdicts_follow_the_decision(self) -> None:
        reader = self.reader()
        drop = FakeQueuedPacket(udp("198.18.1.10", "198.19.1.1", 5, 1214), Hook.FORWARD)
        accept = FakeQueuedPacket(udp("198.18.1.10", "198.19.1.1", 5, 80), Hook.INPUT)
        self.source.queue(drop, accept)
        reader.doRead()
        self.assertEqual((drop.verdict, accept.verdict), ("drop", "accept"))
        self.assertEqual([hook for _, hook in self.seen], [Hook.FORWARD, Hook.INPUT])

    def test_undecodable_packets_are_accepted_without_asking(self) -> None:
        reader = self.reader()
        junk = FakeQueuedPacket(b"\x45garbage")
        self.source.queue(junk)
        reader.doRead()
        self.assertEqual(junk.verdict, "accept")
        self.assertEqual(self.seen, [])
        self.assertEqual(reader.undecoded, 1)

    def test_a_failing_decision_gets_the_failure_verdict_and_reading_goes_on(self) -> None:
        def explode(packet: Packet, hook: int) -> Verdict:
            raise ZeroDivisionError("engine bug")

        reader = self.reader(explode, failure_verdict=Verdict.DROP)
        first = FakeQueuedPacket(tcp("198.18.1.10", "198.19.1.1", 5, 80))
        second = FakeQueuedPacket(tcp("198.18.1.10", "198.19.1.1", 5, 81))
        self.source.queue(first, second)
        reader.doRead()
        self.assertEqual((first.verdict, second.verdict), ("drop", "drop"))
        self.assertEqual(reader.errors, 2)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 2)

    def test_mac_is_fetched_only_when_wanted(self) -> None:
        for want in (False, True):
            self.seen.clear()
            reader = self.reader(want_mac=want)
            self.source.queue(
                FakeQueuedPacket(udp("198.18.1.10", "198.19.1.1", 5, 6), hw=b"\x02" * 6)
            )
            reader.doRead()
            self.assertEqual(self.seen[0][0].mac, b"\x02" * 6 if want else None)

    def test_a_read_error_is_logged_not_raised(self) -> None:
        reader = self.reader()

        def broken(block: bool) -> None:
            raise OSError(105, "No buffer space available")

        self.source.run = broken
        reader.doRead()
        self.assertEqual(reader.errors, 1)
