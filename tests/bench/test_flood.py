"""bench.flood: the limit's counter read from iptables-save, and the report's table."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from bench.flood import LIMIT_RULE, render

SAVED = """\
*mangle
[12:480] -A p2pwall-lim -m hashlimit --hashlimit-above 1000/sec --hashlimit-burst 2000 \
--hashlimit-mode srcip --hashlimit-name p2pwall -j DROP
[7:280] -A p2pwall-lim -j NFQUEUE --queue-num 0 --queue-bypass
COMMIT
"""


class FloodReportTests(SynchronousTestCase):
    def test_limit_counter(self) -> None:
        self.assertEqual(LIMIT_RULE.findall(SAVED), ["12"])

    def test_render(self) -> None:
        result = {"tried": 200, "ratio": 0.995, "p50": 0.5, "p99": 3.25, "pps": 150000.0,
                  "limit_drops": 4_000_000, "daemon_udp": 31000, "queue_dropped": 0}  # fmt: skip
        text = render([("flood, limit 1000/s", result)], 30.0, "python -m bench.flood")
        self.assertIn("## Flood from one green host (30 s per run)", text)
        self.assertIn("| flood, limit 1000/s | 200 | 0.995 | 0.500 | 3.25 | 150,000 | 4,000,000 "
                      "| 31,000 | 0 |", text)  # fmt: skip
