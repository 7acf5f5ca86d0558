"""The engine alone, in-process: µs per benign packet (decode + ``Engine.verdict``) with many
peers learned, and the memory a learned peer costs in a ``BlockTable``.

``python -m bench.engine memory --peers N --method tracemalloc|rss`` is the child process the
memory figure is measured in (a fresh interpreter, nothing else allocated in between).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import timeit
from collections.abc import Sequence
from pathlib import Path

from p2pwall.events import EventLog
from p2pwall.options import Options
from p2pwall.packet import Hook, Verdict, decode
from p2pwall.registry import REGISTRY
from p2pwall.tables import ANY_CLIENT, BlockTable
from p2pwall.testing import make_engine, packed, tcp, udp

USER = "198.18.1.20"
SINK = "198.19.9.9"
WEB = "198.19.0.80"
# Learned peers: 198.18.2.0 upwards (the lab range, clear of the green /24); in-process only.
PEER_BASE = int.from_bytes(packed("198.18.2.0"), "big")
PEER_PORT = 1214
CHECKOUT = Path(__file__).resolve().parent.parent

BENIGN = {
    # What rule set (b) queues from an ordinary host: its UDP, its SYNs, and (when a string
    # marker matches in the first packets) the start of a TCP stream; plus plain TCP data.
    "UDP 64 B to a public host": lambda: udp(USER, SINK, 40000, 5001, bytes(64)),
    "TCP SYN to a web server": lambda: tcp(USER, WEB, 40001, 80, "S"),
    "TCP first data (HTTP GET)": lambda: tcp(
        USER, WEB, 40001, 80, "PA", b"GET /index.html HTTP/1.1\r\nHost: web\r\n\r\n"
    ),
    "TCP data, established": lambda: tcp(USER, WEB, 40001, 80, "A", bytes(1200)),
}
# Which of p2pwall-rules' rule sets would queue each kind from an ordinary host.
QUEUED_BY = {
    "UDP 64 B to a public host": "iptables and nft",
    "TCP SYN to a web server": "iptables and nft",
    "TCP first data (HTTP GET)": "neither (nft: `GET /.` paths; iptables: FastTrack markers)",
    "TCP data, established": "neither",
}
QUEUED_KINDS = tuple(kind for kind, rules in QUEUED_BY.items() if rules != "neither")


def peer_key(index: int) -> bytes:
    return (PEER_BASE + index).to_bytes(4, "big")


def engine_with_peers(peers: int):
    """``make_engine`` with the daemon's detectors (the registry's, default options), a quiet
    event log and ``peers`` learned peers."""
    options = Options()
    options.parseOptions([])
    detectors = [entry.detector.from_options(options) for entry in REGISTRY]
    engine = make_engine(max_peers=max(1000, peers * 2), detectors=detectors)
    engine.events = EventLog()  # make_engine's MemoryEvents records every packet
    for index in range(peers):
        engine.learn(peer_key(index), PEER_PORT, ANY_CLIENT, "fasttrack-udp")
    if len(engine.blocks) != peers:
        raise RuntimeError(f"learned {len(engine.blocks)} peers, wanted {peers}")
    return engine


def time_engine(peers: int = 100_000, number: int = 20_000, repeat: int = 15) -> dict:
    """Best-of-``repeat`` µs per packet for each benign kind, decode + verdict.

    The kinds take turns, repeat by repeat, and the best (least disturbed) window counts: on a
    shared machine the minimum is the figure closest to the code's own cost.
    """
    engine = engine_with_peers(peers)
    timers = {}
    for name, build in BENIGN.items():
        data = build()
        packet = decode(data)
        if packet is None or engine.verdict(packet, Hook.FORWARD) != Verdict.ACCEPT:
            raise RuntimeError(f"{name}: not a benign, accepted packet")
        timers[name] = timeit.Timer(
            "verdict(decode(data), hook)",
            globals={"verdict": engine.verdict, "decode": decode, "data": data,
                     "hook": Hook.FORWARD},
        )  # fmt: skip
    best = dict.fromkeys(BENIGN, float("inf"))
    for _ in range(repeat):
        for name, timer in timers.items():
            best[name] = min(best[name], timer.timeit(number))
    results = {name: seconds / number * 1e6 for name, seconds in best.items()}
    # A blocked peer, for contrast (dropped; locks the sender; not benign).
    blocked = udp(USER, "198.18.2.7", 40000, PEER_PORT, bytes(64))
    if engine.verdict(decode(blocked), Hook.FORWARD) != Verdict.DROP:
        raise RuntimeError("a learned peer was not blocked")
    return {
        "peers": len(engine.blocks),
        "number": number,
        "repeat": repeat,
        "us_per_packet": results,
        "worst_queued_us": max(results[name] for name in QUEUED_KINDS),
        "python": sys.version.split()[0],
    }


# -- memory per learned peer -------------------------------------------------


def _rss_bytes() -> int:
    with open("/proc/self/statm", encoding="ascii") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def fill_table(peers: int) -> BlockTable:
    """A table of ``peers`` learned ``(addr, port, b"")`` entries as the daemon makes them:
    a fresh address and port object and a fresh timestamp per peer."""
    table = BlockTable(peers + 1)
    base = 1_700_000_000.0
    for index in range(peers):
        port = 1024 + (index * 7919) % 64000
        table.add(peer_key(index), port, ANY_CLIENT, "fasttrack-udp", base + index * 1e-3)
    return table


def measure_memory(peers: int, method: str) -> dict:
    """Bytes per peer by ``tracemalloc`` (Python allocations) or RSS delta (what the OS sees)."""
    gc.collect()
    if method == "tracemalloc":
        import tracemalloc

        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        table = fill_table(peers)
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
    elif method == "rss":
        before = _rss_bytes()
        table = fill_table(peers)
        gc.collect()
        after = _rss_bytes()
    else:
        raise ValueError(f"method must be tracemalloc or rss, not {method!r}")
    if len(table) != peers:
        raise RuntimeError(f"table holds {len(table)} peers, wanted {peers}")
    return {"method": method, "peers": peers, "bytes": after - before,
            "bytes_per_peer": (after - before) / peers}  # fmt: skip


def memory_in_subprocess(peers: int, method: str, timeout: float = 120) -> dict:
    done = subprocess.run(
        [sys.executable, "-m", "bench.engine", "memory", "--peers", str(peers), "--method", method],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=CHECKOUT,
        env={**os.environ, "PYTHONPATH": str(CHECKOUT)},
        check=False,
    )
    if done.returncode:
        raise RuntimeError(f"memory measurement failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.engine")
    sub = parser.add_subparsers(dest="command", required=True)
    memory = sub.add_parser("memory", help="bytes per learned peer (prints JSON)")
    memory.add_argument("--peers", type=int, default=1_000_000)
    memory.add_argument("--method", choices=("tracemalloc", "rss"), default="tracemalloc")
    timing = sub.add_parser("timing", help="µs per benign packet (prints JSON)")
    timing.add_argument("--peers", type=int, default=100_000)
    timing.add_argument("--number", type=int, default=100_000)
    args = parser.parse_args(argv)
    if args.command == "memory":
        print(json.dumps(measure_memory(args.peers, args.method)))
    else:
        print(json.dumps(time_engine(args.peers, args.number), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
