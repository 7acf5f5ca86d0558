"""The contexts the core hands fragments, with its values, for the fragments' tests."""

from p2pwall.tools.rules import RuleSet

IPTABLES = RuleSet(("g0",), queue=2).iptables_context(ipv6=False)
IP6TABLES = RuleSet(("g0",), queue=2).iptables_context(ipv6=True)
NFT = RuleSet(("g0",), queue=2).nft_context()
