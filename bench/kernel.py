"""``python -m bench.kernel``: what kernel enforcement (``--enforce kernel``, issue 13) costs,
side by side in one lab run with a conntrack-only gateway and with queue enforcement.

1. TCP connect latency, ``user`` -> ``pub``: p50 and p99 added to a conntrack-only gateway.
2. A flood from ``rogue``, TCP SYNs and UDP alternately, each packet to another of its
   learned peers (``--peers``, from a store file): the rate the gateway drops it at against
   the rate it forwards the same flood without p2pwall, and the daemon's CPU meanwhile.
3. Ordinary traffic from ``user``: TCP bulk data, many small UDP flows (new flows of
   ``--flow-packets`` datagrams as fast as one raw socket sends them), sequential connects.
4. ``--big-peers`` learned peers (a store file): how long a daemon takes to start with them in
   each mode, and the kernel memory the sets take.

Both daemons run for the whole traffic phase (queue enforcement on queue 0, kernel enforcement
on queue 3) and the scenarios take turns run by run; only the rules change in between. Every
install of the kernel rules replaces the nft table (its sets empty), so the daemon is asked to
``reload`` through its control port, which writes its tables into the sets again; its runs
start after the reply. Each daemon's rules come from ``p2pwall-rules --per-source-limit 0``
(the cost, not the per-source limit, is measured, as in ``bench.netbench``). Root only.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import math
import os
import re
import shlex
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from lab.gateway import ENV, Gateway
from lab.netlab import GREEN_HOSTS, Lab, LabError
from p2pwall import netlink
from p2pwall.store import HEADER, StoredBlock, format_block

from .kernelreport import BEGIN, END, PROBES, render, summarize
from .netbench import CONNECT_PORT, RAW_COST_RULES, SINK, NetBench, Settings, refusal
from .report import parse_kv, parse_netdev, parse_samples, percent, ratio, splice

# Learned peers: addresses from FIRST_PEER up (at most MAX_PEER_ADDRS, all routed to pub and
# dropped there), each on ports PEER_PORT, PEER_PORT + 1, ... until there are enough.
FIRST_PEER = "198.19.16.0"
MAX_PEER_ADDRS = 50_000
PEER_PORT = 6881
# The traffic of steps 2 and 3 goes to these addresses; pub drops it in its raw table.
FLOW_RANGE = "198.19.16.0-198.19.254.255"
SMALL_FLOW_ADDRS = 4096
SMALL_FLOW_PORT = 5004
FLOOD_SPORT = 40000
SMALL_FLOW_SPORT = 20000
SMALL_FLOW_SPORTS = 40000
MAX_PACKETS = 100_000_000  # the senders' count bound; the time bound ends them first
ORIGIN = "fasttrack-udp"  # a locking origin: each flood packet (re)locks rogue in kernel mode

QUEUE_QUEUE = 0
BIG_QUEUE = 5
QUEUE_CONTROL = 4121


@dataclass(frozen=True)
class Mode:
    """A kernel enforcement: its queue, its control port (where the bench asks it to
    ``reload``), and the options ``p2pwall-rules`` and the daemon both take."""

    queue: int
    control: int
    options: tuple[str, ...]


MODES = {
    "kernel": Mode(3, 4120, ("--enforce", "kernel")),
    "ipset": Mode(4, 4122, ("--enforce", "kernel", "--sets", "ipset")),
}
RELOAD_TIMEOUT = 120.0
IDLE_WINDOW = 5.0  # seconds the big table's daemon is watched at rest
SETTLE = 0.5  # seconds after the kernel daemon's reload before a measurement starts
# /proc/meminfo fields that hold kernel memory an nft set can take (kB).
MEMINFO_FIELDS = ("Slab", "SUnreclaim", "VmallocUsed", "Percpu")
# ctnetlink (linux/netfilter/nfnetlink_conntrack.h): delete, without a tuple, flushes.
CTNETLINK_DELETE = (1 << 8) | 2
NETLINK_NETFILTER = 12


@dataclass(frozen=True)
class Sizes:
    """What ``--quick`` makes smaller: learned peers, the big table, connects, runs."""

    peers: int = 100_000
    big_peers: int = 1_000_000
    flow_packets: int = 4  # datagrams per small UDP flow


def peer_layout(count: int) -> tuple[int, int]:
    """(addresses, ports) of ``count`` learned peers: every address on every port, so the
    flood's ``traffic flows`` arguments name exactly them (``ValueError`` otherwise)."""
    if count < 1:
        raise ValueError("the number of learned peers must be positive")
    addrs = min(count, MAX_PEER_ADDRS)
    ports, rest = divmod(count, addrs)
    if rest or PEER_PORT + ports > 65536:
        raise ValueError(f"{count:,} learned peers: not a multiple of {MAX_PEER_ADDRS:,}")
    return addrs, ports


def learned_peer(k: int, count: int) -> tuple[bytes, int]:
    """The ``k``-th of ``count`` learned peers as (packed address, port), in the flood's
    order: address k % addresses, port k // addresses."""
    addrs, _ = peer_layout(count)
    first = int(ipaddress.IPv4Address(FIRST_PEER))
    return (first + k % addrs).to_bytes(4, "big"), PEER_PORT + k // addrs


def learned_peers(count: int) -> Iterator[tuple[bytes, int]]:
    """All ``count`` learned peers, in the flood's order."""
    for k in range(count):
        yield learned_peer(k, count)


def write_store(path: Path, count: int, client: str, seen: float) -> Path:
    """A store file holding ``count`` peers learned by ``client`` from FastTrack hellos."""
    owner = socket.inet_aton(client)
    with path.open("w", encoding="ascii") as handle:
        handle.write(HEADER)
        for peer, port in learned_peers(count):
            handle.write(format_block(StoredBlock(peer, port, owner, ORIGIN, seen, None)) + "\n")
    return path


def scenario_keys(modes: Sequence[str], skipped: Iterable[str]) -> list[str]:
    """The scenarios a run takes turns with: the gateways without p2pwall, queue enforcement,
    then the kernel enforcements asked for (``MODES``) that started."""
    return [key for key in ("none", "conntrack", "queue", *modes) if key not in skipped]


def flush_conntrack() -> None:
    """Empty this namespace's conntrack table (what ``conntrack -F`` does), so every run
    starts from the same table; ``OSError`` when the kernel refuses."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER) as sock:
        sock.settimeout(5)
        sock.send(netlink.message(CTNETLINK_DELETE, 0, b"", flags=netlink.NLM_F_ACK))
        reply = sock.recv(4096)
    code = netlink.error_code(reply, 0, len(reply))
    if code:
        raise OSError(code, f"flushing conntrack: {netlink.error_text(code)}")


def ask(command: str, port: int, timeout: float = RELOAD_TIMEOUT) -> str:
    """Send one control-port command on loopback and read the reply up to its ``OK``/``ERR``
    line, timed (``nc -q`` would cut a reply that takes longer than its wait)."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(command.encode() + b"\n")
        reply = b""
        while not re.search(rb"^(OK|ERR)\b.*\n", reply, re.MULTILINE):
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
    return f"{reply.decode(errors='replace')}seconds={time.monotonic() - started:.6f}\n"


def meminfo(text: str) -> dict[str, int]:
    """The kernel-memory fields of ``/proc/meminfo``, in bytes."""
    found = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        if name in MEMINFO_FIELDS and rest.split():
            found[name] = int(rest.split()[0]) * 1024
    return found


def kernel_bytes(before: dict[str, int], after: dict[str, int]) -> int:
    """Slab, vmalloc and per-CPU memory the kernel took between two ``meminfo`` readings."""
    return sum(after[name] - before[name] for name in ("Slab", "VmallocUsed", "Percpu"))


class KernelBench(NetBench):
    """``bench.netbench``'s plumbing with both daemons, the flood and the big table."""

    def __init__(
        self,
        lab: Lab,
        tools: dict[str, Path],
        settings: Settings,
        sizes: Sizes,
        modes: Sequence[str] = ("kernel",),
        progress: Callable[[str], None] = print,
    ) -> None:
        super().__init__(lab, tools, settings, progress)
        self.sizes = sizes
        self.modes = modes  # the kernel enforcements measured (``MODES``)
        self.kernel_gws: dict[str, Gateway] = {}
        self.reload_seconds = math.nan
        self.daemon_pids: dict[str, int] = {}

    # -- the lab ----------------------------------------------------------------

    def prepare(self) -> None:
        """pub drops the flows' datagrams and SYNs in its raw table, after counting them."""
        self._run("pub", ["iptables", "-t", "raw", "-A", "PREROUTING", "-m", "iprange",
                          "--dst-range", FLOW_RANGE, "-j", "DROP"])  # fmt: skip

    def flush(self) -> None:
        self._run("gw", [sys.executable, "-m", "bench.kernel", "--flush-conntrack"])

    def _run(self, host: str, argv: list[str], timeout: float = 30) -> str:
        done = self.lab.run(host, argv, capture_output=True, text=True, timeout=timeout, env=ENV)
        if done.returncode:
            raise LabError(f"{' '.join(argv)} in {host} failed: {done.stderr.strip()[-2000:]}")
        return done.stdout

    def counters(self) -> tuple[float, int, int]:
        """(monotonic time, packets into gw from green, packets out of gw to pub)."""
        before = time.monotonic()
        into = parse_netdev(self._run("gw", ["cat", "/proc/net/dev"]))[self.lab.green_if]
        out = parse_netdev(self._run("pub", ["cat", "/proc/net/dev"]))["eth0"]
        return (before + time.monotonic()) / 2, into["rx_packets"], out["rx_packets"]

    # -- scenarios ----------------------------------------------------------------

    @contextlib.contextmanager
    def scenario(self, key: str) -> Iterator[tuple[int, int] | None]:
        """``key``'s rules in gw (``scenario_keys``); yields the PID of the daemon that enforces
        and its queue (or None)."""
        if key in ("none", "conntrack"):
            with super().scenario(key):
                yield None
        elif key == "queue":
            with super().scenario("p2pwall_b"):
                yield self.daemon_pids["queue"], QUEUE_QUEUE
        elif key in self.kernel_gws:
            gateway = self.kernel_gws[key]
            gateway.install_rules()
            try:
                self.reload_seconds = self.reload_kernel_sets(MODES[key].control)
                time.sleep(SETTLE)
                yield self.daemon_pids[key], MODES[key].queue
            finally:
                gateway.remove_rules()
        else:
            raise ValueError(key)

    def reload_kernel_sets(self, port: int) -> float:
        """The kernel daemon on ``port`` writes its tables into the new, empty sets; the
        seconds its control port took to answer ``reload`` (asked from gw, see ``ask``)."""
        reply = self._run("gw", [sys.executable, "-m", "bench.kernel", "--ask", "reload",
                                 "--ask-port", str(port)], timeout=RELOAD_TIMEOUT + 10)  # fmt: skip
        if not re.search(r"^OK reloaded, 0 problems$", reply, re.MULTILINE):
            raise LabError(f"the kernel daemon's reload failed: {reply.strip()[-2000:]}")
        return parse_kv(reply)["seconds"]

    @contextlib.contextmanager
    def daemons(self, store: Path) -> Iterator[dict]:
        """Every daemon with ``store``'s peers: queue enforcement (as ``native`` for
        ``NetBench.scenario``) and each of ``self.modes``; a mode whose rules or daemon fail
        to start is left out (``info["skipped"][mode]`` says why)."""
        info: dict = {"skipped": {}}
        common = ["--store-interval", "3600"]
        queue_gw = Gateway(self.lab, ["--store-file", str(self.copy(store, "queue")), *common,
                                      "--control", f"tcp:{QUEUE_CONTROL}:interface=127.0.0.1"],
                           rule_options=RAW_COST_RULES, queue=QUEUE_QUEUE,
                           log="p2pwall-queue.log")  # fmt: skip
        gateways = {"queue": queue_gw}
        try:
            queue_gw.start()
            self.started("queue", queue_gw)
            self.gateways["native"] = queue_gw
            for name in self.modes:
                gateways[name] = gateway = self.mode_gateway(name, store, MODES[name].queue)
                try:
                    gateway.install_rules()
                    gateway.start()
                except LabError as error:
                    info["skipped"][name] = refusal(str(error))
                    self.progress(f"left out: {name}, {info['skipped'][name]}")
                else:
                    self.started(name, gateway)
                    self.kernel_gws[name] = gateway
                finally:
                    gateway.remove_rules()
            yield info
        finally:
            self.gateways.pop("native", None)
            self.kernel_gws.clear()
            for gateway in gateways.values():
                gateway.close()
        for name, gateway in gateways.items():
            info[f"{name}_problems"] = log_problems(gateway.read_log())

    def mode_gateway(self, name: str, store: Path, queue: int, log: str = "") -> Gateway:
        """Kernel enforcement ``name`` (``MODES``) with its own copy of ``store``, on
        ``queue``, with its control port."""
        mode = MODES[name]
        options = [*mode.options, "--store-file", str(self.copy(store, log or name)),
                   "--store-interval", "3600", "--control",
                   f"tcp:{mode.control}:interface=127.0.0.1"]  # fmt: skip
        return Gateway(self.lab, options, rule_options=[*mode.options, *RAW_COST_RULES],
                       queue=queue, log=f"p2pwall-{log or name}.log")  # fmt: skip

    def started(self, name: str, gateway: Gateway) -> None:
        assert gateway.proc is not None
        self.pin_pid(gateway.proc.pid)
        self.daemon_pids[name] = gateway.proc.pid

    def copy(self, store: Path, name: str) -> Path:
        """Each daemon its own store file: each writes it at exit."""
        path = self.lab.logpath(f"bench-kernel-store-{name}.txt")
        path.write_bytes(store.read_bytes())
        return path

    # -- measurements -------------------------------------------------------------

    def flows_once(
        self, host: str, argv: list[str], daemon: tuple[int, int] | None
    ) -> dict[str, float]:
        """One run of ``traffic flows`` in ``host``: the packets/s that reached gw, that it
        forwarded, that it dropped, and the enforcing daemon's CPU over the steady window;
        what its queue dropped over the run (full, or the netlink buffer full)."""
        s = self.s
        pid, queue = daemon if daemon else (None, None)
        self.flush()
        rows0 = self.queue_rows()
        log = self._name("flows")
        sender = self.lab.spawn(host, self.sender([str(self.tools["traffic"]), "flows", *argv,
                                                   str(MAX_PACKETS), str(s.seconds)]),
                                log=log)  # fmt: skip
        started = time.monotonic()
        time.sleep(s.warmup)
        t0, in0, out0 = self.counters()
        cpu0 = self._cpu_reading(pid)
        time.sleep(max(0.1, started + s.seconds - s.tail - time.monotonic()))
        cpu1 = self._cpu_reading(pid)
        t1, in1, out1 = self.counters()
        self._finish(sender, s.seconds + 10)
        time.sleep(0.3)  # whatever is still queued gets its verdict
        rows1 = self.queue_rows()
        sent = parse_kv(self.lab.read_log(log))
        if "sent" not in sent:
            raise LabError(f"a flow sender reported nothing: {self.lab.read_log(log)[-1000:]}")
        seconds = t1 - t0
        run = {
            "sent_pps": sent["sent"] / sent["seconds"],
            "arrived_pps": (in1 - in0) / seconds,
            "forwarded_pps": (out1 - out0) / seconds,
        }
        run["dropped_pps"] = max(0.0, run["arrived_pps"] - run["forwarded_pps"])
        figures = self._cpu_figures(cpu0, cpu1, in1 - in0)
        if pid is not None:
            run["daemon_share"] = figures["reader_share"]
            run["daemon_us"] = figures["user_us"] + figures["sys_us"]
        if queue is not None:
            if queue not in rows0 or queue not in rows1:
                raise LabError(f"queue {queue} has no reader (see the lab's logs)")
            run["queue_drops"] = sum(rows1[queue][name] - rows0[queue][name]
                                     for name in ("queue_dropped", "user_dropped"))  # fmt: skip
        return run

    def flood_argv(self) -> list[str]:
        addrs, ports = peer_layout(self.sizes.peers)
        return ["mix", GREEN_HOSTS["rogue"], FIRST_PEER, str(addrs), str(PEER_PORT), str(ports),
                str(FLOOD_SPORT), "1", "1"]  # fmt: skip

    def small_flows_argv(self) -> list[str]:
        return ["udp", GREEN_HOSTS["user"], FIRST_PEER, str(SMALL_FLOW_ADDRS),
                str(SMALL_FLOW_PORT), "1", str(SMALL_FLOW_SPORT), str(SMALL_FLOW_SPORTS),
                str(self.sizes.flow_packets)]  # fmt: skip

    def connect_run(self, count: int) -> tuple[list[float], int, float]:
        """``count`` sequential connects user -> pub: the µs of each, failures, connects/s."""
        out = self._run("user", self.sender([str(self.tools["traffic"]), "connect", SINK,
                        str(CONNECT_PORT), str(count), "30"]), timeout=45)  # fmt: skip
        summary = parse_kv(out.splitlines()[-1] if out.strip() else "")
        rate = ratio(summary.get("connects", math.nan), summary.get("seconds", math.nan))
        return parse_samples(out), int(summary.get("failures", 0)), rate

    def measure(self, keys: Sequence[str]) -> dict:
        """Every measurement of the traffic phase for the scenarios ``keys``, run by run."""
        s = self.s
        # The flood runs everywhere; ordinary traffic is compared with conntrack alone.
        ordinary = [key for key in keys if key != "none"]
        flood: dict[str, list[dict]] = {key: [] for key in keys}
        small: dict[str, list[dict]] = {key: [] for key in ordinary}
        bulk: dict[str, list[float]] = {key: [] for key in ordinary}
        blocks: dict[str, list[list[float]]] = {key: [] for key in ordinary}
        rates: dict[str, list[float]] = {key: [] for key in ordinary}
        failures = dict.fromkeys(ordinary, 0)
        reloads: dict[str, list[float]] = {}
        for rep in range(s.reps):
            for key in keys:
                # The flood last: it leaves the queue daemon a backlog.
                with self.scenario(key) as daemon:
                    if key in MODES:
                        reloads.setdefault(key, []).append(self.reload_seconds)
                    if key in blocks:
                        block = s.connects // s.reps + (rep < s.connects % s.reps)
                        got, failed, rate = self.connect_run(block)
                        blocks[key].append(got)
                        failures[key] += failed
                        rates[key].append(rate)
                    if key in bulk:
                        bulk[key].append(self.tcp_bulk_once())
                    if key in small:
                        small[key].append(self.flows_once("user", self.small_flows_argv(), daemon))
                    if key in flood:
                        flood[key].append(self.flows_once("rogue", self.flood_argv(), daemon))
                self.progress(self.progress_line(rep, key, flood, small, bulk, rates))
        return {
            "flood": flood,
            "small": small,
            "bulk": bulk,
            "connect": {
                key: {"blocks": blocks[key], "failures": failures[key], "rates": rates[key]}
                for key in ordinary
            },
            "reload_seconds": reloads,
        }

    @staticmethod
    def progress_line(rep: int, key: str, *tables: dict) -> str:
        flood, small, bulk, rates = tables
        parts = [f"  run {rep + 1} {key:9}"]
        if key in flood:
            run = flood[key][-1]
            parts.append(f"flood {run['arrived_pps']:,.0f} in, {run['dropped_pps']:,.0f} "
                         f"dropped pps, daemon {percent(run.get('daemon_share'))}")  # fmt: skip
        if key in small:
            parts.append(f"small UDP flows {small[key][-1]['forwarded_pps']:,.0f} pps")
        if key in bulk:
            parts.append(f"bulk {bulk[key][-1]:.2f} Gbit/s")
        if key in rates:
            parts.append(f"{rates[key][-1]:,.0f} connects/s")
        return "; ".join(parts)

    # -- the big table --------------------------------------------------------------

    def big_table(self, store: Path, count: int, name: str) -> dict:
        """Start daemon ``name`` (queue or one of ``MODES``) with ``store`` (``count``
        peers): seconds until it logged ``loaded`` and until it read the queue; for a kernel
        enforcement, the kernel memory its sets take (``/proc/meminfo``: with the sets filled
        and the daemon stopped, less after its rules, sets included, were removed)."""
        kernel = name in MODES
        if kernel:
            gateway = self.mode_gateway(name, store, BIG_QUEUE, log=f"big-{name}")
        else:
            options = ["--store-file", str(self.copy(store, "big-queue")), "--store-interval",
                       "3600", "--control", f"tcp:{QUEUE_CONTROL}:interface=127.0.0.1"]  # fmt: skip
            gateway = Gateway(self.lab, options, queue=BIG_QUEUE, log="p2pwall-big-queue.log")
        result: dict = {}
        if kernel:
            gateway.install_rules()
        try:
            before = meminfo(Path("/proc/meminfo").read_text())
            result |= self.timed_start(gateway)
            assert gateway.proc is not None
            result["rss"] = rss_bytes(gateway.proc.pid)
            filled = meminfo(Path("/proc/meminfo").read_text())
            result["idle_share"] = self.idle_share(gateway.proc.pid)
            gateway.stop(wait=60)
            if kernel:
                found = KERNEL_LOADED.search(gateway.read_log())
                result["elements"] = int(found.group(1)) if found else None
                result["probes"] = self.probe_sets(count)
                stopped = meminfo(Path("/proc/meminfo").read_text())
                gateway.remove_rules()
                time.sleep(2)  # set elements are freed after an RCU grace period
                emptied = meminfo(Path("/proc/meminfo").read_text())
                result["kernel_bytes"] = kernel_bytes(emptied, stopped)
                result["kernel_bytes_running"] = kernel_bytes(before, filled)
        finally:
            gateway.close()
        result["problems"] = log_problems(gateway.read_log())
        return result

    def timed_start(self, gateway: Gateway) -> dict:
        """Start ``gateway``'s daemon, noting when its log says ``loaded N blocks``."""
        failure: list[BaseException] = []

        def start() -> None:
            try:
                gateway.start(wait=300)
            except BaseException as error:  # handed to the waiting thread
                failure.append(error)

        started = time.monotonic()
        thread = threading.Thread(target=start)
        thread.start()
        loaded_at = math.nan
        while thread.is_alive():
            if math.isnan(loaded_at) and LOADED.search(gateway.read_log()):
                loaded_at = time.monotonic() - started
            time.sleep(0.05)
        ready_at = time.monotonic() - started
        thread.join()
        if failure:
            raise failure[0]
        found = LOADED.search(gateway.read_log())
        return {
            "loaded": int(found.group(1)) if found else None,
            "loaded_s": loaded_at if not math.isnan(loaded_at) else ready_at,
            "ready_s": ready_at,
        }

    def idle_share(self, pid: int) -> float:
        """The daemon's CPU, as a share of one CPU, over IDLE_WINDOW seconds without traffic
        (what following the kernel's lock sets costs it)."""
        before = self._cpu_reading(pid)
        time.sleep(IDLE_WINDOW)
        return self._cpu_figures(before, self._cpu_reading(pid), 0)["reader_share"]

    def probe_sets(self, count: int) -> dict[str, int]:
        """SYNs from rogue that gw forwarded, PROBES to each of: a port of the first learned
        peer that it did not learn, the first and the last learned peer, that port again
        (rogue is now locked). Packets, not ``nft get element``, which reads the whole map."""
        _, ports = peer_layout(count)
        first, first_port = learned_peer(0, count)
        last, last_port = learned_peer(count - 1, count)
        forwarded = {}
        other = PEER_PORT + ports
        targets = (("not learned", first, other), ("first", first, first_port),
                   ("last", last, last_port), ("not learned, locked", first, other))  # fmt: skip
        for name, peer, port in targets:
            argv = ["syn", GREEN_HOSTS["rogue"], socket.inet_ntoa(peer), "1", str(port), "1",
                    str(FLOOD_SPORT + 1), "1", "1", str(PROBES), "5"]  # fmt: skip
            _, _, out0 = self.counters()
            self._run("rogue", [str(self.tools["traffic"]), "flows", *argv], timeout=20)
            time.sleep(0.2)
            _, _, out1 = self.counters()
            forwarded[name] = out1 - out0
        return forwarded


LOADED = re.compile(r"loaded (\d+) blocks")
PROBLEM = re.compile(r"#(?:error|critical)\]|\bfailed\b")
KERNEL_LOADED = re.compile(r"kernel sets loaded: (\d+) blocks")


def log_problems(text: str) -> list[str]:
    """A daemon log's error lines (twistd's ``#error``/``#critical`` levels, or a line
    saying something failed), without the tracebacks' lines."""
    return [line.strip() for line in text.splitlines()
            if PROBLEM.search(line) and not line.startswith(("\t", " "))]  # fmt: skip


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


# -- the whole run ---------------------------------------------------------------------


def run_lab(
    settings: Settings, sizes: Sizes, modes: Sequence[str], progress: Callable[[str], None]
) -> dict:
    """The traffic phase with every daemon, then the big table in each mode."""
    from .tools import build

    tools = build()
    results: dict = {}
    with Lab(peers=0, extra_addrs=[SINK]) as lab:
        progress(f"lab {lab.run_id} up; writing a store file of {sizes.peers:,} peers")
        bench = KernelBench(lab, tools, settings, sizes, modes, progress)
        bench.prepare()
        store = write_store(lab.logpath("bench-kernel-store.txt"), sizes.peers,
                            GREEN_HOSTS["rogue"], time.time())  # fmt: skip
        listener_log = bench._name("listen")
        listener = lab.spawn("pub", bench.receiver([str(tools["traffic"]), "tcp-listen", SINK,
                             str(CONNECT_PORT), "900"]), log=listener_log)  # fmt: skip
        bench._wait_log(listener_log, "ready", listener)
        with bench.daemons(store) as info:
            keys = scenario_keys(modes, info["skipped"])
            results["traffic"] = bench.measure(keys)
        listener.terminate()
        bench._finish(listener, 5)
        results["daemons"] = info
        results["big"] = {}
        count = sizes.big_peers
        progress(f"big table: a store file of {count:,} peers")
        big = write_store(lab.logpath("bench-kernel-big.txt"), count, GREEN_HOSTS["rogue"],
                          time.time())  # fmt: skip
        for name in ("queue", *modes):
            if name in info["skipped"]:
                continue
            try:
                results["big"][name] = bench.big_table(big, count, name)
            except LabError as error:
                results["big"][name] = {"failed": refusal(str(error))}
                progress(f"  {name}: {results['big'][name]['failed']}")
            else:
                results["big"][name]["peers"] = count
                progress(f"  {name}: ready in {results['big'][name]['ready_s']:.1f} s")
    return results


QUICK = {"seconds": 1.5, "reps": 2, "connects": 600, "peers": 10_000, "big_peers": 100_000}


def parser() -> argparse.ArgumentParser:
    found = argparse.ArgumentParser(prog="python -m bench.kernel",
                                    description=__doc__.split("\n")[0])  # fmt: skip
    found.add_argument("--seconds", type=float, default=2.0, help="seconds per traffic run")
    found.add_argument("--reps", type=int, default=4, help="runs per scenario")
    found.add_argument("--connects", type=int, default=2000, help="TCP connects per scenario")
    found.add_argument("--peers", type=int, default=100_000, help="peers the flood goes to")
    found.add_argument("--big-peers", type=int, default=1_000_000,
                       help="peers in the big table's store file")  # fmt: skip
    found.add_argument("--flow-packets", type=int, default=4, help="datagrams per small flow")
    found.add_argument(
        "--quick",
        action="store_true",
        help="a short run, whatever else is given: "
        + ", ".join(f"{name} {value:,}" for name, value in QUICK.items()),
    )
    found.add_argument("--ipset", action="store_true",
                       help="also kernel enforcement by ipset (--sets ipset)")  # fmt: skip
    found.add_argument("--no-pin", action="store_true",
                       help="do not pin senders and daemons to separate CPUs")  # fmt: skip
    found.add_argument("--results", type=Path, help="also update this file (bench/RESULTS.md)")
    # Run inside gw by the bench itself.
    found.add_argument("--flush-conntrack", action="store_true", help=argparse.SUPPRESS)
    found.add_argument("--ask", metavar="COMMAND", help=argparse.SUPPRESS)
    found.add_argument("--ask-port", type=int, help=argparse.SUPPRESS)
    return found


def check(args: argparse.Namespace) -> str | None:
    """What is wrong with the options, or None; ``--quick`` applied first."""
    if args.quick:
        for name, value in QUICK.items():
            setattr(args, name, value)
    if not 0.5 < args.seconds <= 30 or not 1 <= args.reps <= 10:
        return "--seconds must be in (0.5, 30] and --reps in 1..10"
    if not 1 <= args.flow_packets <= 1000 or args.connects < args.reps:
        return "--flow-packets must be in 1..1000 and --connects at least --reps"
    for name in ("peers", "big_peers"):
        try:
            peer_layout(getattr(args, name))
        except ValueError as error:
            return f"--{name.replace('_', '-')}: {error}"
    return None


def run(args: argparse.Namespace, command: str, progress: Callable[[str], None]) -> dict:
    """The kernel bench's results (``render`` turns them into its report section)."""
    from .run import loadavg, machine

    started = time.monotonic()
    settings = Settings(seconds=args.seconds, reps=args.reps, connects=args.connects,
                        pin=not args.no_pin)  # fmt: skip
    sizes = Sizes(peers=args.peers, big_peers=args.big_peers, flow_packets=args.flow_packets)
    facts = {"results": None, "small_flow_addrs": SMALL_FLOW_ADDRS}
    results = {"machine": machine(), "command": command, "settings": vars(args) | facts}
    modes = ("kernel", "ipset") if args.ipset else ("kernel",)
    results |= run_lab(settings, sizes, modes, progress)
    results["summary"] = summarize(results.pop("traffic"))
    results["elapsed"] = time.monotonic() - started
    results["load_end"] = loadavg()
    return results


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.flush_conntrack:
        flush_conntrack()
        return 0
    if args.ask:
        print(ask(args.ask, args.ask_port), end="")
        return 0
    problem = check(args)
    if problem:
        parser().error(problem)
    if os.geteuid() != 0:
        print("bench.kernel: needs root (namespaces, nft, iptables)", file=sys.stderr)
        return 1
    words = sys.argv[1:] if argv is None else list(argv)
    command = shlex.join([".venv/bin/python", "-m", "bench.kernel", *words])
    try:
        results = run(args, command, lambda line: print(line, file=sys.stderr, flush=True))
    except (LabError, subprocess.TimeoutExpired) as error:
        print(f"bench.kernel: {error}", file=sys.stderr)
        return 1
    text = render(results, command)
    print(text)
    if args.results is not None:
        old = args.results.read_text() if args.results.exists() else ""
        args.results.write_text(splice(old, text, BEGIN, END))
    return 0


if __name__ == "__main__":
    sys.exit(main())
