"""The main job: watch p2pwall stop a simulated Kazaa client on a real (namespaced) network.

Builds the lab, starts ``twistd -n p2pwall`` behind the rules ``p2pwall-rules`` prints, runs the
simulated client through its three phases while an ordinary user browses, shows a live line
per second (the client's phase and tries, what the daemon learned and dropped, the user's
requests), then a summary table, and tears everything down. Then the second act
(``lab/btdemo.py``): a real BitTorrent client, encryption required, with its bytes on screen.

    sudo make demo            # or: python -m lab.demo [--scale 1.0] [--time-lock 6]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from dataclasses import dataclass, field

from . import btdemo
from .gateway import Gateway
from .netlab import FTCLIENT, Lab, LabError

CACHED, HIDDEN = 24, 6
USER_LOOP = (
    "for i in $(seq {count}); do "
    "c=$(curl -s -o /dev/null -w '%{{http_code}}' -m 2 http://198.19.0.80/); "
    "d=$(dig +short +time=1 +tries=1 @198.19.0.53 www.example.test); "
    'echo "web=$c dns=$d"; sleep 0.5; done'
)
PHASES = {
    "1": "UDP hello flood, then UDP + TCP to each peer that answers",
    "2": "parallel TCP to known and never-announced peers",
    "3": "TCP to one peer at a time",
}


@dataclass
class View:
    """What the live line shows: the client's phase and breakthroughs (from its log), the
    daemon's counters (from its control port), the ordinary user's requests (from theirs)."""

    phase: str = "starting"
    breakthroughs: int = 0
    stats: dict[str, str] = field(default_factory=dict)
    user_ok: int = 0
    user_total: int = 0

    def line(self) -> str:
        s = self.stats
        return (
            f"  p2pwall: peers {s.get('peers_learned', '0'):>3}, dropped UDP "
            f"{s.get('drop_udp', '0'):>3} TCP {s.get('drop_tcp', '0'):>3}, pongs spoofed "
            f"{s.get('spoofs', '0'):>3}, probes {s.get('probes_answered', '0')}/"
            f"{s.get('probes_sent', '0')} answered | client breakthroughs {self.breakthroughs} "
            f"| user requests ok {self.user_ok}/{self.user_total}"
        )


def parse_client(log: str, view: View) -> None:
    for line in log.splitlines():
        if match := re.search(r"phase (\d) \(", line):
            view.phase = f"phase {match.group(1)}: {PHASES[match.group(1)]}"
        elif "lingering" in line:
            view.phase = "lingering: the client idles, answering probes"
        elif line.split("] ", 1)[-1].startswith("done:"):
            view.phase = "client quit"
    view.breakthroughs = log.count("BREAKTHROUGH")


def parse_user(log: str, view: View) -> None:
    lines = [line for line in log.splitlines() if line.startswith("web=")]
    view.user_total = len(lines)
    view.user_ok = sum(line == "web=200 dns=198.19.0.80" for line in lines)


def control_stats(gateway: Gateway) -> dict[str, str]:
    reply = gateway.ctl("stats", timeout=2).stdout
    return dict(line.split(" ", 1) for line in reply.splitlines() if line.count(" ") == 1)


def run(scale: float, time_lock: float) -> int:
    print("p2pwall demo: building the namespace lab (198.18.0.0/15 only) ...", flush=True)
    with Lab(peers=CACHED + HIDDEN) as lab:
        lab.start_web()
        lab.start_dns({"www.example.test": "198.19.0.80"})
        lab.start_peers(duration=600)
        print(f"  green: rogue {lab.addr('rogue')} (Kazaa), user {lab.addr('user')}; "
              f"gateway {lab.addr('gw')}; {CACHED + HIDDEN} FastTrack peers, web, DNS")  # fmt: skip
        gateway = Gateway(lab, ["-t", str(time_lock), "-L", "c", "-d", "p"])
        print(f"  rules:  {gateway.rules_command()}")
        with gateway:
            print(f"  daemon: twistd -n p2pwall -t {time_lock:g} (pid {gateway.proc.pid})\n")
            return watch(lab, gateway, scale, time_lock)


def watch(lab: Lab, gateway: Gateway, scale: float, time_lock: float) -> int:
    cache = lab.write_peers_file("cache", lab.peers[:CACHED])
    hidden = [f"--hidden-peer={ip}:{port}" for ip, port in lab.peers[CACHED:]]
    report_path = lab.logpath("ftclient.json")
    client = lab.spawn(
        "rogue",
        [sys.executable, str(FTCLIENT), "--peers-file", str(cache), *hidden, "--scale",
         str(scale), "--linger", str(time_lock), "--report", str(report_path)],
        log="ftclient.log",
    )  # fmt: skip
    lab.spawn("user", ["sh", "-c", USER_LOOP.format(count=400)], log="user.log")
    view, shown = View(), ""
    deadline = time.monotonic() + 40 * scale + time_lock + 60
    while client.poll() is None and time.monotonic() < deadline:
        time.sleep(1)
        parse_client(lab.read_log("ftclient.log"), view)
        parse_user(lab.read_log("user.log"), view)
        view.stats = control_stats(gateway) or view.stats
        if view.phase != shown:
            print(f"-- {view.phase}", flush=True)
            shown = view.phase
        print(view.line(), flush=True)
    quit_at = time.monotonic()
    print("-- the client has quit; waiting for the rogue host's web access to come back")
    freed = None
    while time.monotonic() - quit_at < 2 * time_lock + 10:
        if web_ok(lab, "rogue"):
            freed = time.monotonic() - quit_at
            break
        time.sleep(0.5)
    parse_user(lab.read_log("user.log"), view)
    view.stats = control_stats(gateway) or view.stats
    report = json.loads(report_path.read_text()) if report_path.exists() else {}
    return summary(report, view, freed, time_lock, gateway)


def web_ok(lab: Lab, host: str) -> bool:
    done = lab.run(host, ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", "1",
                          "http://198.19.0.80/"], capture_output=True, text=True)  # fmt: skip
    return done.stdout == "200"


def summary(report: dict, view: View, freed: float | None, lock: float, gateway: Gateway) -> int:
    s = view.stats
    breakthroughs = report.get("breakthroughs", ["no report"])
    rows = [
        ("FastTrack hellos sent / pongs (spoofed) received",
         f"{report.get('hellos_sent', '?')} / {report.get('pongs_received', '?')}"),
        ("TCP connections tried (phase 1/2/3)",
         "/".join(str(v) for v in report.get("connects_tried", {}).values())),
        ("breakthroughs (TCP connections that got through)", str(len(breakthroughs))),
        ("peers learned by p2pwall", s.get("peers_learned", "?")),
        ("packets dropped: UDP / TCP", f"{s.get('drop_udp', '?')} / {s.get('drop_tcp', '?')}"),
        ("pongs spoofed", s.get("spoofs", "?")),
        ("probes sent / answered",
         f"{s.get('probes_sent', '?')} / {s.get('probes_answered', '?')}"),
        ("ordinary user's web+DNS requests ok", f"{view.user_ok} / {view.user_total}"),
        ("rogue host's web back after the client quit",
         f"{freed:.1f}s (time lock {lock:g}s)" if freed is not None else "NOT within the wait"),
    ]  # fmt: skip
    width = max(len(label) for label, _ in rows)
    print("\nSummary")
    print(f"  {'-' * width}  {'-' * 24}")
    for label, value in rows:
        print(f"  {label:<{width}}  {value}")
    ok = not breakthroughs and view.user_ok == view.user_total > 0 and freed is not None
    print("\nKazaa-proof: " + ("yes" if ok else "NO: see the daemon log below"))
    if not ok:
        print(gateway.read_log()[-4000:])
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="client time factor (0.1-3)")
    parser.add_argument("--time-lock", type=float, default=6.0, help="daemon -t, seconds")
    parser.add_argument(
        "--no-bittorrent",
        action="store_true",
        help="skip the second act, a real BitTorrent client (lab/btdemo.py)",
    )
    args = parser.parse_args(argv)
    if not 0.1 <= args.scale <= 3 or not 1 <= args.time_lock <= 60:
        parser.error("--scale must be 0.1-3 and --time-lock 1-60")
    if os.geteuid() != 0:
        print("p2pwall demo: needs root, to create network namespaces, veth links and NFQUEUE "
              "rules for its lab. Run: sudo make demo", file=sys.stderr)  # fmt: skip
        return 2
    try:
        kazaa = run(args.scale, args.time_lock)
    except LabError as error:
        print(f"p2pwall demo: {error}", file=sys.stderr)
        kazaa = 1
    if args.no_bittorrent:
        return kazaa
    return btdemo.main([]) or kazaa


if __name__ == "__main__":
    sys.exit(main())
