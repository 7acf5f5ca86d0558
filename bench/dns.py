"""DNS answers on the reactor thread (issue 9, section 3): what reading one costs, scapy (the
code before issue 9) against ``p2pwall.dnswire`` (and dnslib / dnspython when installed; they
are not dependencies), and how much of the daemon's time a green host flooding it with answers
can take under the DNS detector's budget.

Everything runs in-process, nothing is sent, no root: the flood drives ``Engine.verdict`` with a
``task.Clock``, so simulated seconds pass as fast as the code runs, and the figure is the real
CPU time the verdicts took per simulated second. ``python -m bench.dns`` prints a Markdown report
(``--json``: the numbers).
"""

from __future__ import annotations

import argparse
import importlib
import json
import struct
import sys
import time
import timeit
from collections.abc import Callable, Sequence
from pathlib import Path

from scapy.config import conf
from scapy.layers.dns import DNS, DNSQR, DNSRR, DNSRROPT
from scapy.layers.inet import UDP
from scapy.utils import rdpcap
from twisted.internet.task import Clock

from bench.probes import machine
from bench.report import table
from p2pwall import dnswire
from p2pwall.detectors.dns import BUDGET, DnsDetector
from p2pwall.detectors.patterns import PatternSet
from p2pwall.events import EventLog
from p2pwall.packet import Hook, Verdict, decode
from p2pwall.testing import make_engine, udp

CHECKOUT = Path(__file__).resolve().parent.parent
SERVER, HOST = "198.19.0.53", "198.18.1.20"
RATE = 200  # hostile answers a second, as in the issue
RECORD = struct.Struct("!HHIH")

Parser = Callable[[bytes], object]


def scapy_parse(message: bytes) -> object:
    """What the detector did before issue 9: scapy, lists up to 512 records."""
    saved, conf.max_list_count = conf.max_list_count, dnswire.MAX_RECORDS
    try:
        return DNS(message)
    finally:
        conf.max_list_count = saved


def parsers() -> dict[str, Parser]:
    """scapy and dnswire, then those of dnslib and dnspython that are importable."""
    found: dict[str, Parser] = {"scapy (before)": scapy_parse, "dnswire (after)": dnswire.read}
    for label, module, attribute in (
        ("dnslib", "dnslib", "DNSRecord"),
        ("dnspython", "dns.message", "from_wire"),
    ):
        try:
            imported = importlib.import_module(module)
        except ImportError:
            continue
        target = getattr(imported, attribute)
        found[label] = target.parse if label == "dnslib" else target
    return found


def answers() -> dict[str, bytes]:
    """The answers timed: a real small one, a typical CDN one, the issue's 88 A records."""
    capture = CHECKOUT / "tests" / "data" / "ndpi_bt-dns.pcap"
    (small,) = [
        bytes(frame[UDP].payload) for frame in rdpcap(str(capture)) if frame[UDP].sport == 53
    ]
    cdn = DNS(
        id=9,
        qr=1,
        rd=1,
        ra=1,
        qd=[DNSQR(qname="www.example.org")],
        an=[
            DNSRR(rrname="www.example.org", type="CNAME", rdata="www.example.org.cdn.example.net"),
            DNSRR(rrname="www.example.org.cdn.example.net", type="CNAME", rdata="e1.cdn.example"),
            *(DNSRR(rrname="e1.cdn.example", type="A", rdata=f"198.19.3.{n}") for n in (1, 2, 3)),
        ],
        ar=[DNSRROPT(rclass=1232)],
    )
    return {
        "small (real, 1 A)": small,
        "typical (2 CNAME + 3 A + OPT)": bytes(cdn.compress()),
        "88 A records (issue 9)": eighty_eight(),
    }


def eighty_eight() -> bytes:
    """The issue's hostile answer: 88 A records, compressed, ~1,450 bytes."""
    records = [DNSRR(rrname="x.example", type="A", rdata=f"198.19.4.{n}") for n in range(88)]
    return bytes(DNS(id=8, qr=1, qd=[DNSQR(qname="x.example")], an=records).compress())


def worst() -> bytes:
    """The most reading one UDP datagram can cause: 240 records whose owners are 126 labels
    of one unprintable byte each (every label escaped), all different, ~64 KB."""
    records = b"".join(
        b"".join(bytes([1, (n + k) % 32]) for k in range(126))
        + b"\0"
        + RECORD.pack(1, 1, 60, 4)
        + bytes(4)
        for n in range(240)
    )
    return struct.pack("!6H", 1, 0x8180, 1, 240, 0, 0) + b"\x01x\0\0\x01\0\x01" + records


def parse_costs(repeat: int) -> list[dict]:
    """Best-of-``repeat`` µs per answer; the parsers take turns window by window."""
    found = parsers()
    rows = []
    for name, message in answers().items():
        best = dict.fromkeys(found, float("inf"))
        for _ in range(repeat):
            for label, parse in found.items():
                number = max(1, int(2000 / (1 + len(message) // 50)))
                seconds = timeit.timeit(lambda: parse(message), number=number)  # noqa: B023
                best[label] = min(best[label], seconds / number * 1e6)
        rows.append({"answer": name, "bytes": len(message), "us": best})
    return rows


def flood(message: bytes, seconds: int, budget: float, patterns: bool = True) -> dict:
    """``RATE`` copies of ``message`` a second for ``seconds`` simulated seconds from one server
    to one green host through ``Engine.verdict``: CPU ms per simulated second, answers read."""
    clock = Clock()
    dns = DnsDetector(budget=budget)
    if patterns:
        dns.patterns = PatternSet([r"(^|\.)winmx\.com$"])
    engine = make_engine(clock, detectors=[dns])
    engine.events = EventLog()
    data = udp(SERVER, HOST, 53, 40000, message)
    spent = 0.0
    for _ in range(seconds * RATE):
        packet = decode(data)
        start = time.perf_counter()
        verdict = engine.verdict(packet, Hook.FORWARD)
        spent += time.perf_counter() - start
        if verdict != Verdict.ACCEPT:
            raise RuntimeError("a DNS answer was not accepted")
        clock.advance(1 / RATE)
    stats = engine.stats
    return {
        "ms_per_s": spent / seconds * 1e3,
        "read_per_s": (stats["dns_answers"] - stats["dns_over_budget"]) / seconds,
        "over_budget": stats["dns_over_budget"],
    }


def stall(seconds: int, repeat: int) -> list[dict]:
    """The flood with the default budget, against reading everything (a budget no flood
    reaches), against the old code (RATE x scapy's cost per answer), and with nothing to
    train (no patterns: the header alone decides)."""
    rows = []
    for name, message in (("88 A records (issue 9)", eighty_eight()), ("worst (~64 KB)", worst())):
        scapy_us = min(timeit.repeat(lambda: scapy_parse(message), number=1, repeat=repeat)) * 1e6  # noqa: B023
        ours_us = min(timeit.repeat(lambda: dnswire.read(message), number=1, repeat=repeat)) * 1e6  # noqa: B023
        rows.append(
            {
                "answer": name,
                "bytes": len(message),
                "scapy_ms_per_s": scapy_us * RATE / 1e3,
                "unbudgeted_ms_per_s": ours_us * RATE / 1e3,
                "budget": flood(message, seconds, BUDGET),
                "nothing_to_train": flood(message, seconds, BUDGET, patterns=False),
            }
        )
    return rows


def report(results: dict) -> str:
    found = list(results["parse"][0]["us"])
    lines = [f"Command: `{results['command']}`  ", f"Machine: {results['machine']}", ""]
    lines += [f"### Reading one answer, µs (best of {results['repeat']} windows, parse only)", ""]
    headers = ["answer", "bytes", *(f"{label} µs" for label in found), "scapy / dnswire"]
    rows = [
        [
            row["answer"],
            row["bytes"],
            *(row["us"][label] for label in found),
            row["us"]["scapy (before)"] / row["us"]["dnswire (after)"],
        ]
        for row in results["parse"]
    ]
    lines += [table(headers, rows), ""]
    lines += [
        f"### One green host sent {RATE} answers a second ({results['seconds']} simulated "
        f"seconds, Engine.verdict under task.Clock)",
        "",
    ]
    headers = [
        "answer",
        "bytes",
        "scapy, all read (before) ms/s",
        "dnswire, all read ms/s",
        f"dnswire, budget {BUDGET:,} B/s: ms/s",
        "answers read /s",
        "nothing to train ms/s",
    ]
    rows = [
        [
            row["answer"],
            row["bytes"],
            row["scapy_ms_per_s"],
            row["unbudgeted_ms_per_s"],
            row["budget"]["ms_per_s"],
            row["budget"]["read_per_s"],
            row["nothing_to_train"]["ms_per_s"],
        ]
        for row in results["stall"]
    ]
    lines += [table(headers, rows), ""]
    lines += [
        "ms/s: milliseconds of the daemon's one thread per second of flood (1000 = all of "
        f'it). The two "all read" columns are {RATE} x the best single read; the budget '
        "and nothing-to-train columns are measured verdicts (decode excluded), every answer "
        "accepted. Answers over the budget pass unread (`dns_over_budget`).",
        "",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dns", description=__doc__)
    parser.add_argument("--repeat", type=int, default=7, help="timing windows per parser")
    parser.add_argument("--seconds", type=int, default=60, help="simulated seconds of flood")
    parser.add_argument("--json", action="store_true", help="print the numbers as JSON")
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.seconds < 1:
        parser.error("--repeat and --seconds must be at least 1")
    command = "python -m bench.dns " + " ".join(sys.argv[1:] if argv is None else argv)
    results = {
        "command": command.strip(),
        "machine": machine(),
        "repeat": args.repeat,
        "seconds": args.seconds,
        "parse": parse_costs(args.repeat),
        "stall": stall(args.seconds, args.repeat),
    }
    print(json.dumps(results, indent=2) if args.json else report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
