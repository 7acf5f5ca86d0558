"""The registry: its order, and each entry's rules fragment named as the entry."""

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from p2pwall.fragments import IRuleFragment
from p2pwall.registry import REGISTRY


class RegistryTests(SynchronousTestCase):
    def test_order(self) -> None:
        self.assertEqual([entry.name for entry in REGISTRY], ["fasttrack", "bittorrent", "dns"])

    def test_each_entry_has_a_fragment_of_its_name(self) -> None:
        for entry in REGISTRY:
            with self.subTest(entry=entry.name):
                verifyObject(IRuleFragment, entry.rules())
                self.assertEqual(entry.rules.name, entry.name)

    def test_flags_and_chains_are_each_fragments_own(self) -> None:
        flags = [name for entry in REGISTRY for name, _ in entry.rules.flags]
        chains = [chain for entry in REGISTRY for chain in entry.rules.chains]
        self.assertEqual(len(set(flags)), len(flags))
        self.assertEqual(len(set(chains)), len(chains))
