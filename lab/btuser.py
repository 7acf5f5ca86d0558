"""The ordinary green user of the BitTorrent lab, and the UDP echo it talks to.

    btuser.py load --web URL --dns IP[:PORT] --name NAME --expect IP --echo IP:PORT
                   --seconds N [--report FILE]
    btuser.py echo --bind IP:PORT --seconds N

``load`` browses (curl), resolves (dig) and sends small UDP requests (a new flow each time, so
each one meets the gateway's queue) in rounds until ``--seconds`` have passed, and writes one
JSON report: rounds, and ok/failed counts with the first failures' times for web, dns and udp.
A web failure is anything but HTTP 200, a DNS failure any answer but ``--expect``, a UDP failure
no echo within a second. ``echo`` answers every datagram with itself. Both end by themselves.
Standalone (no repository imports): it runs in a namespace under the lab's Python.
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

PAUSE = 0.5
FAILURES_KEPT = 20


def check_web(url: str) -> bool:
    done = subprocess.run(
        ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", "2", url],
        capture_output=True, text=True, timeout=10, check=False,
    )  # fmt: skip
    return done.stdout == "200"


def check_dns(server: str, name: str, expect: str) -> bool:
    """``server`` is ``IP`` or ``IP:PORT``."""
    ip, _, port = server.partition(":")
    done = subprocess.run(
        ["dig", "+short", "+time=1", "+tries=1", "-p", port or "53", f"@{ip}", name],
        capture_output=True, text=True, timeout=10, check=False,
    )  # fmt: skip
    return done.stdout.split() == [expect]


def check_udp(ip: str, port: int, seq: int) -> bool:
    payload = b"lab user %d" % seq
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(1.0)
        try:
            sock.sendto(payload, (ip, port))
            return sock.recv(2048) == payload
        except OSError:
            return False


def load(args: argparse.Namespace) -> int:
    echo_ip, echo_port = args.echo.rsplit(":", 1)
    checks = {
        "web": lambda _seq: check_web(args.web),
        "dns": lambda _seq: check_dns(args.dns, args.name, args.expect),
        "udp": lambda seq: check_udp(echo_ip, int(echo_port), seq),
    }
    report: dict = {"rounds": 0, **{k: {"ok": 0, "failed": 0, "failures": []} for k in checks}}
    start = time.time()
    deadline = time.monotonic() + args.seconds

    def write(*_: object) -> None:
        report["seconds"] = round(time.time() - start, 2)
        if args.report:
            Path(args.report).write_text(json.dumps(report) + "\n")
        else:
            print(json.dumps(report), flush=True)

    def stop(*_: object) -> None:
        write()
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    while time.monotonic() < deadline:
        for kind, check in checks.items():
            row = report[kind]
            if check(report["rounds"]):
                row["ok"] += 1
            else:
                row["failed"] += 1
                if len(row["failures"]) < FAILURES_KEPT:
                    row["failures"].append(round(time.time(), 3))
        report["rounds"] += 1
        time.sleep(PAUSE)
    write()
    return 0


def echo(args: argparse.Namespace) -> int:
    ip, port = args.bind.rsplit(":", 1)
    deadline = time.monotonic() + args.seconds
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((ip, int(port)))
        sock.settimeout(1.0)
        while time.monotonic() < deadline:
            try:
                data, peer = sock.recvfrom(2048)
            except TimeoutError:
                continue
            sock.sendto(data, peer)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    sub = parser.add_subparsers(dest="role", required=True)
    run = sub.add_parser("load")
    run.add_argument("--web", required=True)
    run.add_argument("--dns", required=True, metavar="IP[:PORT]")
    run.add_argument("--name", required=True)
    run.add_argument("--expect", required=True)
    run.add_argument("--echo", required=True, metavar="IP:PORT")
    run.add_argument("--seconds", type=float, required=True)
    run.add_argument("--report")
    serve = sub.add_parser("echo")
    serve.add_argument("--bind", required=True, metavar="IP:PORT")
    serve.add_argument("--seconds", type=float, required=True)
    args = parser.parse_args(argv)
    return load(args) if args.role == "load" else echo(args)


if __name__ == "__main__":
    sys.exit(main())
