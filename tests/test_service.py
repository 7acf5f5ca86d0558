"""makeService wires the real parts: a packet through the fake queue reaches the engine, timers
run locks and the store, the plugin is found by twistd."""

from pathlib import Path

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from p2pwall.options import Options
from p2pwall.packet import Hook, Verdict
from p2pwall.service import (
    LOCAL_ADDRESSES_INTERVAL,
    StoreService,
    makeService,
    prune_interval,
    tick_interval,
)
from p2pwall.store import StoreFile
from p2pwall.testing import (
    FakeKernelQueue,
    RecordingSpoofer,
    make_engine,
    packed,
    tcp,
    udp,
)

HELLO = b"\x27\x00\x00\x00\x29\x80KaZaA\x00"


class ServiceTests(SynchronousTestCase):
    def build(self, *argv: str, on_bind=None):
        options = Options()
        options.parseOptions(
            ["--green", "198.18.1.0/24", "--control", "tcp:0:interface=127.0.0.1", *argv]
        )
        self.reactor = MemoryReactorClock()
        self.reactor.advance(1_000_000)
        self.source = FakeKernelQueue()
        self.spoofer = RecordingSpoofer()

        def source() -> FakeKernelQueue:
            if on_bind is not None:
                on_bind(service)
            return self.source

        service = makeService(options, self.reactor, source, self.spoofer)
        service.privilegedStartService()
        service.startService()
        self.addCleanup(service.stopService)
        return service

    def read(self) -> None:
        """What the reactor does when the queue's fd is readable."""
        (reader,) = [r for r in self.reactor.getReaders() if r.fileno() == self.source.fileno()]
        reader.doRead()

    def test_queue_to_engine_to_verdict(self) -> None:
        service = self.build("-t", "10")
        hello = self.source.queue(udp("198.18.1.10", "198.19.1.1", 1214, 2000, HELLO))
        web = self.source.queue(tcp("198.18.1.10", "198.19.0.80", 4000, 80))
        self.read()
        self.assertEqual(
            (self.source.verdict(hello), self.source.verdict(web)), (Verdict.DROP, Verdict.DROP)
        )
        self.assertEqual(len(self.spoofer.sent), 1)
        self.reactor.pump([0.5] * 22)
        web_again = self.source.queue(tcp("198.18.1.10", "198.19.0.80", 4001, 80))
        self.read()
        self.assertEqual(self.source.verdict(web_again), Verdict.ACCEPT)
        self.assertEqual(service.engine.stats["probes_sent"], 1)

    def test_stop_releases_the_queue_and_the_raw_sockets(self) -> None:
        service = self.build()
        self.assertEqual(self.spoofer.state, "open")
        service.stopService()
        self.assertTrue(self.source.closed)
        self.assertEqual(self.spoofer.state, "closed")

    def test_store_file_loaded_at_start_and_written_at_stop(self) -> None:
        store = Path(self.mktemp())
        store.write_text("198.19.1.1 1214 * udp 999990\n")
        service = self.build("-f", str(store))
        self.assertIn((packed("198.19.1.1"), 1214, b""), service.engine.blocks)
        service.engine.learn(packed("198.19.1.2"), 3000, b"", "udp")
        service.stopService()
        lines = store.read_text().splitlines()
        self.assertEqual(lines[0][0], "#")
        self.assertEqual(
            sorted(line.split()[0] for line in lines[1:]), ["198.19.1.1", "198.19.1.2"]
        )

    def test_store_written_on_its_timer(self) -> None:
        store = Path(self.mktemp())
        service = self.build("-f", str(store), "--store-interval", "5")
        service.engine.learn(packed("198.19.1.3"), 0, b"", "http")
        self.assertFalse(store.exists() and "198.19.1.3" in store.read_text())
        self.reactor.advance(5)
        self.assertIn("198.19.1.3 * * http", store.read_text())

    def test_store_is_loaded_before_the_queue_is_bound(self) -> None:
        store = Path(self.mktemp())
        store.write_text("198.19.1.1 1214 * udp 999990\n")
        at_bind = []
        self.build(
            "-f",
            str(store),
            on_bind=lambda service: at_bind.append(len(service.engine.blocks)),
        )
        self.assertEqual(at_bind, [1])

    def test_store_written_only_when_the_table_changed(self) -> None:
        store = Path(self.mktemp())
        store.write_text("198.19.1.1 1214 * udp 999990\n")
        service = self.build("-f", str(store), "--store-interval", "5")
        (saver,) = [s for s in service if isinstance(s, StoreService)]
        writes = []
        write = saver.store.write
        saver.store.write = lambda snapshot, now: writes.append(now) or write(snapshot, now)
        self.reactor.pump([5] * 3)
        self.assertEqual(writes, [])
        self.assertEqual(store.read_text(), "198.19.1.1 1214 * udp 999990\n")
        service.engine.learn(packed("198.19.1.2"), 1214, b"", "udp")
        self.reactor.advance(5)
        self.assertEqual(len(writes), 1)
        # Last-seen refreshes alone: written every 10th interval, and at the stop.
        service.engine.blocks.match(packed("198.19.1.1"), 1214, b"", self.reactor.seconds())
        self.reactor.pump([5] * 9)
        self.assertEqual(len(writes), 1)
        self.reactor.advance(5)
        self.assertEqual(len(writes), 2)
        self.assertIn(f"198.19.1.1 1214 * udp {self.reactor.seconds() - 50:.0f}", store.read_text())
        self.reactor.advance(5)
        service.stopService()
        self.assertEqual(len(writes), 2)
        service.engine.blocks.match(packed("198.19.1.2"), 1214, b"", self.reactor.seconds())
        service.stopService()
        self.assertEqual(len(writes), 3)

    def test_failed_store_write_is_tried_again(self) -> None:
        store = Path(self.mktemp()) / "peers"  # no such directory yet
        service = self.build("-f", str(store), "--store-interval", "5")
        service.engine.learn(packed("198.19.1.3"), 0, b"", "http")
        self.reactor.advance(5)
        self.assertFalse(store.exists())
        store.parent.mkdir()
        self.reactor.advance(5)
        self.assertIn("198.19.1.3 * * http", store.read_text())

    def test_learned_blocks_age_without_a_store_file(self) -> None:
        service = self.build("--store-max-age", "100")
        engine = service.engine
        engine.learn(packed("198.19.1.5"), 1214, b"", "udp")
        engine.block(packed("198.19.1.6"))
        self.reactor.pump([10] * 6)
        engine.learn(packed("198.19.1.7"), 1214, b"", "udp")
        self.reactor.pump([10] * 5)
        self.assertEqual(
            {key[0] for key, _ in engine.blocks.items()},
            {packed("198.19.1.6"), packed("198.19.1.7")},
        )
        self.reactor.pump([10] * 6)
        self.assertEqual({key[0] for key, _ in engine.blocks.items()}, {packed("198.19.1.6")})

    def test_prune_interval(self) -> None:
        self.assertEqual(prune_interval(7 * 86400), 3600.0)
        self.assertEqual(prune_interval(100), 10.0)

    def test_client_directory(self) -> None:
        directory = Path(self.mktemp())
        service = self.build("-c", str(directory), "-t", "5")
        self.source.queue(udp("198.18.1.10", "198.19.1.1", 1214, 2000, HELLO), Hook.FORWARD)
        self.read()
        self.assertEqual([p.name for p in directory.iterdir()], ["198.18.1.10"])
        self.reactor.pump([0.5] * 12)
        self.assertEqual(list(directory.iterdir()), [])
        self.assertEqual(service.engine.stats["clients_released"], 1)

    def test_the_gateways_own_addresses_are_read_at_start_and_on_a_timer(self) -> None:
        service = self.build()
        self.assertIn(packed("127.0.0.1"), service.engine.local)  # lo is in every namespace
        service.engine.local = frozenset()
        self.reactor.advance(LOCAL_ADDRESSES_INTERVAL)
        self.assertIn(packed("127.0.0.1"), service.engine.local)

    def test_tick_interval(self) -> None:
        self.assertEqual(tick_interval(120), 1.0)
        self.assertEqual(tick_interval(4), 0.4)
        self.assertEqual(tick_interval(0.1), 0.05)
        self.assertEqual(tick_interval(0), 1.0)


class StoreServiceTests(SynchronousTestCase):
    def test_writes_run_one_at_a_time_off_the_reactor_and_the_stop_waits(self) -> None:
        path = Path(self.mktemp())
        clock = Clock()
        clock.advance(1000)
        engine = make_engine(clock)
        runs: list[tuple] = []

        def run(work, *args) -> Deferred:
            runs.append((work, args, Deferred()))
            return runs[-1][2]

        def finish(index: int) -> None:
            work, args, done = runs[index]
            done.callback(work(*args))

        def peers() -> list[str]:
            return [line.split()[0] for line in path.read_text().splitlines()[1:]]

        service = StoreService(StoreFile(path, 86400), engine, 5, clock, run=run)
        service.privilegedStartService()
        service.startService()
        engine.learn(packed("198.19.1.1"), 1214, b"", "udp")
        clock.advance(5)
        self.assertEqual(len(runs), 1)
        self.assertFalse(path.exists())  # the runner writes, not the timer's turn
        engine.learn(packed("198.19.1.2"), 1214, b"", "udp")
        clock.advance(5)
        self.assertEqual(len(runs), 1)
        stopped = service.stopService()
        self.assertNoResult(stopped)
        finish(0)
        self.assertEqual(peers(), ["198.19.1.1"])  # the snapshot of the first turn
        self.assertEqual(len(runs), 2)
        self.assertNoResult(stopped)
        finish(1)
        self.successResultOf(stopped)
        self.assertEqual(peers(), ["198.19.1.1", "198.19.1.2"])


class PluginTests(SynchronousTestCase):
    def test_twistd_finds_the_plugin(self) -> None:
        from twisted.application.service import IServiceMaker
        from twisted.plugin import getPlugins

        makers = {maker.tapname: maker for maker in getPlugins(IServiceMaker)}
        self.assertIn("p2pwall", makers)
        self.assertIs(makers["p2pwall"].options, Options)


class TimerTests(SynchronousTestCase):
    def test_a_failing_run_is_logged_and_the_timer_goes_on(self) -> None:
        from twisted.internet.task import Clock

        from p2pwall.service import timer

        clock = Clock()
        runs: list[int] = []

        def flaky() -> None:
            runs.append(1)
            if len(runs) == 1:
                raise RuntimeError("disk full")

        service = timer(1.0, flaky, clock)
        service.startService()
        self.addCleanup(service.stopService)
        clock.pump([1.0] * 3)
        self.assertEqual(len(runs), 4)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
