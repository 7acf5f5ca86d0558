"""``python -m bench.flood``: what a green host flooding new UDP flows costs the others (issue 9).

In the lab, ``user`` connects to the web server one connect after another (1 s timeout, 50 ms
apart) while ``rogue`` sends FastTrack hellos, each a new flow, as fast as one Python socket
can, behind the real daemon and ``p2pwall-rules``. Three runs: no flood (the baseline), the
flood with the default per-source limit, and the flood with ``--per-source-limit 0`` (the rules
before the limit existed). Reported: the connects' success ratio and latency, the flood's rate,
what the limit dropped, what reached the daemon and what the kernel queue dropped. Root only.
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
from collections.abc import Sequence

from lab.flood import FloodRun, run_in_lab, success_ratio
from lab.gateway import Gateway
from lab.netlab import Lab, LabError
from p2pwall.tools.rules import DEFAULT_PER_SOURCE_LIMIT

from .report import fmt, percentile, table
from .run import machine

SCENARIOS = (
    ("no flood", False, DEFAULT_PER_SOURCE_LIMIT),
    (f"flood, limit {DEFAULT_PER_SOURCE_LIMIT}/s", True, DEFAULT_PER_SOURCE_LIMIT),
    ("flood, no limit", True, 0),
)
LIMIT_RULE = re.compile(r"^\[(\d+):\d+\] -A p2pwall-lim .*hashlimit.* -j DROP$", re.MULTILINE)


def limit_drops(lab: Lab) -> int:
    saved = lab.run("gw", ["iptables-save", "-c", "-t", "mangle"], capture_output=True, text=True)
    return sum(int(count) for count in LIMIT_RULE.findall(saved.stdout))


def scenario(lab: Lab, flood: bool, limit: int, seconds: float) -> dict:
    gateway = Gateway(lab, ["-t", "3"], rule_options=["--per-source-limit", str(limit)])
    with gateway:
        run: FloodRun = run_in_lab(lab, seconds, flood=flood)
        stats = gateway.stats()
        dropped = limit_drops(lab)
    latencies = run.connects["latencies_ms"]
    return {
        "tried": run.connects["tried"],
        "ratio": success_ratio(run.connects),
        "p50": percentile(latencies, 50),
        "p99": percentile(latencies, 99),
        "pps": run.flood["pps"] if run.flood else 0,
        "limit_drops": dropped,
        "daemon_udp": int(stats["drop_udp"]),
        "queue_dropped": int(stats["queue_dropped"]),
    }


def render(results: list[tuple[str, dict]], seconds: float, command: str) -> str:
    info = machine()
    rows = [
        (name, r["tried"], f"{r['ratio']:.3f}", r["p50"], r["p99"], fmt(r["pps"]),
         r["limit_drops"], r["daemon_udp"], r["queue_dropped"])
        for name, r in results
    ]  # fmt: skip
    headers = ("run", "connects", "succeeded", "p50 ms", "p99 ms", "flood pkt/s", "limit drops",
               "flood pkts at daemon", "kernel queue drops")  # fmt: skip
    return (
        f"## Flood from one green host ({seconds:g} s per run)\n\n"
        f"`{command}` on {info['date']}, {info['nproc']} CPUs ({info['cpu']}), kernel "
        f"{info['kernel']}, commit {info['commit']}, load {info['load']}.\n\n"
        + table(headers, rows)
        + "\n"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.flood", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--seconds", type=float, default=30.0, help="flood length per run")
    args = parser.parse_args(argv)
    if not 5 <= args.seconds <= 120:
        parser.error("--seconds must be between 5 and 120")
    results = []
    try:
        with Lab(peers=0) as lab:
            lab.start_web()
            for name, flood, limit in SCENARIOS:
                print(f"{name}...", file=sys.stderr, flush=True)
                results.append((name, scenario(lab, flood, limit, args.seconds)))
    except LabError as error:
        print(f"bench.flood: {error}", file=sys.stderr)
        return 1
    command = shlex.join(["python", "-m", "bench.flood", *(sys.argv[1:] if argv is None else argv)])
    print(render(results, args.seconds, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
