"""A green host flooding new UDP flows cannot take the queue from the others: the rules drop its
flow starts above the per-source limit (default 1,000/s, burst 2,000) before they are queued.

Without the limit (``--per-source-limit 0``), the same flood fills the kernel queue and about
half of the other host's connects time out; with it, they all succeed.
"""

from __future__ import annotations

import re

from lab.flood import run_in_lab, success_ratio
from p2pwall.tools.rules import DEFAULT_PER_SOURCE_LIMIT

from .support import LabCase

FLOOD_SECONDS = 30.0
LIMIT = DEFAULT_PER_SOURCE_LIMIT
ALLOWED = LIMIT * (FLOOD_SECONDS + 1) + 2 * LIMIT  # rate x time + burst, a second's slack


class FloodTests(LabCase):
    peers = 0

    def flood(self, rules: str) -> None:
        gateway = self.gateway("-t", "3", rules=rules)
        run = run_in_lab(self.lab, FLOOD_SECONDS)
        flood, connects = run.flood, run.connects
        self.assertIsNotNone(flood)
        self.assertGreater(flood["pps"], 10 * LIMIT, "a real flood, far above the limit")
        self.assertGreater(connects["tried"], 100)
        self.assertGreaterEqual(success_ratio(connects), 0.99, connects["failures"])
        dropped = self.limit_drops(rules)
        self.assertGreaterEqual(dropped, flood["sent"] - ALLOWED, "the flooder was limited")
        stats = gateway.stats()
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
