"""The neighbour-table check: a packet's MAC must own its source address."""

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from p2pwall import neighbours
from p2pwall.interfaces import INeighbours
from p2pwall.neighbours import KernelNeighbours
from p2pwall.testing import packed

HOST, OTHER = packed("198.18.1.10"), packed("2001:2::20")
MAC, MAC2 = b"\x02\x00\x00\x00\x00\x0a", b"\x02\x00\x00\x00\x00\x14"


class KernelNeighboursTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.table = {HOST: MAC}
        self.reads = 0

        def read() -> dict[bytes, bytes]:
            self.reads += 1
            return dict(self.table)

        self.asked: list[tuple[bytes, bytes]] = []

        def resolve(addr: bytes, mac: bytes) -> bool:
            self.asked.append((addr, mac))
            return mac in self.table.values()

        self.neighbours = KernelNeighbours(self.clock, read=read, resolve=resolve)

    def test_provides_the_interface(self) -> None:
        self.assertTrue(verifyObject(INeighbours, self.neighbours))

    def test_the_owner_is_verified_from_the_cache(self) -> None:
        self.assertTrue(self.neighbours.verified(HOST, MAC))
        self.assertTrue(self.neighbours.verified(HOST, MAC))
        self.assertEqual(self.reads, 1)

    def test_another_mac_is_not(self) -> None:
        self.assertFalse(self.neighbours.verified(HOST, MAC2))

    def test_an_address_the_gateway_does_not_know_is_not(self) -> None:
        self.assertFalse(self.neighbours.verified(OTHER, MAC2))

    def test_a_link_without_macs_cannot_be_checked(self) -> None:
        self.assertTrue(self.neighbours.verified(OTHER, None))
        self.assertEqual(self.reads, 0)

    def test_a_host_that_just_arrived_is_read_after_a_second(self) -> None:
        self.assertFalse(self.neighbours.verified(OTHER, MAC2))
        self.table[OTHER] = MAC2
        self.assertFalse(self.neighbours.verified(OTHER, MAC2), "read at most once a second")
        self.clock.advance(1)
        self.assertTrue(self.neighbours.verified(OTHER, MAC2))
        self.assertEqual(self.reads, 2)

    def test_a_failing_read_keeps_the_last_table_and_is_counted(self) -> None:
        self.assertTrue(self.neighbours.verified(HOST, MAC))

        def broken() -> dict[bytes, bytes]:
            raise OSError(105, "No buffer space available")

        self.neighbours.read = broken
        self.clock.advance(1)
        self.assertFalse(self.neighbours.verified(OTHER, MAC2))
        self.assertTrue(self.neighbours.verified(HOST, MAC))
        self.assertEqual(self.neighbours.failures, 1)
        self.assertEqual(len(self.flushLoggedErrors()), 0)

    def test_a_new_address_of_a_known_mac_is_resolved_then_verified(self) -> None:
        """An IPv6 host's new (temporary) address: not in the table until the gateway sends
        there, so the kernel is asked to resolve it; the host's next packet verifies."""
        self.assertFalse(self.neighbours.verified(OTHER, MAC))
        self.assertEqual(self.asked, [(OTHER, MAC)])
        self.assertEqual(self.neighbours.resolves, 1)
        self.table[OTHER] = MAC  # the kernel resolved it
        self.assertFalse(self.neighbours.verified(OTHER, MAC), "read at most once a second")
        self.assertEqual(len(self.asked), 1, "asked at most once a read")
        self.clock.advance(1)
        self.assertTrue(self.neighbours.verified(OTHER, MAC))
        self.assertEqual(len(self.asked), 1)

    def test_an_address_owned_by_another_mac_is_not_resolved(self) -> None:
        self.assertFalse(self.neighbours.verified(HOST, MAC2))
        self.assertEqual(self.asked, [])

    def test_an_unknown_mac_resolves_nothing_and_a_failure_is_counted(self) -> None:
        self.assertFalse(self.neighbours.verified(OTHER, MAC2))
        self.assertEqual((self.asked, self.neighbours.resolves), ([(OTHER, MAC2)], 0))

        def refused(addr: bytes, mac: bytes) -> bool:
            raise OSError(1, "Operation not permitted")

        self.neighbours.resolve = refused
        self.clock.advance(1)
        self.assertFalse(self.neighbours.verified(OTHER, MAC))
        self.assertEqual(self.neighbours.failures, 1)

    def test_only_the_kernels_table_is_resolved_by_the_kernel(self) -> None:
        self.assertIsNone(KernelNeighbours(self.clock, read=dict).resolve)
        self.assertIs(KernelNeighbours(self.clock).resolve, neighbours._kernel_resolve)
