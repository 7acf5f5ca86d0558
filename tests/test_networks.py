"""Green networks: membership, and what the green interfaces' addresses make green."""

import ipaddress

from twisted.trial.unittest import SynchronousTestCase

from p2pwall.networks import GreenNetworks, from_interfaces, ifindexes_in
from p2pwall.rtnetlink import LinkAddress
from p2pwall.testing import packed


def at(ifindex: int, ifname: str, interface: str) -> LinkAddress:
    return LinkAddress(ifindex, ifname, ipaddress.ip_interface(interface))


ADDRESSES = [
    at(1, "lo", "127.0.0.1/8"),
    at(2, "wan0", "198.19.0.1/24"),
    at(2, "wan0", "fe80::1/64"),
    at(3, "green0", "198.18.1.1/24"),
    at(3, "green0", "198.18.1.2/24"),  # a second address in the same network
    at(3, "green0", "2001:2:0:1::1/64"),
    at(3, "green0", "fe80::2/64"),
    at(4, "green1", "fe80::3/64"),  # link-local only
]


class GreenNetworksTests(SynchronousTestCase):
    def test_membership_by_family(self) -> None:
        green = GreenNetworks(["198.18.1.0/24", "2001:2:0:1::/64"])
        self.assertIn(packed("198.18.1.200"), green)
        self.assertIn(packed("2001:2:0:1::99"), green)
        self.assertNotIn(packed("198.18.2.1"), green)
        self.assertNotIn(packed("2001:2:0:2::1"), green)


class FromInterfacesTests(SynchronousTestCase):
    def test_networks_of_the_named_interfaces_ipv6_global_prefixes_too(self) -> None:
        links = from_interfaces(ADDRESSES, ["green0"])
        self.assertEqual(
            links.networks,
            (ipaddress.ip_network("198.18.1.0/24"), ipaddress.ip_network("2001:2:0:1::/64")),
        )
        self.assertEqual(links.ifindexes, {3})
        self.assertEqual(links.missing, frozenset())

    def test_link_local_makes_nothing_green_and_a_missing_interface_is_named(self) -> None:
        links = from_interfaces(ADDRESSES, ["green1", "green9"])
        self.assertEqual(links.networks, ())
        self.assertEqual(links.ifindexes, {4})  # it is a green interface all the same
        self.assertEqual(links.missing, {"green1", "green9"})


class IfindexesInTests(SynchronousTestCase):
    def test_interfaces_holding_a_green_address_link_local_aside(self) -> None:
        # fe80::/10 is green by default, and on every interface: it must not make wan0 green.
        green = GreenNetworks(["198.18.0.0/16", "fe80::/10"])
        self.assertEqual(ifindexes_in(ADDRESSES, green), {3})
