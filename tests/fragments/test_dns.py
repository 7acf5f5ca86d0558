"""DNS's fragment: answers from outside only, reply direction, always with bypass."""

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from p2pwall.fragments import FORWARD, INPUT, IRuleFragment, Rules
from p2pwall.fragments.dns import DnsRules
from p2pwall.tools.rules import RuleSet

from .support import IPTABLES, NFT

REPLY = ["-m", "conntrack", "--ctstate", "ESTABLISHED", "--ctdir", "REPLY"]
ANSWER = ["-j", "NFQUEUE", "--queue-num", "2", "--queue-bypass"]


class DnsRulesTests(SynchronousTestCase):
    def test_provides_the_fragment_interface(self) -> None:
        verifyObject(IRuleFragment, DnsRules())

    def test_iptables_answers_come_only_from_outside(self) -> None:
        rules = DnsRules().iptables(IPTABLES)
        self.assertEqual((dict(rules.green), list(rules.early)), ({}, []))
        self.assertEqual(list(rules.outside[FORWARD]), [
            ["-p", "udp", "--sport", "53", *REPLY, *ANSWER],
            ["-p", "tcp", "--sport", "53", "!", "--syn", *REPLY, *ANSWER],
        ])  # fmt: skip
        self.assertEqual(list(rules.outside[INPUT]), [["-p", "udp", "--sport", "53", *REPLY,
                                                       *ANSWER]])  # fmt: skip

    def test_answers_bypass_even_when_the_rest_fails_closed(self) -> None:
        closed = RuleSet(("g0",), queue=2, bypass=False)
        for rule in DnsRules().iptables(closed.iptables_context(ipv6=False)).outside[FORWARD]:
            self.assertEqual(rule[-5:], ANSWER)
        for rule in DnsRules().nft(closed.nft_context()).outside[FORWARD]:
            self.assertTrue(rule.endswith("queue num 2 bypass"), rule)

    def test_nft(self) -> None:
        rules = DnsRules().nft(NFT)
        reply = "ct state established ct direction reply queue num 2 bypass"
        self.assertEqual(list(rules.outside[FORWARD]), [
            f"udp sport 53 {reply}", f"tcp sport 53 tcp flags & syn == 0 {reply}"])  # fmt: skip
        self.assertEqual(list(rules.outside[INPUT]), [f"udp sport 53 {reply}"])

    def test_no_dns_queues_nothing(self) -> None:
        off = DnsRules(frozenset({"no-dns"}))
        self.assertEqual((off.iptables(IPTABLES), off.nft(NFT)), (Rules(), Rules()))
