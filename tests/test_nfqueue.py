"""The queue reader gives every packet exactly one verdict, whatever happens while deciding,
and reads at most a budget of packets per reactor turn."""

import errno
import os
import socket
from itertools import pairwise

from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactor
from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase, TestCase

from p2pwall.nfqueue import QueueReader, netlink_socket
from p2pwall.packet import Hook, Packet, Verdict
from p2pwall.testing import FakeNetlinkSocket, FakePacketSource, FakeQueuedPacket, tcp, udp


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

    def test_a_flood_is_read_in_batches_of_the_budget(self) -> None:
        reader = self.reader(budget=10)
        flood = [
            FakeQueuedPacket(udp("198.18.1.10", "198.19.1.1", 5, 1214 if n % 2 else 80))
            for n in range(25)
        ]
        self.source.queue(*flood)
        socket = self.source.socket
        reader.doRead()
        self.assertEqual((len(self.seen), len(self.source.waiting), socket.recvs), (10, 15, 10))
        reader.doRead()
        self.assertEqual((len(self.seen), len(self.source.waiting), socket.recvs), (20, 5, 20))
        reader.doRead()  # the last 5, then EAGAIN from the socket itself
        self.assertEqual((len(self.seen), len(self.source.waiting), socket.recvs), (25, 0, 26))
        self.assertEqual(
            [packet.verdict for packet in flood],
            ["drop" if n % 2 else "accept" for n in range(25)],
        )
        self.assertEqual((reader.errors, reader.undecoded), (0, 0))

    def test_eagain_on_an_empty_queue_ends_a_read(self) -> None:
        reader = self.reader()
        reader.doRead()
        self.assertEqual((self.source.socket.recvs, reader.errors), (1, 0))
        self.assertEqual(self.seen, [])

    def test_a_read_error_is_logged_and_counted_not_raised(self) -> None:
        reader = self.reader()
        packet = FakeQueuedPacket(udp("198.18.1.10", "198.19.1.1", 5, 6))
        self.source.queue(packet)
        self.source.socket.errors.append(OSError(errno.EBADF, "Bad file descriptor"))
        with capturedLogs() as events:
            reader.doRead()
        self.assertEqual(reader.errors, 1)
        self.assertEqual(packet.verdict, None)
        self.assertEqual(
            [formatEvent(event) for event in events],
            ["reading queue 3 failed: [Errno 9] Bad file descriptor"],
        )
        reader.doRead()  # the next turn goes on reading
        self.assertEqual(packet.verdict, "accept")

    def test_enobufs_is_counted_and_reading_goes_on(self) -> None:
        reader = self.reader()
        packets = [FakeQueuedPacket(udp("198.18.1.10", "198.19.1.1", 5, 6)) for _ in range(2)]
        self.source.queue(*packets)
        self.source.socket.errors.append(OSError(errno.ENOBUFS, "No buffer space available"))
        reader.doRead()
        self.assertEqual([packet.verdict for packet in packets], ["accept", "accept"])
        self.assertEqual((reader.overruns, reader.errors), (1, 0))
        self.assertEqual(
            reader.stats(), {"reader_errors": 0, "reader_undecoded": 0, "reader_enobufs": 1}
        )

    def test_close_closes_the_socket_once(self) -> None:
        reader = self.reader()
        reader.close()
        reader.close()
        self.assertTrue(self.source.socket.closed)
        self.assertTrue(self.source.unbound)

    def test_a_socket_that_cannot_be_opened_leaves_the_queue_unbound(self) -> None:
        def fail(fd: int):
            raise OSError(errno.EMFILE, "Too many open files")

        self.assertRaises(OSError, self.reader, open_socket=fail)
        self.assertTrue(self.source.unbound)


class NetlinkSocketTests(SynchronousTestCase):
    def test_a_nonblocking_dup_that_leaves_the_original_open(self) -> None:
        original = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)
        self.addCleanup(original.close)
        sock = netlink_socket(original.fileno())
        self.assertNotEqual(sock.fileno(), original.fileno())
        self.assertEqual((sock.family, sock.type), (socket.AF_NETLINK, socket.SOCK_RAW))
        self.assertFalse(sock.getblocking())
        self.assertRaises(BlockingIOError, sock.recv, 4096)
        sock.close()
        os.fstat(original.fileno())  # still open


class ReactorTurnTests(TestCase):
    """On the real (level-triggered) reactor, a flood is read a budget at a time, and timers
    run between the batches."""

    timeout = 20

    def test_timers_run_between_batches(self) -> None:
        from twisted.internet import reactor

        receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        receiver.bind(("127.0.0.1", 0))
        receiver.setblocking(False)
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(sender.close)
        source = FakePacketSource()
        source.fd = receiver.fileno()
        seen: list[Packet] = []

        def decide(packet: Packet, hook: int) -> Verdict:
            seen.append(packet)
            return Verdict.ACCEPT

        reader = QueueReader(
            3, decide, reactor, source=source, budget=8, open_socket=lambda fd: receiver
        )
        self.addCleanup(reader.close)
        flood = [FakeQueuedPacket(udp("198.18.1.10", "198.19.1.1", 5, n)) for n in range(60)]
        source.queue(*flood)
        for _ in flood:  # one datagram stands for one netlink message
            sender.sendto(FakeNetlinkSocket.MESSAGE, receiver.getsockname())

        progress: list[int] = []
        done: Deferred[None] = Deferred()

        def turn() -> None:
            progress.append(len(seen))
            if len(seen) < len(flood):
                reactor.callLater(0, turn)
            else:
                done.callback(None)

        reactor.callLater(0, turn)
        reader.startReading()

        def check(_: None) -> None:
            self.assertEqual([packet.verdict for packet in flood], ["accept"] * len(flood))
            steps = [after - before for before, after in pairwise(progress)]
            self.assertLessEqual(max(steps), 8)
            self.assertGreater(len([p for p in progress if 0 < p < len(flood)]), 4)
            self.assertEqual(reader.errors, 0)

        return done.addCallback(check)
