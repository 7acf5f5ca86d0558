"""The benchmark's pure helpers: parsing the kernel's and the C tools' output, percentiles,
ratios, targets and the report file splice. No timing, no root."""

import math

from twisted.trial.unittest import SynchronousTestCase

from bench.engine import BENIGN, QUEUED_BY, QUEUED_KINDS, fill_table, peer_key
from bench.report import (
    Target,
    bottleneck,
    cpu_busy,
    fmt,
    median,
    paired_ratios,
    parse_cpu_times,
    parse_kv,
    parse_netdev,
    parse_nfqueue,
    parse_pid_stat,
    parse_samples,
    per_packet_us,
    percent,
    percentile,
    ratio,
    splice,
    table,
)
from bench.run import main, render, targets
from p2pwall.packet import decode

PROC = """\
    0 3141592     7 2 65535  130319     12   150001  1
   17      0     0 2  4016       0      0        0  1
garbage line
"""

NETDEV = """\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:       0       0    0    0    0     0          0         0        0       0    0    0    0     0       0          0
  eth0: 12345678  184084    0    0    0     0          0         0     4200      60    0    0    0     0       0          0
"""  # noqa: E501


class ParseTests(SynchronousTestCase):
    def test_nfqueue_rows_by_queue(self) -> None:
        rows = parse_nfqueue(PROC)
        self.assertEqual(sorted(rows), [0, 17])
        self.assertEqual(
            rows[0],
            {"queue": 0, "portid": 3141592, "queue_total": 7, "copy_mode": 2,
             "copy_range": 65535, "queue_dropped": 130319, "user_dropped": 12,
             "id_sequence": 150001},
        )  # fmt: skip
        self.assertEqual(parse_nfqueue(""), {})

    def test_netdev(self) -> None:
        dev = parse_netdev(NETDEV)
        self.assertEqual(dev["eth0"]["rx_packets"], 184084)
        self.assertEqual(dev["eth0"]["tx_packets"], 60)
        self.assertEqual(dev["lo"]["rx_bytes"], 0)
        self.assertNotIn("face", dev)

    def test_kv_and_samples(self) -> None:
        text = "ready queue=0\nus=46.5\nus=120.0\nus=bad\nconnects=2 failures=1 seconds=0.25\n"
        kv = parse_kv(text)
        self.assertEqual(kv["connects"], 2)
        self.assertEqual(kv["failures"], 1)
        self.assertEqual(kv["seconds"], 0.25)
        self.assertEqual(kv["queue"], 0)
        self.assertNotIn("ready", kv)
        self.assertEqual(parse_samples(text), [46.5, 120.0])
        self.assertEqual(parse_kv("sent=10 sent=12")["sent"], 12)


class StatisticsTests(SynchronousTestCase):
    def test_percentile_interpolates(self) -> None:
        values = [float(v) for v in range(1, 101)]
        self.assertEqual(percentile(values, 50), 50.5)
        self.assertAlmostEqual(percentile(values, 99), 99.01)
        self.assertEqual(percentile(values, 0), 1.0)
        self.assertEqual(percentile(values, 100), 100.0)
        self.assertEqual(percentile([7.0], 99), 7.0)
        self.assertEqual(percentile([3.0, 1.0, 2.0], 50), 2.0)
        self.assertTrue(math.isnan(percentile([], 50)))
        self.assertRaises(ValueError, percentile, values, 101)

    def test_ratio_median(self) -> None:
        self.assertEqual(ratio(80, 100), 0.8)
        self.assertTrue(math.isnan(ratio(80, 0)))
        self.assertTrue(math.isnan(ratio(80, math.nan)))
        self.assertEqual(median([3, 1, math.nan, 2]), 2)
        self.assertEqual(paired_ratios([50, 90], [100, 90]), [0.5, 1.0])
        self.assertRaises(ValueError, paired_ratios, [1], [1, 2])
        self.assertTrue(math.isnan(median([])))


class TargetTests(SynchronousTestCase):
    def test_at_least_and_at_most(self) -> None:
        self.assertTrue(Target("a", 0.8, 0.8, True).passed)
        self.assertFalse(Target("a", 0.79, 0.8, True).passed)
        self.assertTrue(Target("e", 2.9, 3.0, False).passed)
        self.assertFalse(Target("e", 3.1, 3.0, False).passed)

    def test_missing_value_fails_visibly(self) -> None:
        target = Target("m", math.nan, 300, False, " B")
        self.assertFalse(target.passed)
        self.assertTrue(target.line().startswith("FAIL (not measured)"))

    def test_line(self) -> None:
        self.assertEqual(
            Target("engine", 3.74, 3.0, False, " µs").line(),
            "FAIL  engine: 3.74 µs (target <= 3.00 µs)",
        )
        self.assertIn("PASS", Target("a", 0.9, 0.8, True, "x").line())


class FormatTests(SynchronousTestCase):
    def test_fmt(self) -> None:
        self.assertEqual(fmt(184084), "184,084")
        self.assertEqual(fmt(184084.4), "184,084")
        self.assertEqual(fmt(140.94), "140.9")
        self.assertEqual(fmt(46.4), "46.40")
        self.assertEqual(fmt(0.5912), "0.591")
        self.assertEqual(fmt(None), "n/a")
        self.assertEqual(fmt(math.nan), "n/a")

    def test_table(self) -> None:
        text = table(["a", "b"], [("x", 1234), ("y", "-")])
        self.assertEqual(text.splitlines(), ["| a | b |", "|---|---|", "| x | 1,234 |",
                                             "| y | - |"])  # fmt: skip

    def test_splice_replaces_only_the_generated_block(self) -> None:
        doc = "# Title\n\nintro\n\n<!-- b -->\nold numbers\n<!-- e -->\n\n## Discussion\nkept\n"
        new = splice(doc, "new numbers\n", "<!-- b -->", "<!-- e -->")
        self.assertEqual(
            new, "# Title\n\nintro\n\n<!-- b -->\nnew numbers\n<!-- e -->\n\n## Discussion\nkept\n"
        )
        self.assertEqual(splice(new, "new numbers", "<!-- b -->", "<!-- e -->"), new)

    def test_splice_appends_when_no_markers(self) -> None:
        self.assertEqual(splice("", "x", "<b>", "<e>"), "<b>\nx\n<e>\n")
        self.assertEqual(splice("doc\n", "x", "<b>", "<e>"), "doc\n\n<b>\nx\n<e>\n")


class EngineFixtureTests(SynchronousTestCase):
    """The engine benchmark's inputs, without timing them."""

    def test_benign_packets_decode_and_are_described(self) -> None:
        self.assertEqual(set(BENIGN), set(QUEUED_BY))
        self.assertEqual(len(QUEUED_KINDS), 3)
        for name, build in BENIGN.items():
            self.assertIsNotNone(decode(build()), name)

    def test_fill_table(self) -> None:
        table_ = fill_table(1000)
        self.assertEqual(len(table_), 1000)
        self.assertEqual(len({peer_key(i) for i in range(1000)}), 1000)


def sample_results() -> dict:
    proc = {"id_sequence": 150001, "queue_dropped": 130319, "user_dropped": 0}
    rates = (("none", 180e3), ("c", 125e3), ("p2pwall_a", 75e3), ("nfq_a", 50e3),
             ("p2pwall_b", 80e3))  # fmt: skip
    cpu = {
        "c": {"user_us": 0.36, "sys_us": 4.03, "reader_share": 0.61, "reader_cpu_busy": 0.864,
              "sender_cpu_busy": 1.0, "packets_read": 300000},
        "p2pwall_a": {"user_us": 3.85, "sys_us": 2.11, "reader_share": 0.9, "reader_cpu_busy": 1.0,
                      "sender_cpu_busy": 0.998, "packets_read": 280000},
        "nfq_a": {"user_us": 6.5, "sys_us": 5.0, "reader_share": 0.95, "reader_cpu_busy": 0.996,
                  "sender_cpu_busy": 1.0, "packets_read": 140000},
    }  # fmt: skip
    udp = {
        key: {
            "pps": pps,
            "sent_pps": pps * 1.2,
            "runs": [int(pps)],
            **(proc if key != "none" else {}),
            **cpu.get(key, {}),
        }
        for key, pps in rates
    }
    con = {"n": 2000, "failures": 0, "p50": 46.4, "p99": 140.9, "max": 900.0, "over_1ms": 0}
    return {
        "machine": {"nproc": "2", "cpu": "cpu", "kernel": "6.1", "python": "3.11", "commit": "x",
                    "date": "d", "load": "0.1"},
        "load_end": "0.2",
        "elapsed": 100.0,
        "settings": {"size": 64, "seconds": 3.0, "reps": 1, "connects": 2000, "senders": 1},
        "lab": {
            "udp": udp,
            "tcp_bulk": {"none": {"gbps": 9.5, "runs": [9.5]},
                         "conntrack": {"gbps": 9.45, "runs": [9.45]},
                         "p2pwall_b": {"gbps": 9.4, "runs": [9.4]}},
            "connect": {"none": con, "p2pwall_b": {**con, "p50": 120.0, "p99": 400.0},
                        "nfq_b": {**con, "p50": 150.0, "p99": 600.0}},
            "readers": {"c": {"verdicts": 5.0, "enobufs": 0.0},
                        "p2pwall": {"peers_loaded": 100000, "log_errors": 0,
                                    "option": "--reader native"},
                        "netfilterqueue": {"peers_loaded": 100000, "log_errors": 0,
                                           "option": "--reader netfilterqueue"}},
        },
        "engine": {"peers": 100000, "number": 10, "repeat": 1,
                   "us_per_packet": dict.fromkeys(QUEUED_BY, 2.5)},
        "memory": {"peers": 1000000, "tracemalloc": 255.0, "rss": 283.0},
    }  # fmt: skip


def without_netfilterqueue(results: dict) -> dict:
    """``results`` from a daemon that refused ``--reader netfilterqueue``."""
    lab = results["lab"]
    del lab["udp"]["nfq_a"], lab["connect"]["nfq_b"]
    lab["readers"]["netfilterqueue"] = {
        "option": "--reader netfilterqueue",
        "skipped": "twistd -n: option --reader not recognized",
    }
    return results


class RenderTests(SynchronousTestCase):
    def test_targets_and_report(self) -> None:
        results = sample_results()
        found = {t.name.split(",")[0].split(" (")[0]: t for t in targets(results)}
        self.assertAlmostEqual(found["(a) p2pwall"].value, 0.6)
        self.assertFalse(found["(a) p2pwall"].passed)
        self.assertTrue(found["(b) ordinary traffic"].passed)
        self.assertTrue(found["memory per learned peer at 1"].passed)
        text = render(results, "make bench")
        self.assertIn("Command: `make bench`", text)
        self.assertIn("FAIL  (a) p2pwall, all UDP queued, vs the C accept-all reader (median of "
                      "per-run ratios): 0.600x", text)  # fmt: skip
        self.assertIn(
            "| (a) all UDP from green queued | twistd p2pwall --reader native | 90,000 | 75,000 |",
            text,
        )
        self.assertIn(
            "| (a) all UDP from green queued | twistd p2pwall --reader netfilterqueue | 60,000 | "
            "50,000 | 0.278 | 0.400 |",
            text,
        )
        self.assertIn("| 0.600 | 150,001 | 130,319 | 0 |", text)
        self.assertIn(
            "| no queue rule | the kernel alone | 216,000 | 180,000 | 1.00 | 1.44 | - |", text
        )
        self.assertIn("started with 100,000 learned peers", text)
        self.assertIn("Per-run ratio (b) / one conntrack rule", text)
        self.assertEqual(text.count("PASS") + text.count("FAIL"), len(targets(results)))

    def test_reader_costs(self) -> None:
        text = render(sample_results(), "make bench")
        self.assertIn(
            "| C accept-all (bench/nfq_accept.c) | 300,000 | 125,000 | 1.00 | 0.360 | 4.03 | 4.39 "
            "| 1.00 | 61 % | 86 % | 100 % |",
            text,
        )
        self.assertIn(
            "| twistd p2pwall --reader native | 280,000 | 75,000 | 0.600 | 3.85 | 2.11 | 5.96 "
            "| 1.36 | 90 % | 100 % | 100 % |",
            text,
        )
        self.assertIn("| twistd p2pwall --reader netfilterqueue | 140,000 | 50,000 | 0.400 |", text)
        self.assertIn(
            "* twistd p2pwall --reader native: 3.49 µs of user time per packet more", text
        )
        self.assertIn("* twistd p2pwall --reader netfilterqueue: 6.14 µs of user time", text)
        self.assertIn("* The C reader's CPU was 86 % busy, the C reader itself used 61 % of it: "
                      "the sender, not the C reader", text)  # fmt: skip
        self.assertIn("Per-run ratio twistd p2pwall --reader netfilterqueue (a) / C (runs next "
                      "to each other in time): 0.400; median 0.400", text)  # fmt: skip
        self.assertIn(
            "| added by the daemon | twistd p2pwall --reader netfilterqueue |  |  | 103.6 "
            "| 459.1 |",
            text,
        )
        self.assertIn("`twistd p2pwall --reader netfilterqueue` (option given: --reader "
                      "netfilterqueue) started with 100,000 learned peers", text)  # fmt: skip

    def test_a_saturated_c_reader_is_said_to_be_the_limit(self) -> None:
        results = sample_results()
        results["lab"]["udp"]["c"]["reader_cpu_busy"] = 0.97
        text = render(results, "make bench")
        self.assertIn("* The C reader's CPU was 97 % busy, the C reader itself used 61 % of it: "
                      "its CPU was the limit", text)  # fmt: skip

    def test_a_reader_left_out_says_why_everywhere(self) -> None:
        text = render(without_netfilterqueue(sample_results()), "make bench")
        self.assertNotIn(
            "| (a) all UDP from green queued | twistd p2pwall --reader netfilterqueue", text
        )
        self.assertIn(
            "| twistd p2pwall --reader netfilterqueue | left out: twistd -n: option --reader not "
            "recognized |",
            text,
        )
        self.assertIn("`twistd p2pwall --reader netfilterqueue` (option given: --reader "
                      "netfilterqueue): left out, twistd -n: option --reader not recognized.",
                      text)  # fmt: skip
        self.assertNotIn("added by the daemon | twistd p2pwall --reader netfilterqueue", text)
        self.assertNotIn("netfilterqueue (a) / C", text)


class CpuParseTests(SynchronousTestCase):
    def test_pid_stat_with_parentheses_in_the_name(self) -> None:
        fields = " ".join(str(n) for n in range(3, 53))  # field 3 (state) onwards, numbered
        self.assertEqual(parse_pid_stat(f"4321 (tw (x) d) {fields}"), (14, 15))

    def test_cpu_times_and_busy_share(self) -> None:
        before = parse_cpu_times(
            "cpu  9 9 9 9 9 9 9 9 0 0\n"
            "cpu0 100 0 50 800 50 0 0 0 0 0\n"
            "cpu1 10 0 10 970 0 0 10 0 5 0\n"
            "intr 12345\n"
        )
        self.assertEqual(before, {0: (150, 1000), 1: (30, 1000)})
        after = {0: (250, 1100), 1: (30, 1100), 7: (1, 1)}
        busy = cpu_busy(before, after)
        self.assertEqual(busy[0], 1.0)
        self.assertEqual(busy[1], 0.0)
        self.assertNotIn(7, busy)
        self.assertTrue(math.isnan(cpu_busy({0: (5, 10)}, {0: (5, 10)})[0]))

    def test_per_packet_bottleneck_percent(self) -> None:
        self.assertAlmostEqual(per_packet_us(1.5, 300_000), 5.0)
        self.assertTrue(math.isnan(per_packet_us(1.5, 0)))
        self.assertEqual(bottleneck(0.95), "reader")
        self.assertEqual(bottleneck(0.9), "reader")
        self.assertEqual(bottleneck(0.86), "sender")
        self.assertIsNone(bottleneck(None))
        self.assertIsNone(bottleneck(math.nan))
        self.assertEqual(percent(0.864), "86 %")
        self.assertEqual(percent(None), "n/a")


class ArgumentTests(SynchronousTestCase):
    def test_out_of_range_settings_are_one_usage_error(self) -> None:
        for argv in (
            ["--senders", "0"],
            ["--senders", "5"],
            ["--reps", "11"],
            ["--seconds", "0.5"],
        ):
            with self.assertRaises(SystemExit) as raised:
                main([*argv, "--no-lab"])
            self.assertEqual(raised.exception.code, 2, argv)
