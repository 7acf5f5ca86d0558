"""The Prometheus endpoint: the counters as metric families, scraped over a real loopback socket
from the daemon's own registry; listening errors are one line."""

from __future__ import annotations

import socket

from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, readBody

from p2pwall import __version__
from p2pwall.errors import StartError
from p2pwall.kernel.sync import KernelSync
from p2pwall.metrics import DaemonCollector, MetricsService, MetricsSite, metrics_endpoint
from p2pwall.packet import Hook, Verdict, decode
from p2pwall.testing import FakeKernelSets, make_engine, tcp, udp

HELLO = b"\x27\x00\x00\x00\x29\x80KaZaA\x00"
READER = {
    "reader_errors": 1,
    "reader_undecoded": 2,
    "reader_cut": 3,
    "reader_enobufs": 4,
    "reader_refused": 5,
}
QUEUE = {"queue_total": 7, "queue_dropped": 8, "queue_user_dropped": 9}


def nothing() -> None:
    """No reader yet, no queue row."""


def samples(families) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample as ``{(name, sorted labels): value}``."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in families
        for sample in family.samples
    }


def busy_engine():
    """An engine that dropped a hello (and spoofed a pong), dropped a locked client's SYN and
    accepted a web SYN from another host."""
    engine = make_engine()
    engine.verdict(decode(udp("198.18.1.10", "198.19.1.1", 1214, 2000, HELLO)), Hook.FORWARD)
    engine.lock(bytes([198, 18, 1, 10]), "test")
    engine.verdict(decode(tcp("198.18.1.10", "198.19.0.80", 4000, 80)), Hook.FORWARD)
    engine.verdict(decode(tcp("198.18.1.11", "198.19.0.80", 4000, 80)), Hook.FORWARD)
    return engine


class EndpointTests(SynchronousTestCase):
    def test_loopback_unless_an_interface_is_named(self) -> None:
        for given, listened in (
            ("9120", "tcp:9120:interface=127.0.0.1"),
            ("tcp:9120", "tcp:9120:interface=127.0.0.1"),
            ("tcp6:9120", "tcp6:9120:interface=\\:\\:1"),
            ("tcp:9120:interface=0.0.0.0", "tcp:9120:interface=0.0.0.0"),
            ("unix:/run/p2pwall/metrics.sock", "unix:/run/p2pwall/metrics.sock"),
        ):
            self.assertEqual(metrics_endpoint(given), listened, given)


class CollectorTests(SynchronousTestCase):
    def collect(self, engine, reader=None, queue=None) -> dict:
        collector = DaemonCollector(engine, lambda: queue, lambda: reader, 1_700_000_000.0)
        return samples(collector.collect())

    def test_dns_reads_and_their_time(self) -> None:
        from scapy.layers.dns import DNS, DNSQR, DNSRR

        from p2pwall.detectors.dns import DnsDetector

        dns = DnsDetector()
        dns.banned.add("www.winmx.com")
        engine = make_engine(detectors=[dns])
        answer = DNS(id=1, qr=1, qd=DNSQR(qname="www.winmx.com"),
                     an=DNSRR(rrname="www.winmx.com", rdata="198.19.7.9"))  # fmt: skip
        packet = decode(udp("198.19.0.53", "198.18.1.10", 53, 4000, bytes(answer)))
        self.assertEqual(engine.verdict(packet, Hook.FORWARD), Verdict.ACCEPT)
        got = self.collect(engine)
        self.assertEqual(got[("p2pwall_dns_reads_total", ())], 1)
        self.assertGreater(got[("p2pwall_dns_read_seconds_total", ())], 0)

    def test_verdicts_by_reason(self) -> None:
        engine = busy_engine()
        engine.verdict(decode(tcp("198.18.1.11", "198.19.0.80", 4001, 80)), Hook.FORWARD)
        got = {
            labels: value
            for (name, labels), value in self.collect(engine).items()
            if name == "p2pwall_verdict_reasons_total"
        }
        self.assertEqual(
            {dict(labels)["reason"]: value for labels, value in got.items() if value},
            {"fasttrack": 1, "time lock": 1, "no rule": 2},
        )
        (accepted,) = [labels for labels in got if dict(labels)["reason"] == "no rule" and
                       dict(labels)["protocol"] == "tcp"]  # fmt: skip
        self.assertEqual(dict(accepted)["verdict"], "accept")

    def test_verdicts_tables_and_counters(self) -> None:
        got = self.collect(busy_engine())
        verdict = {
            (v, p): got[("p2pwall_verdicts_total", (("protocol", p), ("verdict", v)))]
            for v in ("accept", "drop", "would_drop")
            for p in ("tcp", "udp")
        }
        self.assertEqual(
            verdict,
            {("accept", "tcp"): 1, ("accept", "udp"): 0, ("drop", "tcp"): 1,
             ("drop", "udp"): 1, ("would_drop", "tcp"): 0, ("would_drop", "udp"): 0},
        )  # fmt: skip
        self.assertEqual(got[("p2pwall_spoofs_total", ())], 1)
        self.assertEqual(got[("p2pwall_clients", ())], 1)
        self.assertEqual(got[("p2pwall_clients_locked_total", ())], 1)
        self.assertEqual(got[("p2pwall_clients_capacity", ())], 100)
        # A detector's counters are metrics where it runs: this engine has no DNS detector.
        self.assertNotIn(("p2pwall_dns_answers_total", ()), got)
        self.assertEqual(got[("p2pwall_build_info", (("version", __version__),))], 1)
        self.assertEqual(got[("p2pwall_start_time_seconds", ())], 1_700_000_000.0)

    def test_learned_peers_and_probes(self) -> None:
        engine = busy_engine()
        engine.learn(bytes([198, 19, 1, 2]), 3000, bytes([198, 18, 1, 10]), "udp")
        engine.stats["probes_sent"] = 3
        engine.stats["probes_answered"] = 2
        got = self.collect(engine)
        self.assertEqual(got[("p2pwall_blocks", ())], len(engine.blocks))
        self.assertEqual(got[("p2pwall_peers_learned_total", ())], engine.stats["peers_learned"])
        self.assertGreaterEqual(got[("p2pwall_peers_learned_total", ())], 1)
        self.assertEqual(got[("p2pwall_probes_sent_total", ())], 3)
        self.assertEqual(got[("p2pwall_probes_answered_total", ())], 2)

    def test_kernel_set_writes(self) -> None:
        engine = make_engine()
        sync = KernelSync(engine, FakeKernelSets(), Clock())
        sync.start()
        engine.learn(bytes([198, 19, 1, 2]), 3000, bytes([198, 18, 1, 10]), "fasttrack-udp")
        sync.flush()
        got = self.collect(engine)
        self.assertEqual(got[("p2pwall_kernel_loads_total", ())], 1)
        self.assertEqual(got[("p2pwall_kernel_batches_total", ())], 1)
        self.assertEqual(got[("p2pwall_kernel_elements_total", ())], 1)
        self.assertEqual(got[("p2pwall_kernel_errors_total", ())], 0)

    def test_reader_and_queue_only_when_there_are_some(self) -> None:
        names = {name for name, _ in self.collect(make_engine())}
        self.assertFalse({n for n in names if n.startswith(("p2pwall_reader", "p2pwall_queue"))})
        got = self.collect(make_engine(), READER, QUEUE)
        for key, value in READER.items():
            self.assertEqual(got[(f"p2pwall_{key}_total", ())], value)
        self.assertEqual(got[("p2pwall_queue_packets", ())], 7)
        self.assertEqual(got[("p2pwall_queue_dropped_total", ())], 8)
        self.assertEqual(got[("p2pwall_queue_user_dropped_total", ())], 9)


class ScrapeTests(TestCase):
    """A real HTTP GET over loopback, answered by the reactor's thread pool."""

    def serve(self, engine, description: str = "tcp:0:interface=127.0.0.1") -> MetricsService:
        collector = DaemonCollector(engine, lambda: QUEUE, lambda: READER, 1_700_000_000.0)
        service = MetricsService(description, MetricsSite(collector), reactor)
        service.startService()
        self.addCleanup(service.stopService)
        return service

    @inlineCallbacks
    def scrape(self, service: MetricsService):
        url = f"http://127.0.0.1:{service.port.getHost().port}/metrics".encode()
        body = yield readBody((yield Agent(reactor).request(b"GET", url)))
        return samples(text_string_to_metric_families(body.decode()))

    @inlineCallbacks
    def test_two_daemons_each_with_their_own_metrics(self):
        busy, idle = self.serve(busy_engine()), self.serve(make_engine())
        spoofs = ("p2pwall_spoofs_total", ())
        self.assertEqual(
            ((yield self.scrape(busy))[spoofs], (yield self.scrape(idle))[spoofs]), (1, 0)
        )
        self.assertIsNone(REGISTRY.get_sample_value("p2pwall_spoofs_total"))

    @inlineCallbacks
    def test_scrape(self):
        engine = busy_engine()
        service = self.serve(engine)
        port = service.port.getHost().port
        url = f"http://127.0.0.1:{port}/metrics".encode()
        response = yield Agent(reactor).request(b"GET", url)
        body = (yield readBody(response)).decode()
        self.assertEqual(response.code, 200)
        self.assertIn(b"text/plain", response.headers.getRawHeaders(b"content-type")[0])
        got = samples(text_string_to_metric_families(body))
        self.assertEqual(
            got[("p2pwall_verdicts_total", (("protocol", "udp"), ("verdict", "drop")))], 1
        )
        self.assertEqual(got[("p2pwall_reader_enobufs_total", ())], 4)
        self.assertEqual(got[("p2pwall_queue_dropped_total", ())], 8)
        engine.verdict(decode(tcp("198.18.1.11", "198.19.0.80", 4001, 80)), Hook.FORWARD)
        got = yield self.scrape(service)
        self.assertEqual(
            got[("p2pwall_verdicts_total", (("protocol", "tcp"), ("verdict", "accept")))], 2
        )
        missing = yield Agent(reactor).request(b"GET", f"http://127.0.0.1:{port}/".encode())
        yield readBody(missing)
        self.assertEqual(missing.code, 404)


class ListenErrorTests(SynchronousTestCase):
    def test_a_busy_port_and_a_bad_endpoint_are_one_line(self) -> None:
        busy = socket.socket()
        self.addCleanup(busy.close)
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        site = MetricsSite(DaemonCollector(make_engine(), nothing, nothing, 0.0))
        for description, line in (
            (
                f"tcp:{port}:interface=127.0.0.1",
                f"metrics endpoint tcp:{port}:interface=127.0.0.1: cannot listen: "
                "Address already in use",
            ),
            ("tpc:9120", "metrics endpoint tpc:9120: bad endpoint: Unknown endpoint type: 'tpc'"),
        ):
            with self.assertRaises(StartError) as caught:
                MetricsService(description, site, reactor).privilegedStartService()
            self.assertEqual(str(caught.exception), line)
