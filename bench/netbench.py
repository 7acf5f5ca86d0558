"""The lab half of the benchmark: packets forwarded green -> public by the lab's gateway with
no queue rule, through the C accept-all reader, and through ``twistd p2pwall`` with each of its
queue readers (``--reader native`` and ``--reader netfilterqueue``).

Traffic comes from ``traffic`` (bench/traffic.c) in the ``user`` namespace and goes to one sink
address in ``pub``, where a raw-table rule drops it (no socket, no ICMP errors) after the
interface has counted it. Forwarded packets/s is pub's eth0 ``rx_packets`` sampled over the
steady part of each run (after a warm-up, before the end), so neither start-up nor the queue
draining after the sender stops is counted.

All readers run for the whole benchmark, the native daemon on queue 0, the C program on queue
1, the NetfilterQueue daemon on queue 2, and the scenarios take turns run by run (only a rule
changes in between), so a machine whose load drifts during the benchmark shifts all of them
alike instead of one. Each UDP run also reads the active reader's CPU time (``/proc/PID/stat``)
and every CPU's busy time (``/proc/stat``): CPU per packet is what a reader costs on any
machine, and the reader CPU's busy share says whether the reader or the sender was the limit.

The daemons run ``p2pwall-rules --per-source-limit 0``: the benchmark measures what queueing
costs, not the limit (a connect scenario opens thousands of flows from one host; ``bench.flood``
measures the limit).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from lab.gateway import Gateway
from lab.netlab import Lab, LabError
from p2pwall.store import HEADER, StoredBlock, format_block

from .report import (
    cpu_busy,
    median,
    parse_cpu_times,
    parse_kv,
    parse_netdev,
    parse_nfqueue,
    parse_pid_stat,
    parse_samples,
    per_packet_us,
    percentile,
)

SINK = "198.19.9.9"
UDP_PORT = 5001
BULK_PORT = 5002
CONNECT_PORT = 5003
DAEMON_QUEUE = 0
C_QUEUE = 1
NFQ_QUEUE = 2
PROC_QUEUE = "/proc/net/netfilter/nfnetlink_queue"
MAX_UDP = 50_000_000  # the sender's count bound; the time bound ends it first
# Learned peers for the daemon's store file: 198.18.2.0 upwards, port 1214 (never the sink's).
STORE_PEER_BASE = int(ipaddress.IPv4Address("198.18.2.0"))
STORE_PEER_PORT = 1214
QUEUE_COUNTERS = ("id_sequence", "queue_dropped", "user_dropped")
# Per UDP run: the reader's CPU µs per packet (user, system) and its share of one CPU (the
# process alone), the readers' CPU's and the senders' CPU's busy share (everything on them).
CPU_FIGURES = ("user_us", "sys_us", "reader_share", "reader_cpu_busy", "sender_cpu_busy")

CLOCK_TICK = os.sysconf("SC_CLK_TCK")
RAW_COST_RULES = ("--per-source-limit", "0")

# The daemon's readers: queue, control port, and the scenario keys of rule sets (a) and (b).
READERS = {
    "native": (DAEMON_QUEUE, 4120, "p2pwall_a", "p2pwall_b"),
    "netfilterqueue": (NFQ_QUEUE, 4122, "nfq_a", "nfq_b"),
}
UDP_SCENARIOS = ("none", "c", "p2pwall_a", "nfq_a", "p2pwall_b")
BULK_SCENARIOS = ("none", "conntrack", "p2pwall_b")
CONNECT_SCENARIOS = ("none", "p2pwall_b", "nfq_b")
# What a daemon that predates ``--reader`` says when given it.
UNKNOWN_READER_OPTION = "--reader not recognized"


@dataclass(frozen=True)
class Settings:
    seconds: float = 2.5  # per run
    reps: int = 5  # runs per scenario; the median is reported
    size: int = 64  # UDP payload bytes
    connects: int = 2000  # TCP connects per scenario (in ``reps`` interleaved blocks)
    warmup: float = 0.5  # seconds ignored at the start of a UDP run
    tail: float = 0.3  # and at its end
    daemon_peers: int = 100_000  # learned peers the daemon starts with (from a store file)
    pin: bool = True  # senders on the first CPU, readers and sinks on the last (if > 1 CPU)
    senders: int = 1  # UDP sender processes (each on the senders' CPU when pinning)


class NetBench:
    def __init__(
        self,
        lab: Lab,
        tools: dict[str, Path],
        settings: Settings,
        progress: Callable[[str], None] = print,
    ) -> None:
        self.lab = lab
        self.tools = tools
        self.s = settings
        self.progress = progress
        self._serial = 0
        self.gateways: dict[str, Gateway] = {}
        self.reader_pids: dict[int, int] = {}  # queue -> the PID of the process reading it

    # -- plumbing ---------------------------------------------------------------

    def _cpus(self) -> tuple[int, int] | None:
        cpus = sorted(os.sched_getaffinity(0))
        if not self.s.pin or len(cpus) < 2 or shutil.which("taskset") is None:
            return None
        return cpus[0], cpus[-1]

    def sender(self, argv: list[str]) -> list[str]:
        """``argv`` pinned to the senders' CPU (when pinning)."""
        cpus = self._cpus()
        return ["taskset", "-c", str(cpus[0]), *argv] if cpus else argv

    def receiver(self, argv: list[str]) -> list[str]:
        """``argv`` pinned to the readers' and sinks' CPU (when pinning)."""
        cpus = self._cpus()
        return ["taskset", "-c", str(cpus[1]), *argv] if cpus else argv

    def pin_pid(self, pid: int) -> None:
        """Move a process we started (all its threads) to the readers' CPU."""
        cpus = self._cpus()
        if cpus:
            subprocess.run(["taskset", "-a", "-p", "-c", str(cpus[1]), str(pid)],
                           capture_output=True, timeout=10, check=True)  # fmt: skip

    def _name(self, stem: str) -> str:
        self._serial += 1
        return f"bench-{self._serial:03d}-{stem}.log"

    def _run(self, host: str, argv: list[str], timeout: float = 30) -> str:
        done = self.lab.run(host, argv, capture_output=True, text=True, timeout=timeout)
        if done.returncode:
            raise LabError(f"{' '.join(argv)} in {host} failed: {done.stderr.strip()[-2000:]}")
        return done.stdout

    def prepare(self) -> None:
        """The sink: counted by pub's eth0, dropped in raw PREROUTING before any socket."""
        self._run("pub", ["iptables", "-t", "raw", "-A", "PREROUTING", "-d", SINK, "-p", "udp",
                          "--dport", str(UDP_PORT), "-j", "DROP"])  # fmt: skip

    def rx_packets(self) -> tuple[float, int]:
        """(monotonic time at the middle of the read, pub eth0 rx_packets)."""
        before = time.monotonic()
        text = self._run("pub", ["cat", "/proc/net/dev"])
        after = time.monotonic()
        return (before + after) / 2, parse_netdev(text)["eth0"]["rx_packets"]

    def queue_rows(self) -> dict[int, dict[str, int]]:
        done = self.lab.run("gw", ["cat", PROC_QUEUE], capture_output=True, text=True)
        return parse_nfqueue(done.stdout) if done.returncode == 0 else {}

    def _wait_log(self, log: str, text: str, proc: subprocess.Popen, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.lab.read_log(log):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise LabError(f"{log}: no {text!r}: {self.lab.read_log(log)[-2000:]}")
            time.sleep(0.02)

    def _finish(self, proc: subprocess.Popen, timeout: float) -> None:
        """Wait for a process we started; terminate it (by its PID) if it overstays."""
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.terminate()
            proc.wait(5)

    # -- what sits in gw for each scenario --------------------------------------

    def _iptables(self, action: str, rule: list[str]) -> None:
        self._run("gw", ["iptables", action, "FORWARD", *rule])

    def _queue_of(self, key: str) -> tuple[str | None, int | None]:
        """The reader (a ``READERS`` name, or None) and queue number scenario ``key`` uses."""
        if key == "c":
            return None, C_QUEUE
        for reader, (queue, _port, key_a, key_b) in READERS.items():
            if key in (key_a, key_b):
                return reader, queue
        if key in ("none", "conntrack"):
            return None, None
        raise ValueError(key)

    @contextlib.contextmanager
    def scenario(self, key: str) -> Iterator[int | None]:
        """Put ``key``'s rules in place; yields the queue number it uses (or None)."""
        green = self.lab.green_if
        reader, queue = self._queue_of(key)
        gateway = self.gateways[reader] if reader and key == READERS[reader][3] else None
        rule: list[str] | None = None
        if queue is not None and gateway is None:
            # Variant (a): one rule queueing every forwarded UDP packet from green (no bypass).
            rule = ["-i", green, "-p", "udp", "-j", "NFQUEUE", "--queue-num", str(queue)]
        elif key == "conntrack":
            # Conntrack alone: a rule that needs it and does nothing else (no target).
            rule = ["-m", "conntrack", "--ctstate", "NEW"]
        if rule is not None:
            self._iptables("-A", rule)
        if gateway is not None:
            gateway.install_rules()
        try:
            yield queue
        finally:
            if rule is not None:
                self.lab.run("gw", ["iptables", "-D", "FORWARD", *rule], capture_output=True)
            if gateway is not None:
                gateway.remove_rules()

    # -- measurements -----------------------------------------------------------

    def _cpu_reading(self, pid: int | None) -> dict:
        """The reader's (utime, stime) ticks and every CPU's (busy, total) ticks, now."""
        reading: dict = {
            "at": time.monotonic(),
            "cpus": parse_cpu_times(Path("/proc/stat").read_text()),
        }
        if pid is not None:
            reading["reader"] = parse_pid_stat(Path(f"/proc/{pid}/stat").read_text())
        return reading

    def _cpu_figures(self, before: dict, after: dict, packets: int) -> dict[str, float]:
        """The reader's CPU per packet (user, system) and its share of one CPU; the readers'
        and the senders' CPUs' busy shares."""
        figures: dict[str, float] = {}
        busy = cpu_busy(before["cpus"], after["cpus"])
        cpus = self._cpus()
        if cpus:
            figures["sender_cpu_busy"] = busy.get(cpus[0], float("nan"))
            figures["reader_cpu_busy"] = busy.get(cpus[1], float("nan"))
        if "reader" in before and "reader" in after:
            user = (after["reader"][0] - before["reader"][0]) / CLOCK_TICK
            system = (after["reader"][1] - before["reader"][1]) / CLOCK_TICK
            figures["user_us"] = per_packet_us(user, packets)
            figures["sys_us"] = per_packet_us(system, packets)
            figures["reader_share"] = (user + system) / (after["at"] - before["at"])
        return figures

    def udp_once(self, queue: int | None) -> dict[str, float]:
        s = self.s
        logs = [self._name("udp") for _ in range(s.senders)]
        argv = [str(self.tools["traffic"]), "udp", SINK, str(UDP_PORT), str(s.size),
                str(MAX_UDP), str(s.seconds)]  # fmt: skip
        pid = self.reader_pids.get(queue) if queue is not None else None
        rows0 = self.queue_rows()
        senders = [self.lab.spawn("user", self.sender(argv), log=log) for log in logs]
        started = time.monotonic()
        time.sleep(s.warmup)
        # The steady window: forwarded packets, the reader's CPU and its queue's counters are
        # all read at its start and at its end.
        t0, rx0 = self.rx_packets()
        cpu0, window0 = self._cpu_reading(pid), self.queue_rows()
        time.sleep(max(0.1, started + s.seconds - s.tail - time.monotonic()))
        cpu1, window1 = self._cpu_reading(pid), self.queue_rows()
        t1, rx1 = self.rx_packets()
        for sender in senders:
            self._finish(sender, s.seconds + 10)
        time.sleep(0.3)  # whatever is still queued gets its verdict
        rows1 = self.queue_rows()
        sent = [parse_kv(self.lab.read_log(log)) for log in logs]
        for log, got in zip(logs, sent, strict=True):
            if "sent" not in got:
                raise LabError(f"a UDP sender reported nothing: {self.lab.read_log(log)[-1000:]}")
        run = {
            "pps": (rx1 - rx0) / (t1 - t0),
            "sent_pps": sum(got["sent"] / got["seconds"] for got in sent),
            "sent": sum(got["sent"] for got in sent),
        }
        packets = 0
        if queue is not None:
            if any(queue not in rows for rows in (rows0, window0, window1, rows1)):
                raise LabError(f"queue {queue} has no reader (see the lab's logs)")
            for name in QUEUE_COUNTERS:
                run[name] = rows1[queue][name] - rows0[queue][name]
            # Handed to the reader in the window: ids given, less what the netlink buffer lost.
            packets = (window1[queue]["id_sequence"] - window0[queue]["id_sequence"]) - (
                window1[queue]["user_dropped"] - window0[queue]["user_dropped"]
            )
            run["packets_read"] = packets
        return run | self._cpu_figures(cpu0, cpu1, packets)

    def tcp_bulk_once(self) -> float:
        s = self.s
        log = self._name("bulk")
        sink = self.lab.spawn("pub", self.receiver([str(self.tools["traffic"]), "tcp-sink", SINK,
                              str(BULK_PORT), str(s.seconds + 15)]), log=log)  # fmt: skip
        self._wait_log(log, "ready", sink)
        self._run("user", self.sender([str(self.tools["traffic"]), "tcp-send", SINK,
                  str(BULK_PORT), str(s.seconds)]), timeout=s.seconds + 20)  # fmt: skip
        self._finish(sink, 15)
        got = parse_kv(self.lab.read_log(log))
        if not got.get("seconds"):
            raise LabError(f"the TCP sink measured nothing: {self.lab.read_log(log)[-1000:]}")
        return got["bytes"] * 8 / got["seconds"] / 1e9

    def connects_once(self, count: int) -> tuple[list[float], int]:
        out = self._run("user", self.sender([str(self.tools["traffic"]), "connect", SINK,
                        str(CONNECT_PORT), str(count), "30"]), timeout=45)  # fmt: skip
        summary = parse_kv(out.splitlines()[-1] if out.strip() else "")
        return parse_samples(out), int(summary.get("failures", 0))

    # -- readers ----------------------------------------------------------------

    @contextlib.contextmanager
    def c_reader(self) -> Iterator[dict]:
        """The C accept-all program on queue 1; yields a dict that gets its counters."""
        info: dict = {}
        log = self._name("nfq_accept")
        argv = self.receiver([str(self.tools["nfq_accept"]), str(C_QUEUE), "900"])
        proc = self.lab.spawn("gw", argv, log=log)
        try:
            self._wait_log(log, "ready", proc)
            self.reader_pids[C_QUEUE] = proc.pid
            yield info
        finally:
            self.reader_pids.pop(C_QUEUE, None)
            if proc.poll() is None:
                proc.terminate()
            self._finish(proc, 5)
        summary = parse_kv(self.lab.read_log(log))
        for name in ("verdicts", "enobufs"):
            info[name] = int(summary[name]) if name in summary else None

    def store_file(self, reader: str) -> Path:
        """A store file with ``daemon_peers`` learned peers, so the daemon's tables are as
        full as the engine benchmark's (one per daemon: each writes its own at exit)."""
        path = self.lab.logpath(f"bench-store-{reader}.txt")
        seen = time.time()
        lines = (
            format_block(StoredBlock((STORE_PEER_BASE + i).to_bytes(4, "big"), STORE_PEER_PORT,
                                     b"", "udp", seen, None))
            for i in range(self.s.daemon_peers)
        )  # fmt: skip
        path.write_text(HEADER + "".join(line + "\n" for line in lines))
        return path

    @contextlib.contextmanager
    def daemon(self, reader: str) -> Iterator[dict]:
        """``twistd -n p2pwall --reader READER`` on the reader's queue via ``Gateway`` (rules
        installed per scenario, without the per-source limit), started with the bench's store
        file; its hourly save is kept out of the way. A daemon that refuses a reader other than
        the native one (no ``--reader`` option yet, the package missing...) is left out:
        ``info["skipped"]`` says why; one without ``--reader`` has only the native reader."""
        queue, port, _key_a, _key_b = READERS[reader]
        info: dict = {"reader": reader, "option": f"--reader {reader}"}
        options = ["--store-file", str(self.store_file(reader)), "--store-interval", "3600",
                   "--control", f"tcp:{port}:interface=127.0.0.1"]  # fmt: skip
        gateway = Gateway(self.lab, options, rule_options=RAW_COST_RULES, queue=queue,
                          log=f"p2pwall-{reader}.log")  # fmt: skip
        try:
            if self._start(gateway, info):
                assert gateway.proc is not None
                self.pin_pid(gateway.proc.pid)
                self.gateways[reader] = gateway
                self.reader_pids[queue] = gateway.proc.pid
            yield info
        finally:
            self.gateways.pop(reader, None)
            self.reader_pids.pop(queue, None)
            gateway.close()
        text = gateway.read_log()
        loaded = re.search(r"loaded (\d+) blocks", text)
        info["peers_loaded"] = int(loaded.group(1)) if loaded else None
        info["log_errors"] = sum(
            1 for line in text.splitlines() if "Traceback" in line or "failed" in line
        )

    def _start(self, gateway: Gateway, info: dict) -> bool:
        """Start ``info["reader"]``'s daemon; False (and why in ``info``) when it is left out."""
        reader = info["reader"]
        try:
            gateway.start(["--reader", reader])
        except LabError as error:
            if reader == "native" and UNKNOWN_READER_OPTION in str(error):
                info["option"] = "none (the daemon has no --reader: its reader is the native one)"
                gateway.start()
                return True
            if reader == "native":
                raise
            info["skipped"] = refusal(str(error))
            self.progress(f"left out: the {reader} reader, the daemon refused it: "
                          f"{info['skipped']}")  # fmt: skip
            return False
        return True

    # -- the whole lab run ------------------------------------------------------

    def run_all(self) -> dict:
        self.prepare()
        listener_log = self._name("listen")
        listener = self.lab.spawn("pub", self.receiver([str(self.tools["traffic"]), "tcp-listen",
                                  SINK, str(CONNECT_PORT), "900"]), log=listener_log)  # fmt: skip
        self._wait_log(listener_log, "ready", listener)
        self.progress(
            "readers: twistd p2pwall --reader native on queue 0, C accept-all on queue 1, "
            "twistd p2pwall --reader netfilterqueue on queue 2"
        )
        with (
            self.c_reader() as c_info,
            self.daemon("native") as native_info,
            self.daemon("netfilterqueue") as nfq_info,
        ):
            left_out = {key for info in (native_info, nfq_info) if "skipped" in info
                         for key in READERS[info["reader"]][2:]}  # fmt: skip
            results = self._measure(left_out)
        listener.terminate()
        self._finish(listener, 5)
        results["readers"] = {"c": c_info, "p2pwall": native_info, "netfilterqueue": nfq_info}
        return results

    def _measure(self, left_out: set[str]) -> dict:
        """Every scenario but ``left_out``'s, taking turns run by run."""
        s = self.s
        udp_keys = [key for key in UDP_SCENARIOS if key not in left_out]
        bulk_keys = [key for key in BULK_SCENARIOS if key not in left_out]
        connect_keys = [key for key in CONNECT_SCENARIOS if key not in left_out]
        udp: dict[str, list[dict]] = {key: [] for key in udp_keys}
        bulk: dict[str, list[float]] = {key: [] for key in bulk_keys}
        samples: dict[str, list[float]] = {key: [] for key in connect_keys}
        failures = dict.fromkeys(connect_keys, 0)
        for rep in range(s.reps):
            for key in udp_keys:
                with self.scenario(key) as queue:
                    run = self.udp_once(queue)
                udp[key].append(run)
                self.progress(f"  UDP run {rep + 1} {key:10} {run['pps']:>9,.0f} pps "
                              f"forwarded ({run['sent_pps']:,.0f} pps sent)")  # fmt: skip
        for rep in range(s.reps):
            for key in bulk_keys:
                with self.scenario(key):
                    bulk[key].append(self.tcp_bulk_once())
                self.progress(f"  TCP bulk run {rep + 1} {key:10} {bulk[key][-1]:.2f} Gbit/s")
        for rep in range(s.reps):
            block = s.connects // s.reps + (rep < s.connects % s.reps)
            for key in connect_keys:
                with self.scenario(key):
                    got, failed = self.connects_once(block)
                samples[key] += got
                failures[key] += failed
        for key in connect_keys:
            self.progress(f"  TCP connect {key:10} p50 {percentile(samples[key], 50):.0f} "
                          f"µs, p99 {percentile(samples[key], 99):.0f} µs")  # fmt: skip
        return {
            "udp": {key: summarize_udp(runs) for key, runs in udp.items()},
            "tcp_bulk": {key: {"gbps": median(runs), "runs": runs} for key, runs in bulk.items()},
            "connect": {
                key: summarize_connects(samples[key], failures[key]) for key in connect_keys
            },  # fmt: skip
        }


def refusal(error: str) -> str:
    """The line that says why a daemon did not start: the last of its log's tail."""
    lines = [line.strip() for line in error.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no reason given"


def summarize_udp(runs: list[dict]) -> dict:
    """Median rates of a scenario's runs; its queue counters summed over them."""
    summary = {
        "pps": median(r["pps"] for r in runs),
        "sent_pps": median(r["sent_pps"] for r in runs),
        "runs": [round(r["pps"]) for r in runs],
    }
    for name in (*QUEUE_COUNTERS, "packets_read"):
        if runs and name in runs[0]:
            summary[name] = sum(r[name] for r in runs)
    for name in CPU_FIGURES:
        if runs and name in runs[0]:
            summary[name] = median(r[name] for r in runs)
    return summary


def summarize_connects(samples: list[float], failures: int) -> dict:
    return {
        "n": len(samples),
        "failures": failures,
        "p50": percentile(samples, 50),
        "p99": percentile(samples, 99),
        "max": max(samples, default=float("nan")),
        "over_1ms": sum(1 for sample in samples if sample > 1000),
    }
