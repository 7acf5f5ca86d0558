"""Origins as detectors declare them: what the core asks of a learned block's origin."""

from twisted.trial.unittest import SynchronousTestCase

from p2pwall.origins import MANUAL, Origin, Origins, Protocol

P2P = Protocol("P2P", "p2p", locks_udp=True)


class OriginTests(SynchronousTestCase):
    def test_learnable_ports(self) -> None:
        origin = Origin("p2p-udp", P2P, locks=True, low_ports=frozenset((80,)))
        self.assertEqual(
            [port for port in (0, 53, 80, 443, 1023, 1024, 65535) if origin.learnable(port)],
            [80, 1024, 65535],
        )
        self.assertTrue(all(MANUAL.learnable(port) for port in (0, 53, 1024)))

    def test_lock_reason_names_the_protocol(self) -> None:
        self.assertEqual(Origin("p2p-udp", P2P, locks=True).lock_reason, "tried a P2P peer")


class OriginsTests(SynchronousTestCase):
    def test_names_aliases_and_what_locks(self) -> None:
        udp = Origin("p2p-udp", P2P, locks=True, aliases=("udp",))
        dns = Origin("dns", any_port=True)
        passes = Origin("p2p-quiet", P2P, locks=True, drops_udp=False)
        origins = Origins([udp, dns, passes])
        self.assertIs(origins.resolve("udp"), udp)
        self.assertIs(origins.resolve("p2p-udp"), udp)
        self.assertIs(origins.resolve("manual"), MANUAL)
        self.assertIsNone(origins.resolve("http"))
        self.assertEqual(set(origins.locking), {"p2p-udp", "p2p-quiet"})
        self.assertEqual(origins.udp_passes, {"p2p-quiet"})

    def test_two_origins_may_not_share_a_name_or_alias(self) -> None:
        with self.assertRaises(ValueError):
            Origins([Origin("a"), Origin("b", aliases=("a",))])
