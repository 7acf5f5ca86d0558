"""makeService wires the real parts: a packet through the fake queue reaches the engine, timers
run locks and the store, the plugin is found by twistd."""

import errno
import ipaddress
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from p2pwall import service as service_module
from p2pwall.daemon import StartFailed
from p2pwall.detectors import dns as dns_module
from p2pwall.errors import StartError
from p2pwall.hooks import CommandHooks
from p2pwall.kernel.elements import Element
from p2pwall.metrics import MetricsSite
from p2pwall.neighbours import KernelNeighbours
from p2pwall.options import Options
from p2pwall.packet import Hook, Verdict
from p2pwall.rtnetlink import LinkAddress
from p2pwall.service import (
    LOCAL_ADDRESSES_INTERVAL,
    StoreService,
    makeService,
    prune_interval,
    tick_interval,
)
from p2pwall.store import StoreFile
from p2pwall.testing import (
    ORIGINS,
    FakeKernelQueue,
    FakeKernelSets,
    FakeNetfilterQueue,
    RecordingSpoofer,
    ThreadsReactor,
    make_engine,
    packed,
    tcp,
    udp,
)

HELLO = b"\x27\x00\x00\x00\x29\x80KaZaA\x00"


class DaemonCase(SynchronousTestCase):
    """Builds and starts the daemon over fakes."""

    green = ("--green", "198.18.1.0/24")

    def build(self, *argv: str, on_bind=None, **kwargs):
        """The daemon over a fake queue, started; what it logged while starting in
        ``self.logged``."""
        options = Options()
        options.parseOptions([*self.green, "--control", "tcp:0:interface=127.0.0.1", *argv])
        self.reactor = ThreadsReactor()
        self.reactor.advance(1_000_000)
        self.source = FakeKernelQueue()
        self.spoofer = RecordingSpoofer()

        def source() -> FakeKernelQueue:
            if on_bind is not None:
                on_bind(service)
            return self.source

        service = makeService(options, self.reactor, source, self.spoofer, **kwargs)
        with capturedLogs() as self.logged:
            service.privilegedStartService()
            service.startService()
        self.addCleanup(service.stopService)
        return service

    def logged_text(self, level: LogLevel | None = None) -> list[str]:
        from twisted.logger import formatEvent

        return [formatEvent(e) for e in self.logged if level in (None, e["log_level"])]

    def read(self) -> None:
        """What the reactor does when the queue's fd is readable."""
        (reader,) = [r for r in self.reactor.getReaders() if r.fileno() == self.source.fileno()]
        reader.doRead()

    def start_line(self) -> str:
        """The start line stating the settings in effect."""
        (line,) = [t for t in self.logged_text(LogLevel.info) if t.startswith("p2pwall: green")]
        return line


class ServiceTests(DaemonCase):
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

    def test_store_lines_of_green_or_gateway_addresses_are_not_loaded(self) -> None:
        store = Path(self.mktemp())
        peers = ("198.19.1.1", "198.18.1.50", "127.0.0.1")  # outside, green, the gateway's
        store.write_text("".join(f"{peer} 1214 * udp 999990\n" for peer in peers))
        service = self.build("-f", str(store))
        self.assertEqual(
            [key for key, _ in service.engine.blocks.items()], [(packed("198.19.1.1"), 1214, b"")]
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
        seen = self.reactor.seconds() - 50  # an older version's origin name, written anew
        self.assertIn(f"198.19.1.1 1214 * fasttrack-udp {seen:.0f}", store.read_text())
        self.reactor.advance(5)
        service.stopService()
        self.assertEqual(len(writes), 2)
        service.engine.blocks.match(packed("198.19.1.2"), 1214, b"", self.reactor.seconds())
        service.stopService()
        self.assertEqual(len(writes), 3)

    def test_failed_store_write_is_tried_again(self) -> None:
        store = Path(self.mktemp()) / "peers"
        store.parent.mkdir()
        service = self.build("-f", str(store), "--store-interval", "5")
        store.parent.rmdir()  # gone while the daemon runs
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
        self.assertEqual(tick_interval(120), 0.1)
        self.assertEqual(tick_interval(0.8), 0.08)
        self.assertEqual(tick_interval(0.1), 0.05)
        self.assertEqual(tick_interval(0), 1.0)


class NetfilterQueueWiringTests(SynchronousTestCase):
    """``--reader netfilterqueue``: the package's queue, bound with the daemon's settings,
    feeds the same engine; stopping unbinds it; failures are one line."""

    def build(self, nfq) -> object:
        options = Options()
        options.parseOptions(["--green", "198.18.1.0/24", "--control", "", "-t", "10",
                              "--reader", "netfilterqueue", "-q", "3", "--max-queue-len", "77",
                              "-b", "65536"])  # fmt: skip
        self.reactor = ThreadsReactor()
        self.spoofer = RecordingSpoofer()
        return makeService(options, self.reactor, lambda: nfq, self.spoofer)

    def test_packets_through_the_package_reach_the_engine(self) -> None:
        nfq = FakeNetfilterQueue()
        service = self.build(nfq)
        with capturedLogs():
            service.privilegedStartService()
            service.startService()
        self.addCleanup(service.stopService)
        self.assertEqual(
            nfq.bound, {"queue_num": 3, "max_len": 77, "range": 4016, "sock_len": 65536}
        )
        hello = nfq.queue(udp("198.18.1.10", "198.19.1.1", 1214, 2000, HELLO))
        web = nfq.queue(tcp("198.18.1.10", "198.19.0.80", 4000, 80))
        (reader,) = [r for r in self.reactor.getReaders() if r.fileno() == nfq.get_fd()]
        reader.doRead()
        self.assertEqual((nfq.verdict(hello), nfq.verdict(web)), (Verdict.DROP, Verdict.DROP))
        self.assertEqual(len(self.spoofer.sent), 1)
        service.stopService()
        self.assertTrue(nfq.unbound)
        self.assertEqual(self.reactor.getReaders(), [])

    def test_a_refused_bind_is_one_line(self) -> None:
        service = self.build(FakeNetfilterQueue(refuse=OSError("Failed to create queue 3.")))
        with self.assertRaises(StartFailed) as caught:
            service.privilegedStartService()
        self.assertEqual(
            caught.exception.code,
            "cannot bind NFQUEUE 3: Failed to create queue 3. "
            "(it needs root and the nfnetlink_queue module)",
        )

    def test_without_the_package_the_start_fails_with_one_line(self) -> None:
        # None in sys.modules makes the import raise ImportError (the dict itself is changed:
        # the import system reads it, not the attribute).
        saved = sys.modules.pop("netfilterqueue", None)
        sys.modules["netfilterqueue"] = None  # type: ignore[assignment]

        def restore() -> None:
            del sys.modules["netfilterqueue"]
            if saved is not None:
                sys.modules["netfilterqueue"] = saved

        self.addCleanup(restore)
        options = Options()
        options.parseOptions(["--green", "198.18.1.0/24", "--control", "",
                              "--reader", "netfilterqueue"])  # fmt: skip
        service = makeService(options, ThreadsReactor(), None, RecordingSpoofer())
        with self.assertRaises(StartFailed) as caught:
            service.privilegedStartService()
        self.assertEqual(
            caught.exception.code,
            "--reader netfilterqueue needs the NetfilterQueue package (pip install "
            "NetfilterQueue; it builds against libnetfilter-queue-dev)",
        )


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

        service = StoreService(StoreFile(path, 86400, ORIGINS), engine, 5, clock, run=run)
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


def at(ifindex: int, ifname: str, interface: str) -> LinkAddress:
    return LinkAddress(ifindex, ifname, ipaddress.ip_interface(interface))


class NeighbourWiringTests(DaemonCase):
    """Every packet's MAC reaches the engine, which checks it against the neighbour table."""

    def test_a_hello_from_another_hosts_mac_locks_nobody(self) -> None:
        owner, other = bytes.fromhex("02fc00000010"), bytes.fromhex("02fc00000020")
        table = {packed("198.18.1.10"): owner, packed("198.18.1.20"): other}
        neighbours = KernelNeighbours(Clock(), read=lambda: table)
        service = self.build(neighbours=neighbours)
        engine = service.engine
        self.assertIs(engine.neighbours, neighbours)
        self.source.queue(udp("198.18.1.10", "198.19.1.1", 1214, 2000, HELLO), hw=other)
        self.read()
        self.assertEqual((engine.stats["forged_source"], len(engine.clients)), (1, 0))
        self.source.queue(udp("198.18.1.10", "198.19.1.1", 1214, 2000, HELLO), hw=owner)
        self.read()
        self.assertEqual(len(engine.clients), 1)

    def test_the_dns_detector_gets_the_budget(self) -> None:
        engine = self.build("--dns-budget", "4096").engine
        (dns,) = [d for d in engine.detectors if d.name == "dns"]
        self.assertEqual(dns._hosts.rate, 4096)

    def test_kernel_table_and_max_probes_by_default(self) -> None:
        engine = self.build("--max-probes", "7").engine
        self.assertIsInstance(engine.neighbours, KernelNeighbours)
        self.assertEqual(engine.max_probes, 7)


class StartLineTests(DaemonCase):
    """One line states the settings in effect; what protects less than expected is a warning."""

    def test_settings_in_effect(self) -> None:
        self.build("-t", "30", "-q", "3")
        line = self.start_line()
        for part in (
            "green networks 198.18.1.0/24;",
            "time lock 30 s;",
            "UDP blocking on;",
            "detectors fasttrack, bittorrent, dns; DNS patterns none (banned names only);",
            "queue 3 (reader native);",
            "store file none",
        ):
            self.assertIn(part, line)
        self.assertEqual(self.logged_text(LogLevel.warn), [])

    def test_udp_blocking_off_is_a_loud_warning(self) -> None:
        self.build("-n")
        self.assertIn("UDP blocking off (-n)", self.start_line())
        (warning,) = self.logged_text(LogLevel.warn)
        self.assertIn("WARNING: UDP blocking is OFF", warning)

    def test_default_green_is_a_loud_warning(self) -> None:
        self.green = ()
        self.build()
        (warning,) = self.logged_text(LogLevel.warn)
        self.assertIn("protecting only the private ranges (10.0.0.0/8, ", warning)


class ReadinessTests(DaemonCase):
    def test_systemd_hears_ready_once_the_queue_is_bound(self) -> None:
        """Type=notify: READY=1 on $NOTIFY_SOCKET after every service has started."""
        import socket

        path = os.path.join(self.mktemp() + ".d", "notify")
        os.makedirs(os.path.dirname(path))
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.addCleanup(listener.close)
        listener.bind(path)
        listener.setblocking(False)
        self.patch(os, "environ", {**os.environ, "NOTIFY_SOCKET": path})
        self.build("-q", "3")
        self.assertEqual(listener.recv(256), b"READY=1\nSTATUS=reading NFQUEUE 3")


class AdminOptionsWiringTests(DaemonCase):
    """--allow, --dry-run and the --on-lock/--on-release hooks reach the engine."""

    def test_allow_dry_run_and_hooks(self) -> None:
        service = self.build(
            "--allow", "198.18.1.10", "--allow", "2001:2::/48", "--dry-run",
            "--on-lock", "true", "--on-release", "sh -c 'exit 0'",
        )  # fmt: skip
        engine = service.engine
        self.assertIn(packed("198.18.1.10"), engine.allowed)
        self.assertIn(packed("2001:2::5"), engine.allowed)
        self.assertTrue(engine.dry_run)
        (hooks,) = [o for o in engine.observers if isinstance(o, CommandHooks)]
        self.assertEqual(hooks.on_release[1:], ("-c", "exit 0"))
        line = self.start_line()
        self.assertIn("DRY RUN", line)
        self.assertIn("allowed 198.18.1.10/32,2001:2::/48", line)
        self.assertIn("WARNING: dry run", " ".join(self.logged_text(LogLevel.warn)))

    def test_bad_values_are_usage_errors(self) -> None:
        for argv in (["--allow", "300.1.1.1"], ["--on-lock", "no-such-program-p2pwall"]):
            self.assertRaises(usage.UsageError, Options().parseOptions, argv)


class GreenInterfaceTests(DaemonCase):
    """--green-if: the LAN's own prefixes are green, whatever they are."""

    green = ("--green-if", "green0")
    kernel = [
        at(1, "lo", "127.0.0.1/8"),
        at(2, "wan0", "198.19.0.1/24"),
        at(3, "green0", "198.18.77.1/24"),
        at(3, "green0", "2001:2:0:77::1/64"),
    ]

    def test_a_lan_outside_the_private_ranges_is_protected(self) -> None:
        service = self.build("-t", "10", read_addresses=lambda: list(self.kernel))
        engine = service.engine
        self.assertEqual(engine.green_ifindexes, {3})
        self.assertIn("green interfaces green0 (--green-if)", self.start_line())
        self.assertIn("198.18.77.0/24,2001:2:0:77::/64,fe80::/10", self.start_line())
        hello = self.source.queue(udp("198.18.77.10", "198.19.1.1", 1214, 2000, HELLO))
        hello6 = self.source.queue(udp("2001:2:0:77::10", "2001:2:1::1", 1214, 2000, HELLO))
        self.read()
        self.assertEqual(self.source.verdict(hello), Verdict.DROP)
        self.assertEqual(self.source.verdict(hello6), Verdict.DROP)
        self.assertEqual(engine.stats["clients_locked"], 2)
        self.assertEqual(self.logged_text(LogLevel.warn), [])

    def test_a_missing_green_interface_warns_and_does_not_stop_the_start(self) -> None:
        service = self.build(read_addresses=lambda: self.kernel[:2])
        (warning,) = self.logged_text(LogLevel.warn)
        self.assertIn("green interface green0 does not exist or has no address", warning)
        self.assertTrue(service.running)
        self.assertIn("green interfaces none found (--green-if)", self.start_line())

    start_line = StartLineTests.start_line


class HangupTests(DaemonCase):
    def test_sighup_without_patterns_is_handled(self) -> None:
        previous = signal.getsignal(signal.SIGHUP)
        service = self.build()
        self.assertNotIn(signal.getsignal(signal.SIGHUP), (signal.SIG_DFL, signal.SIG_IGN))
        with capturedLogs() as logged:
            os.kill(os.getpid(), signal.SIGHUP)
        self.assertEqual(
            [e["log_format"] for e in logged], ["SIGHUP: nothing to reload (no -D patterns file)"]
        )
        self.assertTrue(service.running)
        service.stopService()
        self.assertEqual(signal.getsignal(signal.SIGHUP), previous)


class JsonEventsWiringTests(DaemonCase):
    def test_events_to_the_file_reopened_on_sighup(self) -> None:
        path = Path(self.mktemp())
        service = self.build("--json-events", str(path), "--json-classes", "c")
        self.source.queue(udp("198.18.1.10", "198.19.1.1", 1214, 2000, HELLO))
        self.read()
        (identified,) = [json.loads(line) for line in path.read_text().splitlines()]
        self.assertEqual(identified["class"], "c")
        self.assertEqual(identified["client"], "198.18.1.10")
        path.rename(path.with_suffix(".1"))
        with capturedLogs() as logged:
            os.kill(os.getpid(), signal.SIGHUP)
        self.assertEqual([formatEvent(e) for e in logged], [f"--json-events: reopened {path}"])
        service.engine.unlock(packed("198.18.1.10"))
        (cleared,) = [json.loads(line) for line in path.read_text().splitlines()]
        self.assertEqual(
            cleared["message"], "client 198.18.1.10 cleared: unlocked from the control port"
        )


class MetricsWiringTests(DaemonCase):
    def sites(self) -> list[tuple[int, str, MetricsSite]]:
        servers = self.reactor.tcpServers
        return [
            (port, where, site) for port, site, _, where in servers if isinstance(site, MetricsSite)
        ]

    def test_off_unless_asked(self) -> None:
        self.build()
        self.assertEqual(self.sites(), [])

    def test_on_loopback_with_the_daemons_counters(self) -> None:
        self.build("--metrics", "9120")
        ((port, interface, site),) = self.sites()
        self.assertEqual((port, interface), (9120, "127.0.0.1"))
        self.source.queue(udp("198.18.1.10", "198.19.1.1", 1214, 2000, HELLO))
        self.read()
        value = site.registry.get_sample_value
        self.assertEqual(value("p2pwall_verdicts_total", {"verdict": "drop", "protocol": "udp"}), 1)
        self.assertEqual(value("p2pwall_clients"), 1)
        self.assertEqual(value("p2pwall_reader_undecoded_total"), 0, "the bound reader's counters")
        self.assertEqual(value("p2pwall_start_time_seconds"), 1_000_000)


class StartFailureTests(SynchronousTestCase):
    """A ``StartError`` becomes ``StartFailed``: an ``Exception`` for twistd's status pipe, a
    ``SystemExit`` with the one line for the interpreter."""

    def make(self, source=FakeKernelQueue, **kwargs):
        options = Options()
        options.parseOptions(["--green", "198.18.1.0/24", "--control", ""])
        return makeService(options, ThreadsReactor(), source, RecordingSpoofer(), **kwargs)

    def assertOneLine(self, failed: StartFailed, text: str) -> None:
        self.assertIsInstance(failed, SystemExit)
        self.assertIsInstance(failed, Exception)
        self.assertEqual(failed.code, text)

    def test_a_queue_that_cannot_be_bound(self) -> None:
        def refused() -> FakeKernelQueue:
            raise OSError(errno.EPERM, os.strerror(errno.EPERM))

        service = self.make(refused)
        with self.assertRaises(StartFailed) as caught:
            service.privilegedStartService()
        self.assertOneLine(
            caught.exception,
            "cannot bind NFQUEUE 0: Operation not permitted "
            "(another program reads that queue, or no CAP_NET_ADMIN)",
        )

    def test_a_control_socket_in_a_missing_directory(self) -> None:
        options = Options()
        path = Path(self.mktemp()) / "control.sock"
        options.parseOptions(["--green", "198.18.1.0/24", "--control", f"unix:{path}"])
        service = makeService(options, ThreadsReactor(), FakeKernelQueue, RecordingSpoofer())
        with self.assertRaises(StartFailed) as caught:
            service.privilegedStartService()
        self.assertIn(f"directory {path.parent} does not exist", caught.exception.code)

    def test_a_json_events_file_that_cannot_be_opened(self) -> None:
        path = Path(self.mktemp()) / "events.json"
        options = Options()
        options.parseOptions(["--green", "198.18.1.0/24", "--json-events", str(path)])
        with self.assertRaises(StartFailed) as caught:
            makeService(options, ThreadsReactor(), FakeKernelQueue, RecordingSpoofer())
        self.assertOneLine(caught.exception, f"--json-events {path}: No such file or directory")

    def test_a_bad_metrics_endpoint(self) -> None:
        options = Options()
        options.parseOptions(["--green", "198.18.1.0/24", "--control", "", "--metrics", "tpc:1"])
        service = makeService(options, ThreadsReactor(), FakeKernelQueue, RecordingSpoofer())
        with self.assertRaises(StartFailed) as caught:
            service.privilegedStartService()
        self.assertOneLine(
            caught.exception, "metrics endpoint tpc:1: bad endpoint: Unknown endpoint type: 'tpc'"
        )

    def test_a_start_error_while_building(self) -> None:
        def broken(self) -> None:
            raise StartError("store file /x.names: is a directory")

        self.patch(dns_module.BannedNames, "load", broken)
        with self.assertRaises(StartFailed) as caught:
            self.make()
        self.assertOneLine(caught.exception, "store file /x.names: is a directory")

    def test_a_start_error_while_starting(self) -> None:
        class Failing(Service):
            def startService(self) -> None:
                raise StartError("control port: address in use")

        service = self.make()
        Failing().setServiceParent(service)
        service.privilegedStartService()
        self.addCleanup(service.stopService)
        with self.assertRaises(StartFailed) as caught:
            service.startService()
        self.assertOneLine(caught.exception, "control port: address in use")


# Runs in a child process, as twistd does: privileged start, switch to nobody, start.
SWITCH = """
import sys
from twisted.internet.testing import MemoryReactorClock
from twisted.python.util import switchUID
from p2pwall import capabilities
from p2pwall.options import Options
from p2pwall.daemon import StartFailed
from p2pwall.service import makeService
from p2pwall.testing import FakeKernelQueue, RecordingSpoofer

options = Options()
options.parseOptions(["--green", "198.18.1.0/24", "--control", ""])
service = makeService(options, MemoryReactorClock(), FakeKernelQueue, RecordingSpoofer())
service.privilegedStartService()
if sys.argv[1] == "lose":
    capabilities._libc.prctl(capabilities.PR_SET_KEEPCAPS, 0, 0, 0, 0)
switchUID(65534, 65534)
try:
    service.startService()
except StartFailed as failed:
    print("failed:", failed.code)
print(hex(capabilities.effective()))
"""


class CapabilityTests(SynchronousTestCase):
    def switch(self, mode: str) -> str:
        if os.geteuid() != 0:
            raise self.skipTest("needs root: switches to nobody as twistd --uid does")
        done = subprocess.run(
            [sys.executable, "-c", SWITCH, mode],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "PYTHONPATH": str(Path(service_module.__file__).parent.parent)},
        )
        self.assertEqual(done.returncode, 0, done.stderr)
        return done.stdout

    def test_net_admin_and_net_raw_stay_after_the_uid_switch(self) -> None:
        self.assertEqual(self.switch("keep"), "0x3000\n")

    def test_when_they_cannot_stay_the_start_fails_with_one_line(self) -> None:
        self.assertEqual(
            self.switch("lose"),
            "failed: cannot keep CAP_NET_ADMIN and CAP_NET_RAW after --uid/--gid "
            "([Errno 1] Operation not permitted): every verdict would fail; run without --uid\n"
            "0x0\n",
        )


class KernelEnforcementTests(DaemonCase):
    """``--enforce kernel``: the kernel's sets follow the engine (FakeKernelSets here; the real
    nft sets in tests/e2e)."""

    def build_kernel(self, *argv: str):
        self.sets = FakeKernelSets(lock_seconds=10)
        argv = ("--enforce", "kernel", "-t", "10", *argv)
        return self.build(*argv, kernel_sets=lambda kind: self.sets)

    def test_a_learned_peer_is_in_the_kernel_before_the_pong_names_it(self) -> None:
        """The forged pong makes the client connect at once: its SYN, which the daemon never
        sees, must meet the peer in the kernel's set."""
        self.build_kernel()
        seen_at_send = []
        send = self.spoofer.send_udp
        self.spoofer.send_udp = lambda *a: (seen_at_send.append(dict(self.sets.blocks)), send(*a))
        hello = self.source.queue(udp("198.18.1.10", "198.19.1.1", 1214, 2000, HELLO))
        self.read()
        self.assertEqual(self.source.verdict(hello), Verdict.DROP)
        peer = Element(4, "peer_port_client", ("198.19.1.1", 2000, "198.18.1.10"))
        self.assertEqual(seen_at_send, [{peer: "lock"}])
        self.assertTrue(self.sets.is_locked("198.18.1.10"))

    def test_start_copies_the_store_and_a_reload_copies_again(self) -> None:
        path = self.mktemp()
        engine = make_engine()
        engine.block(packed("198.19.9.9"), 6881)
        StoreFile(path, 86400, ORIGINS).save(engine.blocks, now=1_000_000)
        service = self.build_kernel("-f", path)
        self.assertEqual(self.sets.blocks, {Element(4, "peer_port", ("198.19.9.9", 6881)): "block"})
        self.assertEqual(self.sets.loads, 1)
        service.engine.block(packed("198.19.9.10"))
        os.kill(os.getpid(), signal.SIGHUP)
        self.assertEqual(self.sets.loads, 2)
        self.assertEqual(len(self.sets.blocks), 2)

    def test_missing_sets_end_the_start_with_one_line(self) -> None:
        self.sets = FakeKernelSets(lock_seconds=10)
        self.sets.present = False
        with self.assertRaises(StartFailed) as caught:
            self.build("--enforce", "kernel", "-t", "10", kernel_sets=lambda kind: self.sets)
        self.assertEqual(caught.exception.code, "no set locked4 in table inet p2pwall")

    def test_the_start_line_says_who_enforces(self) -> None:
        self.build_kernel()
        self.assertIn("enforced by the kernel (nft sets)", self.start_line())

    def test_a_dry_run_cannot_start_with_kernel_enforcement(self) -> None:
        with self.assertRaises(usage.UsageError):
            Options().parseOptions(["--enforce", "kernel", "--dry-run"])

    def test_kernel_enforcement_needs_a_time_lock(self) -> None:
        with self.assertRaises(usage.UsageError) as caught:
            Options().parseOptions(["--enforce", "kernel", "-t", "0"])
        self.assertIn("-t 1 or more", str(caught.exception))
