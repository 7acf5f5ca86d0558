"""The Prometheus endpoint (``--metrics``): the daemon's counters, read when scraped.

Nothing here runs per packet: the engine, the reader and the DNS detector keep their plain
counters (``Engine.stats``, ``QueueReader.stats``), and ``DaemonCollector`` turns them into
metric families at each scrape, on a registry of its own (a daemon's metrics, never the
process-wide default registry's). ``prometheus_client``'s Twisted resource runs the scrape in
the reactor's thread pool: the collector only copies counters (a dict copy is atomic under the
GIL) and reads one /proc file, so it never waits on the reactor thread or holds it up.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client.core import CollectorRegistry, CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from twisted.web.resource import Resource
from twisted.web.server import Site

from . import __version__
from .commands import QUEUE_FIELDS, READER_FIELDS
from .control import ControlService
from .engine import Engine

PATH = b"metrics"
LOOPBACK = {"tcp": "127.0.0.1", "tcp6": "\\:\\:1"}

Stats = Callable[[], "Mapping[str, int] | None"]

# Engine.stats keys shown as counters: (key, metric name without p2pwall_ and _total, help);
# each detector adds its own (``IDetectorFactory.counters``).
ENGINE_COUNTERS = (
    ("accept_all", "accept_all_packets", "Packets accepted unread because accept-all was on."),
    ("probes_sent", "probes_sent", "Time-lock probes sent."),
    ("probes_answered", "probes_answered", "Time-lock probes a running client answered."),
    ("peers_learned", "peers_learned", "Blocks learned from traffic."),
    ("clients_locked", "clients_locked", "Clients identified and locked."),
    ("clients_released", "clients_released", "Client locks ended."),
    ("forged_source", "forged_source", "Packets whose MAC does not own their source address."),
    ("would_probe", "dry_run_probes", "Probes not sent in dry-run mode."),
    ("hooks_run", "hooks_run", "--on-lock/--on-release commands started."),
    ("hooks_skipped", "hooks_skipped", "Hook commands skipped: too many running."),
    ("hooks_failed", "hooks_failed", "Hook commands that failed."),
    ("hooks_killed", "hooks_killed", "Hook commands killed after their timeout."),
    ("kernel_batches", "kernel_batches", "Batches of changes written to the kernel's sets."),
    ("kernel_elements", "kernel_elements", "Block elements added, changed or removed in them."),
    ("kernel_loads", "kernel_loads", "Whole copies of the tables written into the kernel's sets."),
    ("kernel_errors", "kernel_errors", "Batches the kernel refused (a whole copy follows)."),
    (
        "kernel_forged_locks",
        "kernel_forged_locks",
        "Locks the kernel bound to a MAC that does not own the address (a forgery).",
    ),
)
# The verdict counters by (verdict, protocol).
VERDICTS = {
    "accept_tcp": ("accept", "tcp"),
    "accept_udp": ("accept", "udp"),
    "drop_tcp": ("drop", "tcp"),
    "drop_udp": ("drop", "udp"),
    "would_drop_tcp": ("would_drop", "tcp"),
    "would_drop_udp": ("would_drop", "udp"),
}
READER_HELP = {
    "reader_errors": "Errors reading the queue, deciding or sending a verdict.",
    "reader_undecoded": "Packets accepted because they could not be decoded.",
    "reader_cut": "Packets the reader's copy cut, decided on their headers.",
    "reader_enobufs": "ENOBUFS reports: the kernel dropped messages for a full socket buffer.",
    "reader_refused": "Verdicts the kernel refused with EPERM.",
}
QUEUE_COUNTER_HELP = {
    "queue_dropped": "Packets the kernel dropped because the queue was full.",
    "queue_user_dropped": "Packets the kernel dropped because the netlink buffer was full.",
}


def metrics_endpoint(text: str) -> str:
    """The endpoint ``--metrics`` listens on: a bare port, or a ``tcp``/``tcp6`` endpoint
    without ``interface=``, is on loopback (the metrics are not for the whole network unless
    the admin names an interface); anything else is as given."""
    if text.isdigit():
        text = f"tcp:{text}"
    kind = text.split(":", 1)[0]
    if kind in LOOPBACK and ":interface=" not in text:
        return f"{text}:interface={LOOPBACK[kind]}"
    return text


class DaemonCollector(Collector):
    """The daemon's metrics from its counters: ``queue_stats`` and ``reader_stats`` give the
    kernel queue's /proc row and the reader's counters, or None while there are none."""

    def __init__(
        self, engine: Engine, queue_stats: Stats, reader_stats: Stats, started: float
    ) -> None:
        self.engine = engine
        self.queue_stats = queue_stats
        self.reader_stats = reader_stats
        self.started = started

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        engine = self.engine
        stats = dict(engine.stats)
        info = GaugeMetricFamily(
            "p2pwall_build_info", "The running p2pwall's version.", labels=["version"]
        )
        info.add_metric([__version__], 1)
        yield info
        yield GaugeMetricFamily(
            "p2pwall_start_time_seconds", "When the daemon started, in epoch seconds.",
            value=self.started,
        )  # fmt: skip
        verdicts = CounterMetricFamily(
            "p2pwall_verdicts",
            "Packets decided, by verdict (would_drop: accepted in dry-run mode) and protocol.",
            labels=["verdict", "protocol"],
        )
        for key, labels in VERDICTS.items():
            verdicts.add_metric(list(labels), stats.get(key, 0))
        yield verdicts
        yield self._reasons(stats, dict(engine.reasons))
        counters = [*ENGINE_COUNTERS, *(row for d in engine.detectors for row in d.counters)]
        for key, name, text in counters:
            yield CounterMetricFamily(f"p2pwall_{name}", text, value=stats.get(key, 0))
        yield CounterMetricFamily(
            "p2pwall_dns_read_seconds",
            "CPU time spent reading DNS answers (divide by p2pwall_dns_reads_total for the mean).",
            value=stats.get("dns_read_ns", 0) / 1e9,
        )
        yield from self._tables()
        yield GaugeMetricFamily("p2pwall_dry_run", "1 in dry-run mode.", value=int(engine.dry_run))
        yield GaugeMetricFamily(
            "p2pwall_accept_all", "1 in accept-all mode.", value=int(engine.accept_all)
        )
        yield from self._reader()
        yield from self._queue()

    @staticmethod
    def _reasons(stats: dict[str, int], reasons: dict[tuple[str, str], int]) -> CounterMetricFamily:
        """Verdicts by reason; accepts by no rule are what the other reasons leave of the
        total (the engine does not count that common case twice)."""
        family = CounterMetricFamily(
            "p2pwall_verdict_reasons",
            "Packets decided, by verdict, protocol and reason (a detector, 'blocked peer "
            "(origin)', 'time lock', 'allowed', 'no rule'...).",
            labels=["verdict", "protocol", "reason"],
        )
        for key, (verdict, protocol) in VERDICTS.items():
            counted = 0
            for (reason_key, reason), count in sorted(reasons.items()):
                if reason_key == key:
                    family.add_metric([verdict, protocol, reason], count)
                    counted += count
            if verdict == "accept":
                family.add_metric([verdict, protocol, "no rule"], stats.get(key, 0) - counted)
        return family

    def _tables(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        blocks, clients = self.engine.blocks, self.engine.clients
        yield GaugeMetricFamily("p2pwall_blocks", "Blocks in the table.", value=len(blocks))
        yield GaugeMetricFamily(
            "p2pwall_blocks_capacity", "The block table's cap (--max-peers).", value=blocks.cap
        )
        yield CounterMetricFamily(
            "p2pwall_blocks_evicted", "Learned blocks evicted.", value=blocks.evicted
        )
        yield GaugeMetricFamily(
            "p2pwall_clients", "Clients locked (or expiring) now.", value=len(clients)
        )
        yield GaugeMetricFamily(
            "p2pwall_clients_capacity", "The client table's cap (--max-clients).",
            value=clients.cap,
        )  # fmt: skip
        yield CounterMetricFamily(
            "p2pwall_clients_evicted", "Clients evicted.", value=clients.evicted
        )
        yield GaugeMetricFamily(
            "p2pwall_allowed_networks", "Allowed networks.", value=len(self.engine.allowed)
        )

    def _reader(self) -> Iterator[CounterMetricFamily]:
        """The reader's counters, once the queue is bound."""
        reader = self.reader_stats()
        if reader is None:
            return
        for key in READER_FIELDS:
            yield CounterMetricFamily(f"p2pwall_{key}", READER_HELP[key], value=reader[key])

    def _queue(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        """Our queue's row of /proc/net/netfilter/nfnetlink_queue, when it has one."""
        queue = self.queue_stats()
        if queue is None:
            return
        total, *counters = QUEUE_FIELDS
        yield GaugeMetricFamily(
            "p2pwall_queue_packets", "Packets waiting in the kernel queue.", value=queue[total]
        )
        for key in counters:
            yield CounterMetricFamily(f"p2pwall_{key}", QUEUE_COUNTER_HELP[key], value=queue[key])


class MetricsSite(Site):
    """``/metrics`` on a registry of the daemon's own; no access log line per scrape."""

    noisy = False

    def __init__(self, collector: Collector) -> None:
        # Imported here: prometheus_client.twisted installs the default reactor on import, so
        # it must come after twistd installed the one chosen.
        from prometheus_client.twisted import MetricsResource

        self.registry = CollectorRegistry()
        self.registry.register(collector)
        root = Resource()
        root.putChild(PATH, MetricsResource(self.registry))
        super().__init__(root)

    def log(self, request: object) -> None:
        """Prometheus scrapes every few seconds: the daemon log is not the place for it."""


class MetricsService(ControlService):
    """Listens on ``--metrics`` as the control port listens (``ControlService``: before root is
    given up, one-line ``StartError``s), naming the metrics endpoint in its errors."""

    what = "metrics endpoint"
