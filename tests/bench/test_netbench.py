"""bench.netbench without the lab: which queue each scenario uses, how a daemon that refuses a
reader is left out (and the native one started without ``--reader``), and the per-run CPU
figures and summaries. No root, no timing."""

from __future__ import annotations

import math
from collections.abc import Sequence

from twisted.trial.unittest import SynchronousTestCase

from bench.netbench import (
    C_QUEUE,
    CLOCK_TICK,
    DAEMON_QUEUE,
    NFQ_QUEUE,
    READERS,
    UDP_SCENARIOS,
    NetBench,
    Settings,
    refusal,
    summarize_udp,
)
from lab.netlab import LabError

TWISTD_REFUSAL = (
    "p2pwall did not start:\nUsage: twistd [options]\n  -q, --queue= NFQUEUE number.\n\n"
    "/venv/bin/twistd -n: option --reader not recognized\n"
)


class FakeGateway:
    """``Gateway.start`` as a daemon answers it: ``refuse`` maps the extra argv to the error."""

    def __init__(self, refuse: dict[tuple[str, ...], str]) -> None:
        self.refuse = refuse
        self.started: list[tuple[str, ...]] = []

    def start(self, extra: Sequence[str] = ()) -> None:
        self.started.append(tuple(extra))
        if tuple(extra) in self.refuse:
            raise LabError(self.refuse[tuple(extra)])


def bench(pin: bool = False) -> tuple[NetBench, list[str]]:
    said: list[str] = []
    return NetBench(None, {}, Settings(pin=pin), progress=said.append), said  # type: ignore[arg-type]


class ScenarioTests(SynchronousTestCase):
    def test_each_scenario_reads_its_own_queue(self) -> None:
        netbench, _ = bench()
        self.assertEqual(netbench._queue_of("none"), (None, None))
        self.assertEqual(netbench._queue_of("conntrack"), (None, None))
        self.assertEqual(netbench._queue_of("c"), (None, C_QUEUE))
        self.assertEqual(netbench._queue_of("p2pwall_a"), ("native", DAEMON_QUEUE))
        self.assertEqual(netbench._queue_of("p2pwall_b"), ("native", DAEMON_QUEUE))
        self.assertEqual(netbench._queue_of("nfq_a"), ("netfilterqueue", NFQ_QUEUE))
        self.assertEqual(netbench._queue_of("nfq_b"), ("netfilterqueue", NFQ_QUEUE))
        self.assertRaises(ValueError, netbench._queue_of, "p2pwall_c")

    def test_readers_use_distinct_queues_and_control_ports(self) -> None:
        queues = [queue for queue, *_ in READERS.values()]
        ports = [port for _, port, *_ in READERS.values()]
        self.assertEqual(len({*queues, C_QUEUE}), len(queues) + 1)
        self.assertEqual(len(set(ports)), len(ports))
        for _queue, _port, key_a, _key_b in READERS.values():
            self.assertIn(key_a, UDP_SCENARIOS)


class ReaderOptionTests(SynchronousTestCase):
    def test_a_daemon_that_takes_the_reader_starts_with_it(self) -> None:
        netbench, said = bench()
        for reader in READERS:
            gateway = FakeGateway({})
            info = {"reader": reader, "option": f"--reader {reader}"}
            self.assertTrue(netbench._start(gateway, info))  # type: ignore[arg-type]
            self.assertEqual(gateway.started, [("--reader", reader)])
            self.assertNotIn("skipped", info)
        self.assertEqual(said, [])

    def test_a_daemon_without_the_option_runs_its_native_reader_without_it(self) -> None:
        netbench, _ = bench()
        gateway = FakeGateway({("--reader", "native"): TWISTD_REFUSAL})
        info = {"reader": "native", "option": "--reader native"}
        self.assertTrue(netbench._start(gateway, info))  # type: ignore[arg-type]
        self.assertEqual(gateway.started, [("--reader", "native"), ()])
        self.assertIn("no --reader", info["option"])

    def test_the_netfilterqueue_reader_is_left_out_with_the_daemons_reason(self) -> None:
        reasons = (
            TWISTD_REFUSAL,
            "p2pwall did not start:\nthe netfilterqueue reader needs the NetfilterQueue package",
        )
        for error in reasons:
            netbench, said = bench()
            gateway = FakeGateway({("--reader", "netfilterqueue"): error})
            info = {"reader": "netfilterqueue", "option": "--reader netfilterqueue"}
            self.assertFalse(netbench._start(gateway, info))  # type: ignore[arg-type]
            self.assertEqual(gateway.started, [("--reader", "netfilterqueue")])
            self.assertEqual(info["skipped"], error.strip().splitlines()[-1])
            self.assertEqual(len(said), 1)
            self.assertIn("left out: the netfilterqueue reader", said[0])

    def test_a_native_daemon_that_fails_otherwise_stops_the_bench(self) -> None:
        netbench, _ = bench()
        gateway = FakeGateway({("--reader", "native"): "p2pwall did not start:\nqueue 0 busy"})
        info = {"reader": "native", "option": "--reader native"}
        self.assertRaises(LabError, netbench._start, gateway, info)

    def test_refusal_is_the_last_line(self) -> None:
        self.assertEqual(refusal("p2pwall did not start:\n\nno package\n\n"), "no package")
        self.assertEqual(refusal(""), "no reason given")


class CpuFigureTests(SynchronousTestCase):
    def test_reader_time_per_packet(self) -> None:
        netbench, _ = bench(pin=False)
        cpus = {0: (0, 100), 1: (0, 100)}
        before = {"at": 10.0, "cpus": cpus, "reader": (1000, 500)}
        after = {"at": 20.0, "cpus": cpus, "reader": (1000 + 3 * CLOCK_TICK, 500 + 2 * CLOCK_TICK)}
        figures = netbench._cpu_figures(before, after, 1_000_000)
        self.assertAlmostEqual(figures["user_us"], 3.0)
        self.assertAlmostEqual(figures["sys_us"], 2.0)
        self.assertAlmostEqual(figures["reader_share"], 0.5)
        self.assertNotIn("reader_cpu_busy", figures)  # not pinned: no CPU is the readers'
        self.assertEqual(netbench._cpu_figures({"cpus": cpus}, {"cpus": cpus}, 0), {})

    def test_no_packets_no_cost(self) -> None:
        netbench, _ = bench(pin=False)
        before = {"at": 0.0, "cpus": {}, "reader": (0, 0)}
        figures = netbench._cpu_figures(before, {"at": 1.0, "cpus": {}, "reader": (5, 5)}, 0)
        self.assertTrue(math.isnan(figures["user_us"]))

    def test_summary_sums_counters_and_takes_median_figures(self) -> None:
        runs = [
            {"pps": 100.0, "sent_pps": 110.0, "id_sequence": 5, "queue_dropped": 1,
             "user_dropped": 0, "packets_read": 4, "user_us": 3.0, "sys_us": 2.0,
             "reader_cpu_busy": 1.0, "sender_cpu_busy": 1.0},
            {"pps": 300.0, "sent_pps": 330.0, "id_sequence": 7, "queue_dropped": 2,
             "user_dropped": 1, "packets_read": 6, "user_us": 5.0, "sys_us": 4.0,
             "reader_cpu_busy": 0.5, "sender_cpu_busy": 0.9},
        ]  # fmt: skip
        summary = summarize_udp(runs)
        self.assertEqual(summary["runs"], [100, 300])
        self.assertEqual(summary["pps"], 200.0)
        self.assertEqual((summary["id_sequence"], summary["packets_read"]), (12, 10))
        self.assertEqual((summary["user_us"], summary["sys_us"]), (4.0, 3.0))
        self.assertEqual(summary["reader_cpu_busy"], 0.75)
        no_queue = summarize_udp([{"pps": 1.0, "sent_pps": 1.0}])
        self.assertNotIn("user_us", no_queue)
        self.assertNotIn("id_sequence", no_queue)
