"""Allowed networks: membership as packed addresses, where each came from, one-line errors."""

from twisted.trial.unittest import SynchronousTestCase

from p2pwall.allow import CONTROL, OPTION, AllowList, parse_network
from p2pwall.testing import packed


class AllowListTests(SynchronousTestCase):
    def test_empty_has_no_lookup(self) -> None:
        allowed = AllowList()
        self.assertIsNone(allowed.lookup)
        self.assertNotIn(packed("198.18.1.10"), allowed)

    def test_networks_from_the_option_and_the_control_port(self) -> None:
        allowed = AllowList(["198.18.1.0/24"])
        self.assertTrue(allowed.add(parse_network("2001:2::5")))
        self.assertFalse(allowed.add(parse_network("198.18.1.7/24")), "the same network")
        self.assertIn(packed("198.18.1.200"), allowed)
        self.assertIn(packed("2001:2::5"), allowed)
        self.assertNotIn(packed("2001:2::6"), allowed)
        self.assertEqual(
            [(str(n), origin) for n, origin in allowed],
            [("198.18.1.0/24", OPTION), ("2001:2::5/128", CONTROL)],
        )
        self.assertEqual(allowed.covering(packed("198.18.1.9")), [parse_network("198.18.1.0/24")])

    def test_remove_exactly_a_network(self) -> None:
        allowed = AllowList(["198.18.1.0/24"])
        self.assertIsNone(allowed.remove(parse_network("198.18.1.0/25")))
        self.assertEqual(allowed.remove(parse_network("198.18.1.0/24")), OPTION)
        self.assertIsNone(allowed.lookup)
        self.assertEqual(len(allowed), 0)

    def test_bad_networks_are_one_line(self) -> None:
        for bad in ("198.18.1.300", "bogus", "198.18.1.0/33"):
            with self.assertRaises(ValueError) as caught:
                parse_network(bad)
            self.assertEqual(
                str(caught.exception), f"bad network {bad!r}: expected an address or CIDR"
            )
