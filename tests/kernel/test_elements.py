"""What the kernel's sets hold: shapes, families and actions of blocks."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from p2pwall.detectors.bittorrent import DHT_ORIGIN
from p2pwall.detectors.dns import DNS_ORIGIN
from p2pwall.detectors.fasttrack import fasttrack_origins
from p2pwall.kernel.elements import ACTIONS, Element, action_of, block_elements, element
from p2pwall.origins import MANUAL, Origins
from p2pwall.testing import packed

PEER, CLIENT, PEER6, CLIENT6 = (
    packed("198.19.0.1"),
    packed("198.18.1.10"),
    packed("2001:2:0:2::1"),
    packed("2001:2:0:1::10"),
)


class ElementTests(SynchronousTestCase):
    def test_each_shape_keys_what_it_matches(self) -> None:
        self.assertEqual(
            element(PEER, 1214, CLIENT),
            Element(4, "peer_port_client", ("198.19.0.1", 1214, "198.18.1.10")),
        )
        self.assertEqual(element(PEER, 1214, b""), Element(4, "peer_port", ("198.19.0.1", 1214)))
        self.assertEqual(
            element(PEER, 0, CLIENT), Element(4, "peer_client", ("198.19.0.1", "198.18.1.10"))
        )
        self.assertEqual(element(PEER, 0, b""), Element(4, "peer", ("198.19.0.1",)))

    def test_ipv6_blocks_go_to_the_ipv6_sets(self) -> None:
        item = element(PEER6, 6881, CLIENT6)
        self.assertEqual(item.set_name, "peer_port_client6")
        self.assertEqual(item.key, ("2001:2:0:2::1", 6881, "2001:2:0:1::10"))

    def test_a_client_of_the_other_family_matches_nothing(self) -> None:
        self.assertIsNone(element(PEER6, 6881, CLIENT))


class ActionTests(SynchronousTestCase):
    def test_actions_follow_the_origin(self) -> None:
        udp, http = fasttrack_origins()
        self.assertEqual(action_of(udp), "lock")
        self.assertEqual(action_of(http), "lock")
        self.assertEqual(action_of(fasttrack_origins(udp_passes=True)[0]), "lock_udp_passes")
        self.assertEqual(action_of(DHT_ORIGIN), "lock_flows")
        self.assertEqual(action_of(DNS_ORIGIN), "block")
        self.assertEqual(action_of(MANUAL), "block")
        self.assertEqual(action_of(None), "block")

    def test_every_action_has_a_chain_name(self) -> None:
        udp, _ = fasttrack_origins(udp_passes=True)
        for origin in (udp, DHT_ORIGIN, DNS_ORIGIN, MANUAL):
            self.assertIn(action_of(origin), ACTIONS)

    def test_block_elements_resolve_old_origin_names(self) -> None:
        origins = Origins([*fasttrack_origins(), DNS_ORIGIN])
        pairs = list(
            block_elements(
                [((PEER, 1214, CLIENT), "udp"), ((PEER, 0, b""), "dns"), ((PEER6, 1, CLIENT), "x")],
                origins,
            )
        )
        self.assertEqual([action for _, action in pairs], ["lock", "block"])
