"""The lab half of the benchmark: packets forwarded green -> public by the lab's gateway with
no queue rule, through the C accept-all reader, and through ``twistd p2pwall``.

Traffic comes from ``traffic`` (bench/traffic.c) in the ``user`` namespace and goes to one sink
address in ``pub``, where a raw-table rule drops it (no socket, no ICMP errors) after the
interface has counted it. Forwarded packets/s is pub's eth0 ``rx_packets`` sampled over the
steady part of each run (after a warm-up, before the end), so neither start-up nor the queue
draining after the sender stops is counted.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from lab.gateway import Gateway
from lab.netlab import Lab, LabError
from p2pwall.store import HEADER, StoredBlock, format_block

from .report import median, parse_kv, parse_netdev, parse_nfqueue, parse_samples, percentile

SINK = "198.19.9.9"
UDP_PORT = 5001
BULK_PORT = 5002
CONNECT_PORT = 5003
QUEUE = 0
PROC_QUEUE = "/proc/net/netfilter/nfnetlink_queue"
MAX_UDP = 50_000_000  # the sender's count bound; the time bound ends it first
# Learned peers for the daemon's store file: 198.18.2.0 upwards, port 1214 (never the sink's).
STORE_PEER_BASE = int(ipaddress.IPv4Address("198.18.2.0"))
STORE_PEER_PORT = 1214


@dataclass(frozen=True)
class Settings:
    seconds: float = 3.0  # per run
    reps: int = 3  # runs per scenario; the median is reported
    size: int = 64  # UDP payload bytes
    connects: int = 2000  # TCP connects per latency measurement
    warmup: float = 0.5  # seconds ignored at the start of a UDP run
    tail: float = 0.3  # and at its end
    daemon_peers: int = 100_000  # learned peers the daemon starts with (from a store file)


def udp_all_rule(lab: Lab, action: str) -> list[str]:
    """Variant (a): one rule queueing every forwarded UDP packet from green (no bypass)."""
    return ["iptables", action, "FORWARD", "-i", lab.green_if, "-p", "udp",
            "-j", "NFQUEUE", "--queue-num", str(QUEUE)]  # fmt: skip


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

    # -- plumbing ---------------------------------------------------------------

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

    def queue_stats(self) -> dict[str, int] | None:
        done = self.lab.run("gw", ["cat", PROC_QUEUE], capture_output=True, text=True)
        return parse_nfqueue(done.stdout).get(QUEUE) if done.returncode == 0 else None

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

    # -- measurements -----------------------------------------------------------

    def udp_once(self) -> dict[str, float]:
        s = self.s
        log = self._name("udp")
        argv = [str(self.tools["traffic"]), "udp", SINK, str(UDP_PORT), str(s.size),
                str(MAX_UDP), str(s.seconds)]  # fmt: skip
        _, total0 = self.rx_packets()
        sender = self.lab.spawn("user", argv, log=log)
        started = time.monotonic()
        time.sleep(s.warmup)
        t0, rx0 = self.rx_packets()
        time.sleep(max(0.1, started + s.seconds - s.tail - time.monotonic()))
        t1, rx1 = self.rx_packets()
        self._finish(sender, s.seconds + 10)
        time.sleep(0.3)  # whatever is still queued gets its verdict
        _, total1 = self.rx_packets()
        sent = parse_kv(self.lab.read_log(log))
        if "sent" not in sent:
            raise LabError(f"the UDP sender reported nothing: {self.lab.read_log(log)[-1000:]}")
        return {
            "pps": (rx1 - rx0) / (t1 - t0),
            "sent_pps": sent["sent"] / sent["seconds"],
            "sent": sent["sent"],
            "send_errors": sent.get("errors", 0),
            "received": total1 - total0,
        }

    def udp(self, scenario: str) -> dict:
        runs = []
        for rep in range(self.s.reps):
            run = self.udp_once()
            runs.append(run)
            self.progress(f"  {scenario}: UDP run {rep + 1}: {run['pps']:,.0f} pps forwarded "
                          f"({run['sent_pps']:,.0f} pps sent)")  # fmt: skip
        return {
            "pps": median(r["pps"] for r in runs),
            "sent_pps": median(r["sent_pps"] for r in runs),
            "sent": sum(r["sent"] for r in runs),
            "received": sum(r["received"] for r in runs),
            "runs": [round(r["pps"]) for r in runs],
        }

    def tcp_bulk_once(self) -> dict[str, float]:
        s = self.s
        log = self._name("bulk")
        sink = self.lab.spawn("pub", [str(self.tools["traffic"]), "tcp-sink", SINK,
                                      str(BULK_PORT), str(s.seconds + 15)], log=log)  # fmt: skip
        self._wait_log(log, "ready", sink)
        self._run("user", [str(self.tools["traffic"]), "tcp-send", SINK, str(BULK_PORT),
                           str(s.seconds)], timeout=s.seconds + 20)  # fmt: skip
        self._finish(sink, 15)
        got = parse_kv(self.lab.read_log(log))
        if not got.get("seconds"):
            raise LabError(f"the TCP sink measured nothing: {self.lab.read_log(log)[-1000:]}")
        return {"gbps": got["bytes"] * 8 / got["seconds"] / 1e9, "bytes": got["bytes"]}

    def tcp_bulk(self, scenario: str) -> dict:
        runs = []
        for rep in range(self.s.reps):
            run = self.tcp_bulk_once()
            runs.append(run)
            self.progress(f"  {scenario}: TCP bulk run {rep + 1}: {run['gbps']:.2f} Gbit/s")
        return {"gbps": median(r["gbps"] for r in runs), "runs": [r["gbps"] for r in runs]}

    def connect_latency(self, scenario: str) -> dict:
        s = self.s
        log = self._name("listen")
        listener = self.lab.spawn("pub", [str(self.tools["traffic"]), "tcp-listen", SINK,
                                          str(CONNECT_PORT), "60"], log=log)  # fmt: skip
        try:
            self._wait_log(log, "ready", listener)
            out = self._run("user", [str(self.tools["traffic"]), "connect", SINK,
                                     str(CONNECT_PORT), str(s.connects), "30"],
                            timeout=45)  # fmt: skip
        finally:
            if listener.poll() is None:
                listener.terminate()
            self._finish(listener, 5)
        samples = parse_samples(out)
        summary = parse_kv(out.splitlines()[-1] if out.strip() else "")
        result = {
            "n": len(samples),
            "failures": int(summary.get("failures", 0)),
            "p50": percentile(samples, 50),
            "p99": percentile(samples, 99),
            "mean": sum(samples) / len(samples) if samples else float("nan"),
            "max": max(samples, default=float("nan")),
            "over_1ms": sum(1 for sample in samples if sample > 1000),
        }
        self.progress(f"  {scenario}: {result['n']} TCP connects, p50 {result['p50']:.0f} µs, "
                      f"p99 {result['p99']:.0f} µs, {result['failures']} failed")  # fmt: skip
        return result

    # -- readers ----------------------------------------------------------------

    @contextlib.contextmanager
    def c_reader(self) -> Iterator[dict]:
        """The C accept-all program on queue 0; yields a dict filled with its counters."""
        info: dict = {}
        log = self._name("nfq_accept")
        proc = self.lab.spawn("gw", [str(self.tools["nfq_accept"]), str(QUEUE), "120"], log=log)
        try:
            self._wait_log(log, "ready", proc)
            yield info
            info["proc"] = self.queue_stats()
        finally:
            if proc.poll() is None:
                proc.terminate()
            self._finish(proc, 5)
        summary = parse_kv(self.lab.read_log(log))
        info["verdicts"] = summary.get("verdicts")
        info["enobufs"] = summary.get("enobufs")

    def store_file(self) -> Path:
        """A store file with ``daemon_peers`` learned peers, so the daemon's tables are as
        full as the engine benchmark's."""
        path = self.lab.logpath("bench-store.txt")
        if not path.exists():
            seen = time.time()
            lines = (
                format_block(StoredBlock((STORE_PEER_BASE + i).to_bytes(4, "big"),
                                         STORE_PEER_PORT, b"", "udp", seen, None))
                for i in range(self.s.daemon_peers)
            )  # fmt: skip
            path.write_text(HEADER + "".join(line + "\n" for line in lines))
        return path

    @contextlib.contextmanager
    def daemon(self, rules: bool, log: str) -> Iterator[dict]:
        """``twistd -n p2pwall`` via ``Gateway``; with ``rules`` its recommended rule set.
        Started with the bench's store file; its hourly save is kept out of the way."""
        info: dict = {}
        options = ["--store-file", str(self.store_file()), "--store-interval", "3600"]
        gateway = Gateway(self.lab, options, log=log)
        try:
            if rules:
                gateway.install_rules()
            gateway.start()
            yield info
            info["proc"] = self.queue_stats()
        finally:
            gateway.close()
        text = gateway.read_log()
        loaded = re.search(r"loaded (\d+) blocks", text)
        info["peers_loaded"] = int(loaded.group(1)) if loaded else None
        info["log_errors"] = sum(
            1 for line in text.splitlines() if "Traceback" in line or "failed" in line
        )

    @contextlib.contextmanager
    def rule(self, argv_for: Callable[[str], list[str]]) -> Iterator[None]:
        self._run("gw", argv_for("-A"))
        try:
            yield
        finally:
            self.lab.run("gw", argv_for("-D"), capture_output=True)

    # -- the whole lab run ------------------------------------------------------

    def run_all(self) -> dict:
        lab = self.lab
        udp, bulk, connect, queues = {}, {}, {}, {}
        self.prepare()

        self.progress("no queue rule (the kernel alone)")
        udp["none"] = self.udp("no queue")
        bulk["none"] = self.tcp_bulk("no queue")
        connect["none"] = self.connect_latency("no queue")

        self.progress("C accept-all reader, every UDP packet queued")
        with self.rule(lambda action: udp_all_rule(lab, action)), self.c_reader() as info:
            udp["c"] = self.udp("C accept-all")
        queues["c"] = info

        self.progress("twistd p2pwall, every UDP packet queued (a)")
        with self.rule(lambda action: udp_all_rule(lab, action)), \
                self.daemon(False, "p2pwall-a.log") as info:  # fmt: skip
            udp["p2pwall_a"] = self.udp("p2pwall (a)")
        queues["p2pwall_a"] = info

        self.progress("twistd p2pwall, the rule set p2pwall-rules recommends (b)")
        with self.daemon(True, "p2pwall-b.log") as info:
            udp["p2pwall_b"] = self.udp("p2pwall (b)")
            bulk["p2pwall_b"] = self.tcp_bulk("p2pwall (b)")
            connect["p2pwall_b"] = self.connect_latency("p2pwall (b)")
        queues["p2pwall_b"] = info
        return {"udp": udp, "tcp_bulk": bulk, "connect": connect, "queues": queues}
