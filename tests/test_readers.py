"""One contract for both queue readers, each over its fake transport (``FakeKernelQueue`` for the
native reader, ``FakeNetfilterQueue`` for the package's): every packet gets exactly one verdict,
the failure verdict when deciding raises, at most a budget of packets per reactor turn,
undecodable and cut packets accepted and counted, MAC, hook and input interface passed on, and
closing detaches from the queue."""

from __future__ import annotations

import errno
import struct
from itertools import pairwise

from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from p2pwall import netlink
from p2pwall.handler import PacketHandler
from p2pwall.interfaces import IPacketHandler
from p2pwall.nfq_package import NetfilterQueueReader
from p2pwall.nfqueue import NativeReader, QueueReader
from p2pwall.packet import Hook, Packet, Verdict
from p2pwall.testing import FakeKernelQueue, FakeNetfilterQueue, tcp, udp

ACCEPT, DROP = Verdict.ACCEPT, Verdict.DROP
MAC = b"\x02\x00\x00\x00\x00\x07"
STATS = {"reader_errors", "reader_undecoded", "reader_cut", "reader_enobufs", "reader_refused"}


def datagram(dport: int, payload: bytes = b"") -> bytes:
    return udp("198.18.1.10", "198.19.1.1", 5, dport, payload)


def error_report(code: int) -> bytes:
    """The kernel's answer to a message it refused (errno ``code``; 0: an ack)."""
    header = struct.pack("=IHHII", 36, netlink.NLMSG_ERROR, 0, 0, 0)
    return header + struct.pack("=i", -code) + bytes(16)


class FlakySocket:
    """A socket whose ``recv`` raises ``errors`` first."""

    def __init__(self, sock, errors: list[OSError]) -> None:
        self._sock = sock
        self.errors = errors

    def recv(self, *args: int) -> bytes:
        if self.errors:
            raise self.errors.pop(0)
        return self._sock.recv(*args)

    def close(self) -> None:
        self._sock.close()


class Transport:
    """What a contract test needs from a reader's fake transport."""

    # Whether a 4,528-byte packet arrives cut.
    cuts_long_packets: bool

    def reader(self, handler: PacketHandler, reactor, budget: int) -> QueueReader:
        raise NotImplementedError

    def queue(self, data: bytes, hook: int, hw: bytes | None, indev: int) -> int:
        raise NotImplementedError

    def send_raw(self, message: bytes) -> None:
        raise NotImplementedError

    def verdict(self, packet_id: int) -> Verdict | None:
        raise NotImplementedError

    def held(self) -> dict[int, bytes]:
        raise NotImplementedError

    def fail_reads(self, reader: QueueReader, errors: list[OSError]) -> None:
        raise NotImplementedError

    def detached(self) -> bool:
        raise NotImplementedError


class NativeTransport(Transport):
    cuts_long_packets = False
    copy_range = NativeReader.copy_range

    def __init__(self) -> None:
        self.queue_ = FakeKernelQueue(3)

    def reader(self, handler, reactor, budget):
        return NativeReader(self.queue_, handler, reactor, budget=budget, name="NFQUEUE 3")

    def queue(self, data, hook, hw, indev):
        return self.queue_.queue(data, hook, hw, indev=indev)

    def send_raw(self, message):
        self.queue_.send_raw(message)

    def verdict(self, packet_id):
        return self.queue_.verdict(packet_id)

    def held(self):
        self.assert_no_repeats()
        return self.queue_.held

    def assert_no_repeats(self) -> None:
        assert self.queue_.refused == [], f"verdicts for packets not held: {self.queue_.refused}"

    def fail_reads(self, reader, errors):
        self.queue_.errors.extend(errors)

    def detached(self):
        return self.queue_.closed

    def close(self) -> None:
        if not self.queue_.closed:
            self.queue_.close()


class PackageTransport(Transport):
    cuts_long_packets = True
    copy_range = NetfilterQueueReader.copy_range

    def __init__(self) -> None:
        self.nfq = FakeNetfilterQueue()

    def reader(self, handler, reactor, budget):
        return NetfilterQueueReader(self.nfq, 3, handler, reactor, budget=budget, name="NFQUEUE 3")

    def queue(self, data, hook, hw, indev):
        return self.nfq.queue(data, hook, hw, indev)

    def send_raw(self, message):
        self.nfq.send_raw(message)

    def verdict(self, packet_id):
        return self.nfq.verdict(packet_id)

    def held(self):
        return self.nfq.held

    def fail_reads(self, reader, errors):
        reader._socket._sock = FlakySocket(reader._socket._sock, errors)

    def detached(self):
        return self.nfq.unbound

    def close(self) -> None:
        self.nfq.unbind()


class ReaderContract:
    """The tests; a subclass names the transport."""

    transport_type: type

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.transport = self.transport_type()
        self.addCleanup(self.transport.close)
        self.seen: list[tuple[Packet, int]] = []

    def record(self, packet: Packet, hook: int) -> Verdict:
        self.seen.append((packet, hook))
        return DROP if packet.dport == 1214 else ACCEPT

    def reader(self, decide=None, failure_verdict=ACCEPT, budget=256) -> QueueReader:
        handler = PacketHandler(
            decide or self.record, failure_verdict, self.transport_type.copy_range
        )
        reader = self.transport.reader(handler, self.reactor, budget)
        self.addCleanup(reader.close)
        return reader

    def queue(self, data: bytes, hook: int = Hook.FORWARD, hw=None, indev: int = 0) -> int:
        return self.transport.queue(data, hook, hw, indev)

    def verdicts(self, ids: list[int]) -> list[Verdict | None]:
        return [self.transport.verdict(packet_id) for packet_id in ids]

    def test_every_packet_gets_one_verdict_the_decision(self) -> None:
        reader = self.reader()
        ports = [1214 if n % 3 == 0 else 80 for n in range(10)]
        ids = [self.queue(datagram(port)) for port in ports]
        reader.doRead()
        self.assertEqual(self.verdicts(ids), [DROP if p == 1214 else ACCEPT for p in ports])
        self.assertEqual(self.transport.held(), {})
        self.assertEqual(len(self.seen), 10)

    def test_a_failing_decision_gets_the_failure_verdict_and_reading_goes_on(self) -> None:
        def explode(packet: Packet, hook: int) -> Verdict:
            if packet.dport == 81:
                raise ZeroDivisionError("engine bug")
            return ACCEPT

        reader = self.reader(explode)
        for errors, failure in enumerate((DROP, ACCEPT), 1):
            reader.handler.failure_verdict = failure
            ids = [self.queue(tcp("198.18.1.10", "198.19.1.1", 5, p)) for p in (81, 80, 81)]
            reader.doRead()
            self.assertEqual(self.verdicts(ids), [failure, ACCEPT, failure])
            self.assertEqual(reader.stats()["reader_errors"], 2 * errors)
            self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 2)
            self.assertEqual(self.transport.held(), {})

    def test_a_flood_is_read_a_budget_at_a_time(self) -> None:
        reader = self.reader(budget=10)
        ids = [self.queue(datagram(1214 if n % 2 else 80)) for n in range(25)]
        for decided in (10, 20, 25, 25):
            reader.doRead()
            self.assertEqual((len(self.seen), len(self.transport.held())), (decided, 25 - decided))
        self.assertEqual(self.verdicts(ids), [DROP if n % 2 else ACCEPT for n in range(25)])

    def test_undecodable_packets_are_accepted_without_asking_and_counted(self) -> None:
        reader = self.reader()
        junk = self.queue(b"\x45garbage", Hook.FORWARD)
        reader.doRead()
        self.assertEqual((self.transport.verdict(junk), self.seen), (ACCEPT, []))
        self.assertEqual(reader.stats()["reader_undecoded"], 1)

    def test_mac_hook_and_input_interface_are_passed_on(self) -> None:
        reader = self.reader()
        self.queue(datagram(6), Hook.INPUT, hw=MAC, indev=7)
        self.queue(datagram(6), Hook.FORWARD)
        reader.doRead()
        self.assertEqual(
            [(packet.mac, hook, packet.indev) for packet, hook in self.seen],
            [(MAC, Hook.INPUT, 7), (None, Hook.FORWARD, 0)],
        )

    def test_a_dns_answer_longer_than_the_copy_arrives_cut_or_whole(self) -> None:
        """NetfilterQueue copies 4,016 bytes: the rest of a long answer is missing, so it is
        counted and decided on its headers, its payload never read; the native reader copies it
        whole."""
        reader = self.reader(failure_verdict=DROP)
        answer = udp("198.19.0.53", "198.18.1.10", 53, 1214, bytes(4500))
        packet_id = self.queue(answer, Hook.FORWARD, hw=MAC, indev=2)
        with capturedLogs() as events:
            reader.doRead()
        stats = reader.stats()
        if self.transport.cuts_long_packets:
            self.assertEqual([len(packet.payload) for packet, _ in self.seen], [0])
            self.assertEqual(stats["reader_cut"], 1)
            self.assertIn("a packet arrived cut to 4016 bytes", formatEvent(events[0]))
        else:
            self.assertEqual([len(packet.payload) for packet, _ in self.seen], [4500])
            self.assertEqual((stats["reader_cut"], events), (0, []))
        self.assertEqual(len(self.seen), 1)
        self.assertEqual(self.transport.verdict(packet_id), DROP, "decided, cut or whole")
        self.assertEqual((stats["reader_errors"], stats["reader_undecoded"]), (0, 0))

    def test_enobufs_is_counted_and_reading_goes_on(self) -> None:
        reader = self.reader()
        packet_id = self.queue(datagram(80))
        self.transport.fail_reads(reader, [OSError(errno.ENOBUFS, "No buffer space available")])
        reader.doRead()
        self.assertEqual(self.transport.verdict(packet_id), ACCEPT)
        self.assertEqual(
            {key: value for key, value in reader.stats().items() if value}, {"reader_enobufs": 1}
        )

    def test_a_read_error_is_logged_and_counted_and_the_next_turn_reads_on(self) -> None:
        reader = self.reader()
        packet_id = self.queue(datagram(6))
        self.transport.fail_reads(reader, [OSError(errno.EBADF, "Bad file descriptor")])
        with capturedLogs() as events:
            reader.doRead()
        self.assertEqual((reader.stats()["reader_errors"], self.transport.verdict(packet_id)),
                         (1, None))  # fmt: skip
        self.assertEqual(
            [formatEvent(event) for event in events],
            ["reading NFQUEUE 3 failed: [Errno 9] Bad file descriptor"],
        )
        reader.doRead()
        self.assertEqual(self.transport.verdict(packet_id), ACCEPT)

    def test_kernel_error_reports_are_counted_and_eperm_said_loudly_once(self) -> None:
        reader = self.reader()
        for code in (0, errno.ENOENT, errno.EPERM, errno.EPERM):
            self.transport.send_raw(error_report(code))
        packet_id = self.queue(datagram(6))
        with capturedLogs() as events:
            reader.doRead()
        stats = reader.stats()
        self.assertEqual((stats["reader_errors"], stats["reader_refused"]), (3, 2))
        self.assertEqual(
            [(event["log_level"], formatEvent(event)) for event in events],
            [
                (LogLevel.error, "NFQUEUE 3 refused a message: No such file or directory"),
                (
                    LogLevel.critical,
                    "NFQUEUE 3 refuses our verdicts (EPERM): the daemon lacks CAP_NET_ADMIN; "
                    "queued packets are held and the green hosts are cut off",
                ),
            ],
        )
        self.assertEqual(self.transport.verdict(packet_id), ACCEPT)

    def test_stats_name_every_counter(self) -> None:
        self.assertEqual(set(self.reader().stats()), STATS)

    def test_reads_from_the_reactor_and_close_detaches_once(self) -> None:
        reader = self.reader()
        fd = reader.fileno()
        self.assertGreaterEqual(fd, 0)
        reader.startReading()
        self.assertIn(reader, self.reactor.getReaders())
        reader.close()
        reader.close()
        self.assertTrue(self.transport.detached())
        self.assertNotIn(reader, self.reactor.getReaders())
        self.assertEqual(reader.fileno(), -1)

    def test_the_handler_provides_its_interface(self) -> None:
        verifyObject(IPacketHandler, self.reader().handler)


class NativeReaderContractTests(ReaderContract, SynchronousTestCase):
    transport_type = NativeTransport


class NetfilterQueueReaderContractTests(ReaderContract, SynchronousTestCase):
    transport_type = PackageTransport


class ReactorTurnContract:
    """On the real (level-triggered) reactor, a flood is read a budget at a time, and timers
    run between the batches."""

    timeout = 20
    transport_type: type

    def test_timers_run_between_batches(self) -> None:
        from twisted.internet import reactor

        transport = self.transport_type()
        self.addCleanup(transport.close)
        seen: list[Packet] = []

        def decide(packet: Packet, hook: int) -> Verdict:
            seen.append(packet)
            return ACCEPT

        handler = PacketHandler(decide, ACCEPT, transport.copy_range)
        reader = transport.reader(handler, reactor, 8)
        self.addCleanup(reader.close)
        flood = [transport.queue(datagram(n), Hook.FORWARD, None, 0) for n in range(60)]

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
            self.assertEqual([transport.verdict(n) for n in flood], [ACCEPT] * len(flood))
            steps = [after - before for before, after in pairwise(progress)]
            self.assertLessEqual(max(steps), 8)
            self.assertGreater(len([p for p in progress if 0 < p < len(flood)]), 4)
            self.assertEqual(reader.stats()["reader_errors"], 0)

        return done.addCallback(check)


class NativeReactorTurnTests(ReactorTurnContract, TestCase):
    transport_type = NativeTransport


class NetfilterQueueReactorTurnTests(ReactorTurnContract, TestCase):
    transport_type = PackageTransport
