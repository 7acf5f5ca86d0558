"""bench.kernel without the lab: the learned peers' layout (what the flood's ``traffic flows``
arguments must name), the store file it writes, the memory and ratio arithmetic, the daemon
log's error lines, the options and the report. No root, no timing."""

from __future__ import annotations

import ipaddress
import math
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from bench.kernel import (
    FIRST_PEER,
    MAX_PEER_ADDRS,
    ORIGIN,
    PEER_PORT,
    QUICK,
    check,
    kernel_bytes,
    learned_peers,
    log_problems,
    meminfo,
    parser,
    peer_layout,
    scenario_keys,
    write_store,
)
from bench.kernelreport import added, render, run_ratio, summarize, targets
from p2pwall.store import HEADER, parse_block
from p2pwall.testing import ORIGINS

MEMINFO = """\
MemTotal:       24684544 kB
Slab:             120000 kB
SUnreclaim:        60000 kB
VmallocUsed:       30000 kB
Percpu:             2000 kB
"""


class LayoutTests(SynchronousTestCase):
    def test_few_peers_are_one_port_each(self) -> None:
        self.assertEqual(peer_layout(10_000), (10_000, 1))

    def test_many_peers_share_addresses_over_ports(self) -> None:
        self.assertEqual(peer_layout(100_000), (MAX_PEER_ADDRS, 2))
        self.assertEqual(peer_layout(1_000_000), (MAX_PEER_ADDRS, 20))

    def test_counts_the_flood_cannot_name_are_refused(self) -> None:
        self.assertRaises(ValueError, peer_layout, 0)
        self.assertRaises(ValueError, peer_layout, MAX_PEER_ADDRS + 1)

    def test_peers_in_the_flood_order(self) -> None:
        """Peer k: address k % addresses, port k // addresses (traffic.c's flows mode)."""
        peers = list(learned_peers(100_000))
        first = ipaddress.IPv4Address(FIRST_PEER)
        self.assertEqual(len(set(peers)), 100_000)
        self.assertEqual(peers[0], (first.packed, PEER_PORT))
        self.assertEqual(
            peers[MAX_PEER_ADDRS - 1], ((first + MAX_PEER_ADDRS - 1).packed, PEER_PORT)
        )
        self.assertEqual(peers[MAX_PEER_ADDRS], (first.packed, PEER_PORT + 1))
        last = ipaddress.IPv4Address(peers[-1][0])
        self.assertLess(last, ipaddress.IPv4Address("198.19.255.0"))  # the gw-pub link's /24


class ScenarioTests(SynchronousTestCase):
    def test_only_the_modes_asked_for_and_started(self) -> None:
        self.assertEqual(scenario_keys(("kernel",), {}), ["none", "conntrack", "queue", "kernel"])
        self.assertEqual(scenario_keys(("kernel", "ipset"), {"kernel": "refused"}),
                         ["none", "conntrack", "queue", "ipset"])  # fmt: skip


class StoreTests(SynchronousTestCase):
    def test_the_daemon_reads_every_line_back(self) -> None:
        path = write_store(Path(self.mktemp()), 2_000, "198.18.1.10", 1_700_000_000.0)
        lines = path.read_text().splitlines(keepends=True)
        self.assertEqual(lines[0], HEADER)
        blocks = [parse_block(line, ORIGINS) for line in lines[1:]]
        self.assertEqual(len(blocks), 2_000)
        self.assertEqual({block.client for block in blocks}, {bytes([198, 18, 1, 10])})
        self.assertEqual({block.origin for block in blocks}, {ORIGIN})
        self.assertEqual({block.seen for block in blocks}, {1_700_000_000.0})
        self.assertEqual([(b.peer, b.port) for b in blocks], list(learned_peers(2_000)))


class ArithmeticTests(SynchronousTestCase):
    def test_meminfo_in_bytes(self) -> None:
        self.assertEqual(
            meminfo(MEMINFO),
            {"Slab": 120000 * 1024, "SUnreclaim": 60000 * 1024, "VmallocUsed": 30000 * 1024,
             "Percpu": 2000 * 1024},
        )  # fmt: skip

    def test_kernel_bytes_counts_slab_vmalloc_and_percpu_once(self) -> None:
        before = meminfo(MEMINFO)
        grown = {"Slab": 1000, "SUnreclaim": 1000, "VmallocUsed": 500, "Percpu": 24}
        after = {name: value + grown[name] for name, value in before.items()}
        self.assertEqual(kernel_bytes(before, after), 1524)

    def test_added_percentiles_pair_blocks(self) -> None:
        """A busier second round slows both scenarios; the pairs still say +3, +3, +9."""
        base = [float(v) for v in range(1, 101)]
        rounds = [base, [v + 50 for v in base], base]
        slower = [[v + 3 for v in base], [v + 53 for v in base], [v + 9 for v in base]]
        self.assertAlmostEqual(added(slower, rounds, 50), 3.0)
        self.assertAlmostEqual(added(slower, rounds, 99), 3.0)
        self.assertTrue(math.isnan(added(slower, rounds[:2], 50)))

    def test_run_ratio_pairs_runs(self) -> None:
        flood = {
            "none": {"forwarded_pps": {"runs": [100.0, 200.0, 400.0]}},
            "kernel": {"dropped_pps": {"runs": [90.0, 100.0, 400.0]}},
        }
        self.assertAlmostEqual(run_ratio(flood, "kernel", "dropped_pps", "none", "forwarded_pps"),
                               0.9)  # fmt: skip
        self.assertTrue(math.isnan(run_ratio(flood, "queue", "dropped_pps", "none",
                                             "forwarded_pps")))  # fmt: skip
        self.assertAlmostEqual(run_ratio({"a": {"x": {"runs": [2.0]}}, "b": {"x": {"runs": [4.0]}}},
                                         "a", "x", "b"), 0.5)  # fmt: skip


class LogTests(SynchronousTestCase):
    def test_error_lines_without_their_tracebacks(self) -> None:
        text = (
            "2026-12-01T07:27:06+0000 [p2pwall.service#info] reading NFQUEUE 3\n"
            "2026-12-01T07:27:06+0000 [p2pwall.service#critical] periodic KernelSync.poll "
            "failed\n"
            "\tTraceback (most recent call last):\n"
            '\t  File "/work/main/p2pwall/service.py", line 387, in guarded\n'
            "2026-12-01T07:27:07+0000 [p2pwall.x#error] nft: refused\n"
        )
        self.assertEqual(
            log_problems(text),
            ["2026-12-01T07:27:06+0000 [p2pwall.service#critical] periodic KernelSync.poll "
             "failed", "2026-12-01T07:27:07+0000 [p2pwall.x#error] nft: refused"],
        )  # fmt: skip


class OptionTests(SynchronousTestCase):
    def test_quick_makes_it_small(self) -> None:
        args = parser().parse_args(["--quick"])
        self.assertIsNone(check(args))
        self.assertEqual((args.reps, args.peers, args.big_peers),
                         (QUICK["reps"], QUICK["peers"], QUICK["big_peers"]))  # fmt: skip

    def test_peer_counts_the_flood_cannot_name(self) -> None:
        self.assertIn("--big-peers", check(parser().parse_args(["--big-peers", "60000"])))
        self.assertIn("--seconds", check(parser().parse_args(["--seconds", "60"])))


def traffic(modes: tuple[str, ...] = ("kernel",)) -> dict:
    """A traffic phase's raw results: kernel enforcement 2 µs slower to connect than
    conntrack alone, by ipset 30 µs."""
    keys = ["none", "conntrack", "queue", *modes]
    base = [30.0 + i % 10 for i in range(100)]
    delay = {"conntrack": 0.0, "queue": 60.0, "kernel": 2.0, "ipset": 30.0}

    def flows(key: str, forwarded: float) -> dict:
        run = {"sent_pps": 100_000.0, "arrived_pps": 95_000.0, "forwarded_pps": forwarded,
               "dropped_pps": 95_000.0 - forwarded}  # fmt: skip
        if key not in ("none", "conntrack"):
            run |= {"daemon_share": 0.9 if key == "queue" else 0.01, "daemon_us": 1.0,
                    "queue_drops": 0}  # fmt: skip
        return run

    def flood(key: str) -> dict:
        return flows(key, 100_000.0 if key in ("none", "conntrack") else 0.0)

    ordinary = [key for key in keys if key != "none"]
    return {
        "flood": {key: [flood(key), flood(key)] for key in keys},
        "small": {key: [flows(key, 50_000.0)] * 2 for key in ordinary},
        "bulk": {key: [10.0, 12.0] for key in ordinary},
        "connect": {
            key: {
                "blocks": [[v + delay[key] for v in base]] * 2,
                "failures": 0,
                "rates": [20_000.0, 19_000.0],
            }
            for key in ordinary
        },  # fmt: skip
        "reload_seconds": {mode: [0.5, 0.7] for mode in modes},
    }


class ReportTests(SynchronousTestCase):
    def test_targets(self) -> None:
        lines = [target.line() for target in targets(summarize(traffic()))]
        self.assertEqual(lines[0], "PASS  connect latency added by kernel enforcement, p50 "
                         "(vs conntrack only): 2.00 µs (target <= 5 µs)")  # fmt: skip
        self.assertEqual(lines[2], "PASS  flood to learned peers, dropped by kernel enforcement "
                         "/ forwarded with no rule: 0.950x (target >= 0.900x)")  # fmt: skip
        self.assertTrue(all(line.startswith("PASS") for line in lines), lines)

    def test_without_kernel_enforcement_its_targets_fail(self) -> None:
        found = targets(summarize(traffic(modes=())))
        self.assertEqual([target.verdict for target in found], ["FAIL (not measured)"] * 8)

    def test_ipset_judged_apart(self) -> None:
        found = targets(summarize(traffic(modes=("kernel", "ipset"))))
        self.assertEqual(len(found), 16)
        self.assertEqual(found[8].line(), "FAIL  connect latency added by kernel enforcement by "
                         "ipset, p50 (vs conntrack only): 30.00 µs (target <= 5 µs)")  # fmt: skip
        self.assertTrue(found[0].passed)

    def test_render(self) -> None:
        big = {"loaded": 1_000_000, "loaded_s": 6.0, "ready_s": 20.0, "rss": 2**30,
               "idle_share": 0.5, "problems": [], "peers": 1_000_000}  # fmt: skip
        kernel = {"elements": 1_000_000, "kernel_bytes": 128_000_000,
                  "probes": {"not learned": 20, "first": 0, "last": 0, "again": 0},
                  "kernel_bytes_running": 130_000_000}  # fmt: skip
        results = {
            "machine": {"nproc": "2", "cpu": "cpu", "kernel": "6", "python": "3", "commit": "c",
                        "date": "d", "load": "0"},
            "settings": {"connects": 200, "reps": 2, "seconds": 2.0, "peers": 100_000,
                         "big_peers": 1_000_000, "flow_packets": 4, "small_flow_addrs": 4096},
            "summary": summarize(traffic()),
            "daemons": {"kernel_problems": ["x [a#critical] poll failed"],
                        "skipped": {"ipset": "ipset: command not found"}},
            "big": {"queue": big, "kernel": big | kernel, "ipset": {"failed": "not ready"}},
            "elapsed": 100.0,
            "load_end": "1",
        }  # fmt: skip
        text = render(results, "python -m bench.kernel")
        row = ("| kernel enforcement, nft sets (`--enforce kernel`, both) | 1,000,000 of 1,000,000 "
               "| 6.00 | "
               "20.00 | 1,024 | 50 % | 1,000,000 | 122.1 | 128.0 | 124.0 |")  # fmt: skip
        self.assertIn(row, text)
        self.assertIn("Left out: kernel enforcement, ipset (`--enforce kernel --sets ipset`, "
                      "both): `ipset: command not found`.", text)  # fmt: skip
        self.assertIn("blocks into the emptied sets in 0.600 s (kernel)", text)
        self.assertIn("| kernel enforcement, ipset (`--enforce kernel --sets ipset`, both) | did "
                      "not start: `not ready` |", text)  # fmt: skip
        self.assertIn("kernel enforcement, nft sets, traffic phase: 1; the first: "
                      "`x [a#critical] poll failed`", text)  # fmt: skip
        self.assertIn("gw forwarded 20 to not learned, 0 to first, 0 to last, 0 to again", text)
        self.assertIn("PASS  sequential connects/s", text)
