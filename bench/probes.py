"""The probe storm of issue 9: what one forged datagram costs to build (scapy, as before, against
``struct``), what 16,384 probes cost in one go, and the longest ``Engine.tick`` when 16,384 locked
clients are all due for a probe at once.

Nothing is sent: the raw sockets of ``RawSpoofer`` are replaced by a sink that only takes the
bytes (so the ``sendto`` system call, a few µs, is not in these figures). Route lookups are
real: the clients live in 127.0.0.0/8, which every machine routes (``connect`` on UDP sends
nothing). ``python -m bench.probes`` prints a Markdown report (``--json``: the numbers).
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
import timeit
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from twisted.internet.task import Clock

from bench.run import machine as run_machine
from p2pwall import spoof
from p2pwall.events import EventLog
from p2pwall.packet import Hook, Verdict, addr_text, decode
from p2pwall.service import tick_interval
from p2pwall.spoof import RawSpoofer, build_udp, local_address
from p2pwall.testing import make_engine, packed, udp

HELLO = b"\x27\x00\x00\x00\x29\x80KaZaA\x00"
PEER, PEER_PORT, HELLO_PORT = packed("198.19.1.1"), 2000, 1214
PEER6 = packed("2001:2:1::1")
TIME_LOCK = 120.0
CHECKOUT = Path(__file__).resolve().parent.parent

Build = Callable[[bytes, int, bytes, int, bytes], bytes]


def scapy_build(src: bytes, sport: int, dst: bytes, dport: int, payload: bytes) -> bytes:
    """What ``spoof.build_udp`` did before issue 9: scapy builds the datagram."""
    return udp(addr_text(src), addr_text(dst), sport, dport, payload)


BUILDS: dict[str, Build] = {"scapy (before)": scapy_build, "struct (after)": build_udp}


def clients(count: int) -> list[bytes]:
    """``count`` distinct client addresses from 127.1.0.1 up (at most 2**23)."""
    base = int.from_bytes(packed("127.1.0.1"), "big")
    return [(base + index).to_bytes(4, "big") for index in range(count)]


class Sink:
    """A raw socket that takes the bytes and sends nothing."""

    def sendto(self, data: bytes, address: tuple) -> int:
        return len(data)

    def close(self) -> None:
        """Nothing to release."""


def sink_spoofer() -> RawSpoofer:
    spoofer = RawSpoofer()
    spoofer._sockets = {4: Sink(), 16: Sink()}
    return spoofer


@contextmanager
def building_with(build: Build) -> Iterator[None]:
    """``RawSpoofer`` builds its datagrams with ``build`` inside the block."""
    saved = spoof.build_udp
    spoof.build_udp = build
    try:
        yield
    finally:
        spoof.build_udp = saved


def per_datagram(repeat: int) -> dict:
    """Best-of-``repeat`` µs to build one probe (the hello, 12 bytes), per family and builder;
    the builders take turns window by window."""
    cases = {
        "IPv4": (PEER, clients(1)[0]),
        "IPv6": (PEER6, packed("2001:2::10")),
    }
    numbers = {"scapy (before)": 500, "struct (after)": 50_000}
    best = {(family, name): float("inf") for family in cases for name in BUILDS}
    for _ in range(repeat):
        for family, (src, dst) in cases.items():
            for name, build in BUILDS.items():
                seconds = timeit.timeit(
                    lambda build=build, src=src, dst=dst: build(
                        src, PEER_PORT, dst, HELLO_PORT, HELLO
                    ),
                    number=numbers[name],
                )
                best[family, name] = min(best[family, name], seconds / numbers[name] * 1e6)
    return {
        family: {
            **{name: best[family, name] for name in BUILDS},
            "ratio": best[family, "scapy (before)"] / best[family, "struct (after)"],
        }
        for family in cases
    }


def route_lookup(count: int) -> dict:
    """µs per route lookup: a new UDP socket each time (before) against one reconnected."""
    addrs = clients(count)
    start = time.perf_counter()
    for dst in addrs:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            local_address(probe, dst)
    fresh = time.perf_counter() - start
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        start = time.perf_counter()
        for dst in addrs:
            local_address(probe, dst)
        reused = time.perf_counter() - start
    return {"lookups": count, "new socket (before)": fresh / count * 1e6,
            "one socket (after)": reused / count * 1e6}  # fmt: skip


def storm(count: int) -> dict:
    """Seconds to build ``count`` probes to distinct clients, in one go, with each builder;
    and the whole ``RawSpoofer.send_udp`` path (route lookup included) into a sink."""
    addrs = clients(count)
    totals = {}
    for name, build in BUILDS.items():
        start = time.perf_counter()
        for dst in addrs:
            build(PEER, PEER_PORT, dst, HELLO_PORT, HELLO)
        totals[name] = time.perf_counter() - start
    for name, build in BUILDS.items():
        spoofer = sink_spoofer()
        with building_with(build):
            start = time.perf_counter()
            for dst in addrs:
                spoofer.send_udp(None, PEER_PORT, dst, HELLO_PORT, HELLO)
            seconds = time.perf_counter() - start
        spoofer.close()
        if (spoofer.sent, spoofer.failed) != (count, 0):
            raise RuntimeError(f"send_udp: {spoofer.sent} sent, {spoofer.failed} failed")
        totals[f"send_udp path, {name}"] = seconds
    return {"probes": count, "seconds": totals}


def locked_engine(count: int, max_probes: int):
    """An engine with ``count`` clients locked by a hello each, its spoofer a sink, and its
    clock at the moment every probe is due."""
    clock = Clock()
    clock.advance(1_000_000)
    engine = make_engine(
        clock,
        time_lock=TIME_LOCK,
        green=("127.0.0.0/8",),
        max_peers=count + 1,
        max_clients=count + 1,
        max_probes=max_probes,
    )
    engine.events = EventLog()  # make_engine's MemoryEvents keeps every event
    for addr in clients(count):
        packet = decode(build_udp(addr, HELLO_PORT, PEER, PEER_PORT, HELLO))
        if engine.verdict(packet, Hook.FORWARD) != Verdict.DROP:
            raise RuntimeError(f"the hello from {addr_text(addr)} was not dropped")
    if len(engine.clients) != count:
        raise RuntimeError(f"{len(engine.clients)} clients locked, wanted {count}")
    engine.spoofer = sink_spoofer()
    clock.advance(TIME_LOCK / 2)
    return engine, clock


def engine_ticks(count: int, max_probes: int, build: Build) -> dict:
    """Every tick, timed, from the moment all ``count`` probes are due until the table is
    empty (each lock expires at T: a client not probed by then is released unprobed)."""
    engine, clock = locked_engine(count, max_probes)
    interval = tick_interval(TIME_LOCK)
    spoofer = engine.spoofer
    durations, probing = [], []
    with building_with(build):
        for _ in range(int(TIME_LOCK / interval) * 4):
            sent = spoofer.sent
            start = time.perf_counter()
            engine.tick()
            durations.append(time.perf_counter() - start)
            if spoofer.sent > sent:
                probing.append(len(durations) - 1)
            if not len(engine.clients):
                break
            clock.advance(interval)
    if len(engine.clients):
        raise RuntimeError(f"{len(engine.clients)} clients still locked after {len(durations)}")
    if spoofer.sent != engine.stats["probes_sent"] or spoofer.failed:
        raise RuntimeError(f"{spoofer.sent} probes sent, {spoofer.failed} failed")
    return {
        "max_probes": max_probes,
        "ticks": len(durations),
        "tick_interval": interval,
        "probes_sent": spoofer.sent,
        "probing_ticks": len(probing),
        "last_probe_after": probing[-1] * interval if probing else None,
        "longest_ms": max(durations) * 1e3,
        "total_ms": sum(durations) * 1e3,
    }


def engine_storm(count: int, rates: Sequence[int]) -> list[dict]:
    return [
        {"build": name, **engine_ticks(count, rate, build)}
        for rate in rates
        for name, build in BUILDS.items()
    ]


def machine() -> str:
    """``bench.run.machine``'s facts on one line."""
    m = run_machine()
    return (
        f"{m['nproc']} CPUs, kernel {m['kernel']}, Python {m['python']}, commit {m['commit']}, "
        f"{m['date']}, load average {m['load']}"
    )


def report(results: dict) -> str:
    lines = [f"Command: `{results['command']}`  ", f"Machine: {results['machine']}", ""]
    lines += ["### Building one probe (the 12-byte KaZaA hello), best of "
              f"{results['repeat']} windows", "",
              "| family | scapy (before) µs | struct (after) µs | scapy / struct |",
              "|---|---|---|---|"]  # fmt: skip
    for family, row in results["per_datagram"].items():
        lines.append(
            f"| {family} | {row['scapy (before)']:.1f} | {row['struct (after)']:.2f} "
            f"| {row['ratio']:.0f} |"
        )
    routes = results["route_lookup"]
    lines += ["", f"Route lookup (the source of a probe, once per new client; "
              f"{routes['lookups']:,} lookups): a new UDP socket each time (before) "
              f"{routes['new socket (before)']:.1f} µs, one socket connected again (after) "
              f"{routes['one socket (after)']:.1f} µs.", ""]  # fmt: skip
    burst = results["storm"]
    lines += [f"### {burst['probes']:,} probes at once (built, not sent)", "",
              "| what | seconds |", "|---|---|"]  # fmt: skip
    for name, seconds in burst["seconds"].items():
        lines.append(f"| {name} | {seconds:.3f} |")
    lines += ["", "The send_udp path: route lookup (every client is new), build, the sink's "
              "sendto; the before row already uses the reused route socket.", ""]  # fmt: skip
    ticks = results["engine"]
    lines += [
        f"### Engine.tick with {results['clients']:,} locked clients, every probe due at once",
        "",
        "| build | max_probes /s | probes sent | ticks that probed | last probe after s "
        "| longest tick ms | all ticks ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in ticks:
        lines.append(
            f"| {row['build']} | {row['max_probes']:,} | {row['probes_sent']:,} | "
            f"{row['probing_ticks']} | {row['last_probe_after']} | {row['longest_ms']:.1f} | "
            f"{row['total_ms']:.0f} |"
        )
    lines += ["", f"T = {TIME_LOCK:.0f} s, a tick every {ticks[0]['tick_interval']} s (the "
              "daemon's interval for T), from T/2 (all probes due) until every lock has "
              "expired; a client not probed before its lock expires is released unprobed. "
              "Each tick handles at most TICK_ACTIONS entries (probes, expiries, "
              "re-schedules).", ""]  # fmt: skip
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.probes", description=__doc__)
    parser.add_argument("--clients", type=int, default=16_384, help="locked clients / probes")
    parser.add_argument("--repeat", type=int, default=7, help="timing windows per builder")
    parser.add_argument("--rates", type=int, nargs="+", default=[100, 100_000],
                        help="Engine(max_probes=...) values to run (100: the default)")  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print the numbers as JSON")
    args = parser.parse_args(argv)
    if not 1 <= args.clients <= 2**23 or args.repeat < 1 or min(args.rates) < 1:
        parser.error("--clients must be 1..8388608, --repeat and --rates at least 1")
    command = "python -m bench.probes " + " ".join(sys.argv[1:] if argv is None else argv)
    results = {
        "command": command.strip(),
        "machine": machine(),
        "clients": args.clients,
        "repeat": args.repeat,
        "per_datagram": per_datagram(args.repeat),
        "route_lookup": route_lookup(min(args.clients, 4096)),
        "storm": storm(args.clients),
        "engine": engine_storm(args.clients, args.rates),
    }
    print(json.dumps(results, indent=2) if args.json else report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
