"""The demo's second act: a real BitTorrent client, encryption required, stopped by p2pwall.

Builds the BitTorrent lab (opentracker, a small DHT, three seeders, the ordinary user's web and
DNS), starts the real daemon behind the printed rules, and lets aria2c leech a 20 MiB torrent
announced over HTTP and UDP with DHT on. A live line per second shows the bytes the client has
on disk, what the daemon holds about it (``explain``), its probes, and the ordinary user's
requests; then a summary, and everything is torn down.

    sudo python -m lab.btdemo [--seconds 60] [--time-lock 20]
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from dataclasses import dataclass, field

from .btblock import Explained, gateway_for, parse_explain
from .btlab import (
    PAYLOAD_NAME,
    SVC,
    USER_HOST,
    WEB_NAME,
    WEB_PORT,
    BtLab,
    LeechResult,
    client_missing,
    swarm_missing,
)
from .gateway import Gateway
from .netlab import LabError

CLIENT = "aria2"
MIB = 20
WEB_URL = f"http://{SVC}:{WEB_PORT}/"
USER_LOOP = (
    "for i in $(seq {count}); do "
    "c=$(curl -s -o /dev/null -w '%{{http_code}}' -m 2 {url}); "
    "d=$(dig +short +time=1 +tries=1 @{svc} {name}); "
    'echo "web=$c dns=$d"; sleep 0.5; done'
)


@dataclass
class Progress:
    """What the live line shows."""

    on_disk: int = 0
    explained: Explained = field(default_factory=Explained)
    user_ok: int = 0
    user_total: int = 0

    def line(self, elapsed: float) -> str:
        e = self.explained
        lock = "locked" if e.locked else "not locked"
        return (
            f"  {elapsed:5.0f}s  aria2c has {self.on_disk / 1024:8.0f} KiB of {MIB} MiB | "
            f"p2pwall: client {lock}, probes {e.probes_answered}/{e.probes_sent} answered | "
            f"user requests ok {self.user_ok}/{self.user_total}"
        )


def on_disk(lab: BtLab, host: str) -> int:
    """Bytes the client has written (blocks allocated to its payload file, which it writes as
    pieces arrive), in the newest of its download directories."""
    directories = sorted(lab.workdir.glob(f"{host}-*"), key=lambda p: p.stat().st_mtime)
    if not directories:
        return 0
    payload = directories[-1] / PAYLOAD_NAME
    return payload.stat().st_blocks * 512 if payload.exists() else 0


def parse_user(log: str, progress: Progress) -> None:
    lines = [line for line in log.splitlines() if line.startswith("web=")]
    progress.user_total = len(lines)
    progress.user_ok = sum(line == f"web=200 dns={SVC}" for line in lines)


def run(seconds: int, time_lock: int) -> int:
    missing = swarm_missing() or client_missing(CLIENT)
    if missing:
        print(f"p2pwall demo (BitTorrent): skipped: {missing}")
        return 0
    print("\np2pwall demo, BitTorrent: building the swarm (opentracker, DHT, three seeders) ...",
          flush=True)  # fmt: skip
    with BtLab([CLIENT], dht_nodes=4, mib=MIB) as lab:
        lab.start_swarm(lifetime=seconds + 300)
        lab.start_services()
        ip = lab.green[CLIENT]
        gateway = gateway_for(lab, lab.workdir / "demo-events.json", time_lock)
        print(f"  green: {CLIENT} {ip} (encryption required, DHT on, HTTP and UDP trackers), "
              f"user {lab.green_hosts[USER_HOST]}")  # fmt: skip
        print(f"  rules:  {gateway.rules_command()}")
        with gateway:
            print(f"  daemon: twistd -n p2pwall -t {time_lock} (pid {gateway.proc.pid})\n")
            return watch(lab, gateway, ip, seconds, time_lock)


def watch(lab: BtLab, gateway: Gateway, ip: str, seconds: int, time_lock: int) -> int:
    results: list[LeechResult] = []
    leecher = threading.Thread(
        target=lambda: results.append(lab.leech(CLIENT, seconds, "all")), daemon=True
    )
    lab.spawn(
        USER_HOST,
        ["sh", "-c", USER_LOOP.format(count=4 * seconds, url=WEB_URL, svc=SVC, name=WEB_NAME)],
        "demo-user.log",
    )
    started = time.monotonic()
    leecher.start()
    progress = Progress()
    host = lab.green_host(CLIENT)
    while leecher.is_alive() and time.monotonic() - started < seconds + 60:
        time.sleep(1)
        progress.on_disk = on_disk(lab, host)
        reply = gateway.ctl("explain", ip, timeout=2).stdout
        if reply.rstrip().splitlines()[-1:] and reply.rstrip().splitlines()[-1].startswith("OK"):
            progress.explained = parse_explain(reply)
        parse_user(lab.read_log("demo-user.log"), progress)
        print(progress.line(time.monotonic() - started), flush=True)
    leecher.join(60)
    print("-- the client has quit; waiting for its host's web access to come back")
    quit_at, freed = time.monotonic(), None
    curl = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", "1", WEB_URL]
    while time.monotonic() - quit_at < 2 * time_lock + 10:
        done = lab.run(host, curl, capture_output=True, text=True)
        if done.stdout == "200":
            freed = time.monotonic() - quit_at
            break
        time.sleep(0.5)
    parse_user(lab.read_log("demo-user.log"), progress)
    return summary(results[0] if results else None, progress, freed, time_lock, gateway)


def summary(
    result: LeechResult | None, progress: Progress, freed: float | None, lock: int, gw: Gateway
) -> int:
    identified = [line for line in gw.read_log().splitlines() if "identified:" in line]
    rows = [
        ("client identified", identified[0].split("] ", 1)[-1] if identified else "NO"),
        ("download complete", "?" if result is None else ("YES" if result.complete else "no")),
        ("payload received (client's own count)",
         "?" if result is None else f"{result.received} bytes, {result.pieces} pieces"),
        ("probes sent / answered",
         f"{progress.explained.probes_sent} / {progress.explained.probes_answered}"),
        ("ordinary user's web+DNS requests ok", f"{progress.user_ok} / {progress.user_total}"),
        ("client's host web back after it quit",
         f"{freed:.1f}s (time lock {lock}s)" if freed is not None else "NOT within the wait"),
    ]  # fmt: skip
    width = max(len(label) for label, _ in rows)
    print("\nSummary (BitTorrent)")
    print(f"  {'-' * width}  {'-' * 24}")
    for label, value in rows:
        print(f"  {label:<{width}}  {value}")
    ok = (
        result is not None
        and not result.complete
        and result.pieces == 0
        and bool(identified)
        and progress.user_ok == progress.user_total > 0
        and freed is not None
    )
    print("\nBitTorrent stopped: " + ("yes" if ok else "NO: see the daemon log below"))
    if not ok:
        print(gw.read_log()[-4000:])
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=60, help="how long the client leeches")
    parser.add_argument("--time-lock", type=int, default=20, help="daemon -t, seconds")
    args = parser.parse_args(argv)
    if not 10 <= args.seconds <= 600 or not 5 <= args.time_lock <= 120:
        parser.error("--seconds must be 10-600 and --time-lock 5-120")
    if os.geteuid() != 0:
        print("p2pwall demo: needs root (network namespaces, NFQUEUE rules)", file=sys.stderr)
        return 2
    try:
        return run(args.seconds, args.time_lock)
    except LabError as error:
        print(f"p2pwall demo (BitTorrent): {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
