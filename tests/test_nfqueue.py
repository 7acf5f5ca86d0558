"""The queue reader gives every packet exactly one verdict, whatever happens while deciding,
sends a reactor turn's verdicts in one go, and reads at most a budget of packets per turn."""

import errno
import struct
from itertools import pairwise

from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactor
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase, TestCase

from p2pwall import netlink
from p2pwall.nfqueue import QueueReader
from p2pwall.packet import Hook, Packet, Verdict
from p2pwall.testing import FakeKernelQueue, tcp, udp

ACCEPT, DROP = Verdict.ACCEPT, Verdict.DROP


def datagram(dport: int) -> bytes:
    return udp("198.18.1.10", "198.19.1.1", 5, dport)


class CountingQueue(FakeKernelQueue):
    """Counts the verdict sends: one per reactor turn is the point of batching."""

    def __init__(self, first_id: int = 1) -> None:
        super().__init__(3, first_id)
        self.sends: list[tuple[list[int], int | None]] = []

    def set_verdicts(self, drops: list[int], accept_through: int | None) -> None:
        self.sends.append((list(drops), accept_through))
        super().set_verdicts(drops, accept_through)


class QueueReaderTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = MemoryReactor()
        self.queue = CountingQueue()
        self.addCleanup(lambda: self.queue.closed or self.queue.close())
        self.seen: list[tuple[Packet, int]] = []

    def reader(self, decide=None, **kwargs) -> QueueReader:
        def record(packet: Packet, hook: int) -> Verdict:
            self.seen.append((packet, hook))
            return DROP if packet.dport == 1214 else ACCEPT

        return QueueReader(self.queue, decide or record, self.reactor, **kwargs)

    def verdicts(self, ids: list[int]) -> list[Verdict | None]:
        return [self.queue.verdict(packet_id) for packet_id in ids]

    def test_reads_from_the_reactor_and_close_releases_the_queue_once(self) -> None:
        reader = self.reader()
        reader.startReading()
        self.assertIn(reader, self.reactor.getReaders())
        self.assertEqual(reader.fileno(), self.queue.fileno())
        reader.close()
        reader.close()
        self.assertTrue(self.queue.closed)
        self.assertNotIn(reader, self.reactor.getReaders())
        self.assertEqual(reader.fileno(), -1)

    def test_verdicts_follow_the_decision(self) -> None:
        reader = self.reader()
        drop = self.queue.queue(datagram(1214), Hook.FORWARD)
        accept = self.queue.queue(datagram(80), Hook.INPUT)
        reader.doRead()
        self.assertEqual(self.verdicts([drop, accept]), [DROP, ACCEPT])
        self.assertEqual([hook for _, hook in self.seen], [Hook.FORWARD, Hook.INPUT])
        self.assertEqual(self.queue.refused, [])

    def test_a_turn_sends_its_verdicts_at_once_drops_first_then_one_batch_accept(self) -> None:
        reader = self.reader()
        ids = [self.queue.queue(datagram(1214 if n % 3 == 0 else 80)) for n in range(10)]
        reader.doRead()
        self.assertEqual(self.queue.sends, [([ids[0], ids[3], ids[6], ids[9]], ids[8])])
        self.assertEqual(self.verdicts(ids), [DROP if n % 3 == 0 else ACCEPT for n in range(10)])
        self.assertEqual((self.queue.held, self.queue.refused), ({}, []))

    def test_packet_ids_wrapping_at_2_to_the_32(self) -> None:
        self.queue.close()
        self.queue = CountingQueue(first_id=2**32 - 2)
        reader = self.reader()
        ids = [self.queue.queue(datagram(port)) for port in (80, 1214, 80, 1214, 80)]
        self.assertEqual(ids, [2**32 - 2, 2**32 - 1, 0, 1, 2])
        reader.doRead()
        self.assertEqual(self.verdicts(ids), [ACCEPT, DROP, ACCEPT, DROP, ACCEPT])
        self.assertEqual((self.queue.held, self.queue.refused), ({}, []))

    def test_a_turn_of_drops_sends_no_batch_accept(self) -> None:
        """The kernel refuses a batch that matches nothing (ENOENT)."""
        reader = self.reader()
        ids = [self.queue.queue(datagram(1214)) for _ in range(3)]
        reader.doRead()
        self.assertEqual(self.queue.sends, [(ids, None)])
        self.assertEqual(self.queue.refused, [])

    def test_enobufs_is_counted_and_reading_goes_on(self) -> None:
        reader = self.reader()
        self.queue.errors.append(OSError(errno.ENOBUFS, "No buffer space available"))
        packet = self.queue.queue(datagram(80))
        reader.doRead()
        self.assertEqual(self.queue.verdict(packet), ACCEPT)
        self.assertEqual(reader.stats(), {
            "reader_errors": 0, "reader_undecoded": 0, "reader_enobufs": 1, "reader_refused": 0,
        })  # fmt: skip

    def test_a_cut_packet_message_gets_the_failure_verdict(self) -> None:
        reader = self.reader(failure_verdict=DROP)
        cut = self.queue.queue(datagram(80), cut=40)
        whole = self.queue.queue(datagram(80))
        with capturedLogs() as events:
            reader.doRead()
        self.assertEqual(self.verdicts([cut, whole]), [DROP, ACCEPT])
        self.assertIn("malformed message from nfqueue", formatEvent(events[0]))
        self.assertEqual(reader.errors, 1)

    def test_verdicts_whose_send_failed_go_first_in_the_next_turn(self) -> None:
        reader = self.reader()
        sends = self.queue.set_verdicts
        failures = [OSError(errno.ENOBUFS, "No buffer space available")]

        def flaky(drops: list[int], accept_through: int | None) -> None:
            if failures:
                raise failures.pop()
            sends(drops, accept_through)

        self.queue.set_verdicts = flaky
        first = [self.queue.queue(datagram(port)) for port in (1214, 80)]
        reader.doRead()
        self.assertEqual(self.verdicts(first), [None, None])
        later = self.queue.queue(datagram(1214))
        reader.doRead()
        self.assertEqual(self.queue.sends, [([first[0], later], first[1])])
        self.assertEqual(self.verdicts([*first, later]), [DROP, ACCEPT, DROP])
        self.assertEqual((reader.errors, self.queue.refused), (1, []))

    def test_undecodable_packets_are_accepted_without_asking(self) -> None:
        reader = self.reader()
        junk = self.queue.queue(b"\x45garbage")
        reader.doRead()
        self.assertEqual(self.queue.verdict(junk), ACCEPT)
        self.assertEqual(self.seen, [])
        self.assertEqual(reader.undecoded, 1)

    def test_a_failing_decision_gets_the_failure_verdict_and_reading_goes_on(self) -> None:
        def explode(packet: Packet, hook: int) -> Verdict:
            raise ZeroDivisionError("engine bug")

        reader = self.reader(explode, failure_verdict=DROP)
        ids = [self.queue.queue(tcp("198.18.1.10", "198.19.1.1", 5, port)) for port in (80, 81)]
        reader.doRead()
        self.assertEqual(self.verdicts(ids), [DROP, DROP])
        self.assertEqual(reader.errors, 2)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 2)

    def test_mac_is_passed_on_only_when_wanted(self) -> None:
        for want in (False, True):
            self.seen.clear()
            reader = self.reader(want_mac=want)
            self.queue.queue(datagram(6), hw=b"\x02\x00\x00\x00\x00\x07")
            reader.doRead()
            self.assertEqual(self.seen[0][0].mac, b"\x02\x00\x00\x00\x00\x07" if want else None)

    def test_the_input_interface_is_passed_on(self) -> None:
        reader = self.reader()
        self.queue.queue(datagram(6), indev=7)
        self.queue.queue(datagram(6))
        reader.doRead()
        self.assertEqual([packet.indev for packet, _hook in self.seen], [7, 0])

    def test_a_flood_is_read_in_batches_of_the_budget(self) -> None:
        reader = self.reader(budget=10)
        ids = [self.queue.queue(datagram(1214 if n % 2 else 80)) for n in range(25)]
        reader.doRead()
        self.assertEqual((len(self.seen), len(self.queue.held), self.queue.recvs), (10, 15, 10))
        reader.doRead()
        self.assertEqual((len(self.seen), len(self.queue.held), self.queue.recvs), (20, 5, 20))
        reader.doRead()  # the last 5, then EAGAIN from the socket itself
        self.assertEqual((len(self.seen), len(self.queue.held), self.queue.recvs), (25, 0, 26))
        self.assertEqual(len(self.queue.sends), 3)
        self.assertEqual(self.verdicts(ids), [DROP if n % 2 else ACCEPT for n in range(25)])
        self.assertEqual((reader.errors, reader.undecoded, self.queue.refused), (0, 0, []))

    def test_an_empty_queue_ends_a_read_without_verdicts(self) -> None:
        reader = self.reader()
        reader.doRead()
        self.assertEqual((self.queue.recvs, self.queue.sends, reader.errors), (1, [], 0))

    def test_a_read_error_is_logged_and_counted_not_raised(self) -> None:
        reader = self.reader()
        packet = self.queue.queue(datagram(6))
        self.queue.errors.append(OSError(errno.EBADF, "Bad file descriptor"))
        with capturedLogs() as events:
            reader.doRead()
        self.assertEqual((reader.errors, self.queue.verdict(packet)), (1, None))
        self.assertEqual(
            [formatEvent(event) for event in events],
            ["reading nfqueue failed: [Errno 9] Bad file descriptor"],
        )
        reader.doRead()  # the next turn goes on reading
        self.assertEqual(self.queue.verdict(packet), ACCEPT)

    def test_kernel_error_reports_are_counted_and_logged_acks_ignored(self) -> None:
        reader = self.reader(name="NFQUEUE 3")
        for code in (0, errno.ENOENT, 2**31 - 1):
            header = struct.pack("=IHHII", 36, netlink.NLMSG_ERROR, 0, 0, 0)
            self.queue.send_raw(header + struct.pack("=i", -code) + bytes(16))
        packet = self.queue.queue(datagram(6))
        with capturedLogs() as events:
            reader.doRead()
        self.assertEqual(reader.errors, 2)
        self.assertEqual(
            [formatEvent(event) for event in events],
            [
                "NFQUEUE 3 refused a message: No such file or directory",
                f"NFQUEUE 3 refused a message: {netlink.error_text(2**31 - 1)}",
            ],
        )
        self.assertEqual(self.queue.verdict(packet), ACCEPT)

    def test_refused_verdicts_are_counted_apart_and_said_loudly_once(self) -> None:
        reader = self.reader(name="NFQUEUE 3")
        for _ in range(3):
            header = struct.pack("=IHHII", 36, netlink.NLMSG_ERROR, 0, 0, 0)
            self.queue.send_raw(header + struct.pack("=i", -errno.EPERM) + bytes(16))
        with capturedLogs() as events:
            reader.doRead()
        self.assertEqual(
            (reader.refused, reader.errors, reader.stats()["reader_refused"]), (3, 3, 3)
        )
        (event,) = events
        self.assertEqual(event["log_level"], LogLevel.critical)
        self.assertIn("refuses our verdicts (EPERM)", formatEvent(event))

    def check_malformed_then_decided(self, junk: bytes) -> None:
        """``junk`` is counted and logged as malformed; the packet after it is decided."""
        reader = self.reader()
        self.queue.send_raw(junk)
        packet = self.queue.queue(datagram(6))
        with capturedLogs() as events:
            reader.doRead()
        self.assertEqual(reader.errors, 1)
        self.assertIn("malformed message from nfqueue", formatEvent(events[0]))
        self.assertEqual(self.queue.verdict(packet), ACCEPT)

    def test_a_malformed_message_is_counted_and_the_rest_decided(self) -> None:
        self.check_malformed_then_decided(
            netlink.packet_message(3, 99, Hook.FORWARD, datagram(6))[:30]
        )

    def test_a_cut_error_report_is_counted_and_the_rest_decided(self) -> None:
        # It claims 64 bytes and brings 36: past the header, so only the report walk sees it.
        self.check_malformed_then_decided(
            struct.pack("=IHHII", 64, netlink.NLMSG_ERROR, 0, 0, 0) + bytes(20)
        )

    def test_a_failed_verdict_send_is_counted_and_logged(self) -> None:
        def refuse(drops: list[int], accept_through: int | None) -> None:
            raise OSError(errno.ENOMEM, "Cannot allocate memory")

        reader = self.reader()
        self.queue.set_verdicts = refuse
        self.queue.queue(datagram(6))
        with capturedLogs() as events:
            reader.doRead()
        self.assertEqual(reader.errors, 1)
        self.assertEqual(
            [formatEvent(event) for event in events],
            ["sending verdicts failed, kept for the next turn: [Errno 12] Cannot allocate memory"],
        )


class ReactorTurnTests(TestCase):
    """On the real (level-triggered) reactor, a flood is read a budget at a time, and timers
    run between the batches."""

    timeout = 20

    def test_timers_run_between_batches(self) -> None:
        from twisted.internet import reactor

        queue = FakeKernelQueue(3)
        seen: list[Packet] = []

        def decide(packet: Packet, hook: int) -> Verdict:
            seen.append(packet)
            return ACCEPT

        reader = QueueReader(queue, decide, reactor, budget=8)
        self.addCleanup(reader.close)
        flood = [queue.queue(datagram(n)) for n in range(60)]

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
            self.assertEqual([queue.verdict(n) for n in flood], [ACCEPT] * len(flood))
            steps = [after - before for before, after in pairwise(progress)]
            self.assertLessEqual(max(steps), 8)
            self.assertGreater(len([p for p in progress if 0 < p < len(flood)]), 4)
            self.assertEqual((reader.errors, queue.refused), (0, []))

        return done.addCallback(check)
