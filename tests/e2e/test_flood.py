"""A green host flooding new UDP flows cannot take the queue from the others: the rules drop its
flow starts above the per-source limit (default 1,000/s, burst 2,000) before they are queued.

Without the limit (``--per-source-limit 0``), the same flood fills the kernel queue and about
half of the other host's connects time out; with it, they all succeed.
"""

from __future__ import annotations

import json
import re
import sys
import time

from lab.flood import success_ratio
from lab.gateway import CHECKOUT, ENV
from lab.netlab import WEB_ADDR
from p2pwall.tools.rules import DEFAULT_PER_SOURCE_LIMIT

from .support import LabCase

FLOOD_SECONDS = 30.0
RAMP = 1.0  # the flood runs this long before the connects start, and after they end
LIMIT = DEFAULT_PER_SOURCE_LIMIT
ALLOWED = LIMIT * (FLOOD_SECONDS + 1) + 2 * LIMIT  # rate x time + burst, a second's slack


class FloodTests(LabCase):
    peers = 0

    def flood(self, rules: str) -> None:
        gateway = self.gateway("-t", "3", rules=rules)
        flood_report, connects_report = self.lab.logpath("flood.json"), self.lab.logpath("c.json")
        flooder = self.lab.spawn(
            "rogue",
            [sys.executable, "-m", "lab.flood", "hellos", "--seconds", str(FLOOD_SECONDS),
             "--report", str(flood_report)],
            log="flood.log", env=ENV, cwd=CHECKOUT,
        )  # fmt: skip
        time.sleep(RAMP)
        done = self.lab.run(
            "user",
            [sys.executable, "-m", "lab.flood", "connects", "--target", f"{WEB_ADDR}:80",
             "--seconds", str(FLOOD_SECONDS - 2 * RAMP), "--report", str(connects_report)],
            env=ENV, cwd=CHECKOUT, capture_output=True, text=True, timeout=FLOOD_SECONDS + 30,
        )  # fmt: skip
        self.assertEqual(done.returncode, 0, done.stderr)
        flooder.wait(FLOOD_SECONDS + 30)
        self.assertEqual(flooder.returncode, 0, self.lab.read_log("flood.log"))
        flood, connects = (json.loads(path.read_text()) for path in (flood_report, connects_report))

        self.assertGreater(flood["pps"], 10 * LIMIT, "a real flood, far above the limit")
        self.assertGreater(connects["tried"], 100)
        self.assertGreaterEqual(success_ratio(connects), 0.99, connects["failures"])
        dropped = self.limit_drops(rules)
        self.assertGreaterEqual(dropped, flood["sent"] - ALLOWED, "the flooder was limited")
        stats = dict(line.split() for line in gateway.ctl("stats").stdout.splitlines()[:-1])
        self.assertLessEqual(int(stats["drop_udp"]), ALLOWED, "what reached the daemon")
        self.assertGreater(int(stats["drop_udp"]), LIMIT * FLOOD_SECONDS / 2, "up to the limit")

    def limit_drops(self, rules: str) -> int:
        """Packets the per-source limit dropped, from the rule's counter."""
        if rules == "iptables":
            saved = self.lab.run("gw", ["iptables-save", "-c", "-t", "mangle"],
                                 capture_output=True, text=True).stdout  # fmt: skip
            pattern = r"^\[(\d+):\d+\] -A p2pwall-lim .*hashlimit.* -j DROP$"
        else:
            saved = self.lab.run("gw", ["nft", "list", "chain", "inet", "p2pwall", "limited"],
                                 capture_output=True, text=True).stdout  # fmt: skip
            pattern = r"update @sources4 .* counter packets (\d+) bytes \d+ drop$"
        counts = re.findall(pattern, saved, re.MULTILINE)
        self.assertEqual(len(counts), 1, saved)
        return int(counts[0])

    def test_iptables(self) -> None:
        self.flood("iptables")

    def test_nft(self) -> None:
        """nft's dynamic set with ``limit rate over`` (queued via the lab's xtables hand-off)."""
        self.flood("nft-xt")
