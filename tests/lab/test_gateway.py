"""The lab's nft hand-off: the printed nft rules keep every match, only the queue step moves,
and the hand-off queues from mangle, as the printed iptables rules do."""

from twisted.trial.unittest import SynchronousTestCase

from lab.gateway import FAIL_CLOSED_MARK, HANDOFF_MARK, handoff_rules, nft_via_xtables
from lab.netlab import LabError
from p2pwall.tools.rules import RuleSet

BYPASS_MARK = f"meta mark set {HANDOFF_MARK:#x} accept"
CLOSED_MARK = f"meta mark set {FAIL_CLOSED_MARK:#x} accept"


class NftViaXtablesTests(SynchronousTestCase):
    def test_queue_statements_become_marks_in_earlier_chains(self) -> None:
        script = RuleSet(("green0",), 3).nft()
        marked = nft_via_xtables(script, 3)
        self.assertNotIn("queue", marked)
        self.assertEqual(marked.count(BYPASS_MARK), script.count("queue num 3 bypass"))
        self.assertGreater(script.count("queue num 3 bypass"), 3)
        self.assertEqual(marked.count("priority mangle - 1;"), 2)
        self.assertIn("priority raw;", marked, "the spoofed-packet chain is left alone")
        self.assertEqual(
            marked.replace(BYPASS_MARK, "queue num 3 bypass").replace(
                "priority mangle - 1;", "priority mangle;"
            ),
            script,
            "nothing else changes",
        )

    def test_fail_closed_queueing_keeps_its_own_mark(self) -> None:
        script = RuleSet(("green0",), 3, bypass=False).nft()
        marked = nft_via_xtables(script, 3)
        self.assertEqual(marked.count(CLOSED_MARK), 1, "the flow starts' queue statement")
        self.assertEqual(
            marked.count(BYPASS_MARK), 5, "DNS answers and BitTorrent's replies always bypass"
        )

    def test_rules_for_another_queue_are_refused(self) -> None:
        self.assertRaises(LabError, nft_via_xtables, RuleSet(("green0",), 3).nft(), 4)

    def test_handoff_rules_queue_each_mark_on_both_hooks(self) -> None:
        rules = handoff_rules(2)
        self.assertEqual([rule[0] for rule in rules], ["FORWARD", "FORWARD", "INPUT", "INPUT"])
        self.assertEqual({tuple(rule[7:9]) for rule in rules}, {("--queue-num", "2")})
        bypass = [rule[4] for rule in rules if rule[-1] == "--queue-bypass"]
        closed = [rule[4] for rule in rules if rule[-1] == "2"]
        self.assertEqual(bypass, [f"{HANDOFF_MARK:#x}"] * 2)
        self.assertEqual(closed, [f"{FAIL_CLOSED_MARK:#x}"] * 2)
