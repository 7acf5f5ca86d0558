"""The native reader's own behaviour (the contract both readers share is in test_readers): a
reactor turn's verdicts leave in one send, drops first then one batch accept, ids wrap, messages
the kernel should never send are counted, and verdicts whose send failed are retried from a
timer with a bounded back-off."""

import errno
import struct
from functools import partial
from itertools import pairwise

from twisted.internet.testing import MemoryReactorClock
from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from p2pwall import netlink
from p2pwall.handler import PacketHandler
from p2pwall.nfqueue import RETRY_FIRST, RETRY_MAX, NativeReader
from p2pwall.packet import Hook, Packet, Verdict
from p2pwall.testing import FakeKernelQueue, udp

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
        self.reactor = MemoryReactorClock()
        self.queue = CountingQueue()
        self.addCleanup(lambda: self.queue.closed or self.queue.close())
        self.seen: list[tuple[Packet, int]] = []

    def reader(self, failure_verdict: Verdict = ACCEPT, **kwargs) -> NativeReader:
        def record(packet: Packet, hook: int) -> Verdict:
            self.seen.append((packet, hook))
            return DROP if packet.dport == 1214 else ACCEPT

        handler = PacketHandler(record, failure_verdict)
        return NativeReader(self.queue, handler, self.reactor, **kwargs)

    def verdicts(self, ids: list[int]) -> list[Verdict | None]:
        return [self.queue.verdict(packet_id) for packet_id in ids]

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

    def test_a_cut_packet_message_gets_the_failure_verdict(self) -> None:
        reader = self.reader(failure_verdict=DROP)
        cut = self.queue.queue(datagram(80), cut=40)
        whole = self.queue.queue(datagram(80))
        with capturedLogs() as events:
            reader.doRead()
        self.assertEqual(self.verdicts([cut, whole]), [DROP, ACCEPT])
        self.assertIn("malformed message from nfqueue", formatEvent(events[0]))
        self.assertEqual(reader.errors, 1)

    def failing_sends(self, failures: int | None) -> list[float]:
        """The next ``failures`` verdict sends fail (``None``: all of them); returns the times
        of every send tried."""
        sends = partial(CountingQueue.set_verdicts, self.queue)
        tried: list[float] = []

        def flaky(drops: list[int], accept_through: int | None) -> None:
            nonlocal failures
            tried.append(self.reactor.seconds())
            if failures is None or failures > 0:
                failures = None if failures is None else failures - 1
                raise OSError(errno.ENOBUFS, "No buffer space available")
            sends(drops, accept_through)

        self.queue.set_verdicts = flaky
        return tried

    def test_verdicts_whose_send_failed_go_first_in_the_next_turn(self) -> None:
        reader = self.reader()
        self.failing_sends(1)
        first = [self.queue.queue(datagram(port)) for port in (1214, 80)]
        reader.doRead()
        self.assertEqual(self.verdicts(first), [None, None])
        later = self.queue.queue(datagram(1214))
        reader.doRead()
        self.assertEqual(self.queue.sends, [([first[0], later], first[1])])
        self.assertEqual(self.verdicts([*first, later]), [DROP, ACCEPT, DROP])
        self.assertEqual((reader.errors, self.queue.refused), (1, []))
        self.assertEqual(self.reactor.getDelayedCalls(), [], "nothing left to retry")

    def test_unsent_verdicts_are_retried_from_a_timer_when_no_packet_follows(self) -> None:
        reader = self.reader()
        tried = self.failing_sends(2)
        ids = [self.queue.queue(datagram(port)) for port in (1214, 80)]
        with capturedLogs() as events:
            reader.doRead()
            self.reactor.advance(RETRY_FIRST / 2)
            self.assertEqual(len(tried), 1)
            self.reactor.advance(RETRY_FIRST / 2)  # the timer's first try fails too
            self.assertEqual(self.verdicts(ids), [None, None])
            self.reactor.advance(2 * RETRY_FIRST)
        self.assertEqual(self.verdicts(ids), [DROP, ACCEPT])
        self.assertEqual(len(tried), 3)
        self.assertEqual(self.queue.sends, [([ids[0]], ids[1])])
        self.assertEqual(reader.errors, 2)
        self.assertEqual(
            [formatEvent(event) for event in events],
            ["sending verdicts failed, kept and retried: [Errno 105] No buffer space available"]
            * 2,
        )
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_the_retry_back_off_doubles_up_to_its_bound_and_starts_over_after_a_send(
        self,
    ) -> None:
        reader = self.reader()
        tried = self.failing_sends(None)
        self.queue.queue(datagram(80))
        with capturedLogs():
            reader.doRead()
            for _ in range(10):
                (retry,) = self.reactor.getDelayedCalls()
                self.reactor.advance(retry.getTime() - self.reactor.seconds())
        gaps = [round(after - before, 6) for before, after in pairwise(tried)]
        self.assertEqual(gaps, [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.0, 1.0, 1.0])
        self.assertEqual((RETRY_FIRST, RETRY_MAX), (0.01, 1.0))
        self.failing_sends(0)
        self.reactor.advance(RETRY_MAX)
        self.assertEqual(self.queue.held, {})
        self.failing_sends(1)
        self.queue.queue(datagram(80))
        with capturedLogs():
            reader.doRead()
        (retry,) = self.reactor.getDelayedCalls()
        self.assertAlmostEqual(retry.getTime() - self.reactor.seconds(), RETRY_FIRST)

    def test_closing_cancels_the_retry(self) -> None:
        reader = self.reader()
        self.failing_sends(None)
        self.queue.queue(datagram(80))
        with capturedLogs():
            reader.doRead()
        self.assertEqual(len(self.reactor.getDelayedCalls()), 1)
        reader.close()
        self.assertEqual(self.reactor.getDelayedCalls(), [])

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
        self.assertEqual((reader.errors, reader.handler.undecoded, self.queue.refused), (0, 0, []))

    def test_an_empty_queue_ends_a_read_without_verdicts(self) -> None:
        reader = self.reader()
        reader.doRead()
        self.assertEqual((self.queue.recvs, self.queue.sends, reader.errors), (1, [], 0))

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
