"""Option parsing: every ftwall option, long names, and usage errors instead of tracebacks."""

import ipaddress

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from p2pwall.options import Options


def parse(*argv: str) -> Options:
    options = Options()
    options.parseOptions(list(argv))
    return options


class OptionsTests(SynchronousTestCase):
    def test_defaults(self) -> None:
        options = parse()
        self.assertEqual(options["time-lock"], 120)
        self.assertEqual(options["queue"], 0)
        self.assertFalse(options["no-udp-block"])
        self.assertIsNone(options["probe-source"])
        self.assertIn(ipaddress.ip_network("192.168.0.0/16"), options["green"])
        self.assertEqual(options["control"], "tcp:4120:interface=127.0.0.1")
        self.assertIsNone(options["metrics"])
        self.assertIsNone(options["json-events"])
        self.assertEqual(options["json-event-classes"], frozenset("utcpx"))

    def test_ftwall_short_options(self) -> None:
        options = parse(
            "-d",
            "A",
            "-n",
            "-a",
            "198.18.1.1",
            "-b",
            "65536",
            "-f",
            "/tmp/store",
            "-D",
            "/etc/p.conf",
            "-t",
            "30",
            "-c",
            "/run/clients",
            "-l",
            "pc",
            "-L",
            "uUm",
        )
        self.assertEqual(options["debug-classes"], frozenset("daDthplb"))
        self.assertTrue(options["no-udp-block"])
        self.assertEqual(options["probe-source"], ipaddress.ip_address("198.18.1.1"))
        self.assertEqual((options["buffer"], options["time-lock"]), (65536, 30.0))
        self.assertEqual(options["syslog-classes"], frozenset("pc"))
        self.assertEqual(options["stderr-classes"], frozenset("uUm"))
        self.assertEqual(
            (options["store-file"], options["dns-patterns"], options["client-dir"]),
            ("/tmp/store", "/etc/p.conf", "/run/clients"),
        )

    def test_long_options_and_green(self) -> None:
        options = parse(
            "--time-lock=0",
            "--queue=7",
            "--green",
            "198.18.1.0/24",
            "--green",
            "fd00::/8",
            "--failure-verdict",
            "drop",
            "--max-peers",
            "5000",
        )
        self.assertEqual(
            options["green"],
            [ipaddress.ip_network("198.18.1.0/24"), ipaddress.ip_network("fd00::/8")],
        )
        self.assertEqual((options["queue"], options["max-peers"]), (7, 5000))

    def test_green_if_drops_the_default_ranges(self) -> None:
        options = parse("--green-if", "green0", "--green-if", "green1", "--green", "10.9.0.0/16")
        self.assertEqual(options["green-if"], ["green0", "green1"])
        self.assertEqual(options["green"], [ipaddress.ip_network("10.9.0.0/16")])
        self.assertFalse(options["green-default"])
        self.assertEqual(parse("--green-if", "green0")["green"], [])

    def test_defaults_are_flagged_for_the_start_warning(self) -> None:
        self.assertTrue(parse()["green-default"])
        self.assertFalse(parse("--green", "198.18.1.0/24")["green-default"])

    def test_dns_budget(self) -> None:
        self.assertEqual(parse()["dns-budget"], 50_000)
        self.assertEqual(parse("--dns-budget", "4096")["dns-budget"], 4096)
        self.assertRaises(usage.UsageError, parse, "--dns-budget", "0")

    def test_max_probes(self) -> None:
        self.assertEqual(parse()["max-probes"], 100)
        self.assertEqual(parse("--max-probes", "5")["max-probes"], 5)

    def test_debug_dash_means_nothing(self) -> None:
        self.assertEqual(parse("-d", "-")["debug-classes"], frozenset())

    def test_bad_values_are_usage_errors(self) -> None:
        for argv, fragment in (
            (["-t", "soon"], "--time-lock takes a number"),
            (["-t", "-5"], "--time-lock must be"),
            (["-q", "70000"], "--queue must be"),
            (["-l", "pz"], "unknown event class(es) 'z'"),
            (["-d", "Q"], "unknown debug class(es) 'Q'"),
            (["-a", "gateway"], "--probe-source"),
            (["--green", "300.0.0.0/8"], "--green"),
            (["--failure-verdict", "maybe"], "accept' or 'drop"),
            (["--green-if", "eth 1"], "--green-if: not an interface name"),
            (["--green-if", "a" * 16], "--green-if: not an interface name"),
            (["--green-if", "eth0:1"], "--green-if: not an interface name"),
            (["--green-if", ".."], "--green-if: not an interface name"),
            (["--max-probes", "0"], "--max-probes must be between 1 and 100000"),
            (["--max-probes", "100001"], "--max-probes must be"),
            (["--reader", "libnfq"], "--reader must be one of native, netfilterqueue"),
            (["--json-classes", "cq"], "--json-classes: unknown event class(es) 'q'"),
            (["--bogus"], "bogus"),
        ):
            with self.assertRaises(usage.UsageError) as caught:
                parse(*argv)
            self.assertIn(fragment, str(caught.exception))

    def test_help_lists_every_option(self) -> None:
        text = str(Options())
        for name in (
            "--debug",
            "--no-udp-block",
            "--probe-source",
            "--buffer",
            "--store-file",
            "--dns-patterns",
            "--time-lock",
            "--client-dir",
            "--syslog-events",
            "--stderr-events",
            "--queue",
            "--control",
            "--green",
            "--max-peers",
            "--max-clients",
            "--max-spoofs",
            "--max-probes",
            "--green-if",
            "--reader",
            "--metrics",
            "--json-events",
            "--json-classes",
        ):
            self.assertIn(name, text)

    def test_metrics_on_loopback_unless_an_interface_is_named(self) -> None:
        self.assertEqual(parse("--metrics", "9120")["metrics"], "tcp:9120:interface=127.0.0.1")
        self.assertEqual(
            parse("--metrics", "tcp:9120:interface=198.18.0.1")["metrics"],
            "tcp:9120:interface=198.18.0.1",
        )

    def test_json_events(self) -> None:
        options = parse("--json-events", "/var/log/p2pwall.json", "--json-classes", "uUc")
        self.assertEqual(options["json-events"], "/var/log/p2pwall.json")
        self.assertEqual(options["json-event-classes"], frozenset("uUc"))

    def test_reader(self) -> None:
        self.assertEqual(parse()["reader"], "native")
        self.assertEqual(parse("--reader", "netfilterqueue")["reader"], "netfilterqueue")
        self.assertTrue(parse("--fail-open")["fail-open"])

    def test_fail_open_needs_the_native_reader(self) -> None:
        for argv in (["--reader", "netfilterqueue", "--fail-open"],
                     ["--fail-open", "--reader", "netfilterqueue"]):  # fmt: skip
            with self.assertRaises(usage.UsageError) as caught:
                parse(*argv)
            self.assertEqual(
                str(caught.exception),
                "--fail-open needs --reader native: NetfilterQueue cannot set the queue's "
                "fail-open flag",
            )
