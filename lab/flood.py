"""The two sides of a flood test: a green host sending FastTrack hellos as new UDP flows at full
speed, and another green host making TCP connects that must keep working meanwhile.

Used by ``tests/e2e/test_flood.py`` and ``bench/flood.py`` through ``run_in_lab``; the two
programs run inside lab namespaces::

    python -m lab.flood hellos --seconds 30 --report F         # in rogue
    python -m lab.flood connects --target 198.19.0.80:80 --seconds 25 --report F   # in user

Every hello goes to another (peer address, port) pair, so each one is a new conntrack flow, the
first packet of which the rules would queue. Both sides stop after ``--seconds`` (at most
``MAX_SECONDS``) and only ever send to the lab's address range.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from lab import ftwire
from lab.gateway import CHECKOUT, ENV
from lab.netlab import WEB_ADDR, Lab, LabError

MAX_SECONDS = 120.0
FLOOD_PEERS = [f"198.19.1.{host}" for host in range(1, 255)]
FLOOD_PORTS = range(1024, 65536)
CHECK_EVERY = 1024  # packets between two looks at the clock


def destinations() -> Iterator[tuple[str, int]]:
    """Every (peer, port) pair once before any repeats: 16 million new flows."""
    while True:
        for port in FLOOD_PORTS:
            for ip in FLOOD_PEERS:
                yield ip, port


def hellos(seconds: float) -> dict:
    hello = ftwire.build_hello()
    sent = errors = 0
    start = time.monotonic()
    deadline = start + seconds
    targets = destinations()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        while time.monotonic() < deadline:
            for _ in range(CHECK_EVERY):
                try:
                    sock.sendto(hello, next(targets))
                    sent += 1
                except OSError:  # ENOBUFS from a full device queue: the flood goes on
                    errors += 1
    elapsed = time.monotonic() - start
    return {"sent": sent, "errors": errors, "seconds": elapsed, "pps": sent / elapsed}


def connects(target: tuple[str, int], seconds: float, interval: float, timeout: float) -> dict:
    latencies: list[float] = []
    failures: dict[str, int] = {}
    tried = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        tried += 1
        began = time.monotonic()
        try:
            socket.create_connection(target, timeout=timeout).close()
            latencies.append((time.monotonic() - began) * 1000)
        except OSError as error:
            kind = type(error).__name__
            failures[kind] = failures.get(kind, 0) + 1
        time.sleep(interval)
    return {"tried": tried, "succeeded": len(latencies), "failures": failures,
            "latencies_ms": latencies}  # fmt: skip


def success_ratio(report: dict) -> float:
    return report["succeeded"] / report["tried"] if report["tried"] else 0.0


@dataclass(frozen=True)
class FloodRun:
    flood: dict | None  # the flooder's report, None for a run without flood
    connects: dict


def run_in_lab(lab: Lab, seconds: float, flood: bool = True, ramp: float = 1.0,
               interval: float = 0.05, timeout: float = 1.0) -> FloodRun:  # fmt: skip
    """``rogue`` floods for ``seconds`` (if ``flood``) while ``user`` connects to the lab's web
    server, from ``ramp`` seconds after the flood starts to ``ramp`` seconds before it ends."""
    module = [sys.executable, "-m", "lab.flood"]
    flood_path, connects_path = lab.logpath("flood.json"), lab.logpath("connects.json")
    flooder = None
    if flood:
        argv = [*module, "hellos", "--seconds", str(seconds), "--report", str(flood_path)]
        flooder = lab.spawn("rogue", argv, log="flood.log", env=ENV, cwd=CHECKOUT)
        time.sleep(ramp)
    done = lab.run(
        "user",
        [*module, "connects", "--target", f"{WEB_ADDR}:80", "--seconds", str(seconds - 2 * ramp),
         "--interval", str(interval), "--timeout", str(timeout), "--report", str(connects_path)],
        env=ENV, cwd=CHECKOUT, capture_output=True, text=True, timeout=seconds + 30,
    )  # fmt: skip
    if done.returncode:
        raise LabError(f"connects failed: {done.stderr[-2000:]}")
    if flooder is not None and flooder.wait(seconds + 30):
        raise LabError(f"the flooder failed: {lab.read_log('flood.log')[-2000:]}")
    return FloodRun(
        json.loads(flood_path.read_text()) if flooder is not None else None,
        json.loads(connects_path.read_text()),
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.flood", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    flood = sub.add_parser("hellos", help="FastTrack hellos, each a new UDP flow, at full speed")
    check = sub.add_parser("connects", help="TCP connects one after another, timed")
    check.add_argument("--target", required=True, metavar="IP:PORT")
    check.add_argument("--interval", type=float, default=0.05)
    check.add_argument("--timeout", type=float, default=1.0)
    for command in (flood, check):
        command.add_argument("--seconds", type=float, required=True)
        command.add_argument("--report", required=True, type=Path)
    args = parser.parse_args(argv)
    if not 0 < args.seconds <= MAX_SECONDS:
        parser.error(f"--seconds must be in (0, {MAX_SECONDS:g}]")
    if args.command == "hellos":
        report = hellos(args.seconds)
    else:
        try:
            target = ftwire.parse_addr(args.target)
        except ValueError as error:
            parser.error(f"--target: {error}")
        report = connects(target, args.seconds, args.interval, args.timeout)
    args.report.write_text(json.dumps(report) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
