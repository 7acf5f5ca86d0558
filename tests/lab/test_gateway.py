"""The lab's nft hand-off: the printed nft rules keep every match, only the queue step moves."""

from twisted.trial.unittest import SynchronousTestCase

from lab.gateway import HANDOFF_MARK, handoff_rules, nft_via_xtables
from lab.netlab import LabError
from p2pwall.tools.rules import RuleSet


class NftViaXtablesTests(SynchronousTestCase):
    def test_queue_statements_become_marks_in_earlier_chains(self) -> None:
        script = RuleSet("green0", 3).nft()
        marked = nft_via_xtables(script, 3)
        self.assertNotIn("queue", marked)
        self.assertEqual(marked.count(f"meta mark set {HANDOFF_MARK:#x} accept"),
                         script.count("queue num 3 bypass"))  # fmt: skip
        self.assertGreater(script.count("queue num 3 bypass"), 5)
        self.assertEqual(marked.count("priority filter - 1;"), 2)
        self.assertIn("priority raw;", marked, "the spoofed-packet chain is left alone")
        self.assertEqual(
            marked.replace(f"meta mark set {HANDOFF_MARK:#x} accept", "queue num 3 bypass").replace(
                "priority filter - 1;", "priority filter;"
            ),
            script,
            "nothing else changes",
        )

    def test_rules_for_another_queue_are_refused(self) -> None:
        self.assertRaises(LabError, nft_via_xtables, RuleSet("green0", 3).nft(), 4)

    def test_handoff_rules_queue_the_mark_on_both_hooks(self) -> None:
        self.assertEqual([rule[0] for rule in handoff_rules(2)], ["FORWARD", "INPUT"])
        self.assertIn(["--queue-num", "2"], [rule[7:9] for rule in handoff_rules(2)])
        self.assertIn(f"{HANDOFF_MARK:#x}", handoff_rules(2)[0])
