"""FastTrack's fragment: download markers in early data, probe replies to the gateway, each
behind the per-source limit, each turned off by its own flag."""

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from p2pwall.fragments import FORWARD, INPUT, IRuleFragment
from p2pwall.fragments.fasttrack import FastTrackRules

from .support import IPTABLES, NFT

LIMIT = ["-j", "p2pwall-lim"]


class FastTrackRulesTests(SynchronousTestCase):
    def test_provides_the_fragment_interface(self) -> None:
        verifyObject(IRuleFragment, FastTrackRules())

    def test_iptables(self) -> None:
        rules = FastTrackRules().iptables(IPTABLES)
        self.assertEqual(list(rules.early), [
            ["-m", "string", "--algo", "bm", "--string", "X-Kazaa-", "--icase", *LIMIT],
            ["-m", "string", "--algo", "bm", "--string", "GIVE ", *LIMIT],
        ])  # fmt: skip
        (probe,) = rules.green[INPUT]
        ports = ["-m", "multiport", "--dports", "80,1024:65535"]
        self.assertEqual(probe, ["-p", "udp", "!", "--sport", "53", *ports, *IPTABLES.udp_start,
                                 *LIMIT])  # fmt: skip
        self.assertEqual((rules.green.get(FORWARD), dict(rules.outside)), (None, {}))

    def test_nft(self) -> None:
        rules = FastTrackRules().nft(NFT)
        self.assertEqual(list(rules.early), ["@ih,0,48 0x474554202f2e jump limited",
                                             "@ih,0,40 0x4749564520 jump limited"])  # fmt: skip
        self.assertEqual(list(rules.green[INPUT]), [
            "udp sport != 53 udp dport { 80, 1024-65535 } ct original packets <= 3 "
            "ct direction original jump limited"])  # fmt: skip

    def test_each_flag_turns_off_its_part(self) -> None:
        for context in (IPTABLES, NFT):
            build = FastTrackRules.iptables if context is IPTABLES else FastTrackRules.nft
            no_http = build(FastTrackRules(frozenset({"no-http"})), context)
            self.assertEqual((list(no_http.early), len(no_http.green[INPUT])), ([], 1))
            no_probes = build(FastTrackRules(frozenset({"no-probes"})), context)
            self.assertEqual((len(no_probes.early), list(no_probes.green[INPUT])), (2, []))
