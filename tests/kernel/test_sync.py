"""KernelSync: the kernel's sets follow the engine's tables, and the engine the kernel's locks."""

from __future__ import annotations

import ipaddress

from twisted.internet.task import Clock
from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from p2pwall.detectors.bittorrent import BitTorrentDetector
from p2pwall.detectors.fasttrack import FastTrackDetector
from p2pwall.errors import KernelSetsError
from p2pwall.kernel.elements import Element
from p2pwall.kernel.sync import EXPIRY_SLACK, JOURNAL_CAP, KernelSync
from p2pwall.neighbours import KernelNeighbours
from p2pwall.packet import Hook, decode
from p2pwall.tables import ANY_CLIENT
from p2pwall.testing import FakeKernelSets, make_engine, packed, udp

PEER, CLIENT = packed("198.19.0.1"), packed("198.18.1.10")
HELLO = b"\x27\x00\x00\x00\x29\x80KaZaA\x00"
PPC = Element(4, "peer_port_client", ("198.19.0.1", 1214, "198.18.1.10"))


MAC, OTHER_MAC = bytes.fromhex("02000000000a"), bytes.fromhex("02000000000b")


class MacBindingTests(SynchronousTestCase):
    """Locks are bound to the MAC that sent the evidence, both ways."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        table = {CLIENT: MAC}
        self.engine = make_engine(
            self.clock, neighbours=KernelNeighbours(self.clock, read=lambda: dict(table))
        )
        self.sets = FakeKernelSets()
        self.sync = KernelSync(self.engine, self.sets, self.clock)
        self.sync.start()

    def test_the_daemons_lock_carries_the_evidences_mac(self) -> None:
        hello = decode(udp("198.18.1.10", "198.19.1.1", 1214, 2000, HELLO))
        hello.mac = MAC
        self.engine.verdict(hello, Hook.FORWARD)
        self.clock.advance(0)
        self.assertIn((4, "198.18.1.10", "02:00:00:00:00:0a"), self.sets.locked)

    def test_a_kernel_lock_bound_to_a_forged_mac_is_not_the_hosts(self) -> None:
        """A green host that forged 198.18.1.10 towards a learned peer got the kernel to lock
        (198.18.1.10, its own MAC): that drops only its forgeries, and the daemon ignores it."""
        self.sets.kernel_lock("198.18.1.10", 100, mac="02:00:00:00:00:0b")
        self.sync.poll()
        self.assertIsNone(self.engine.clients.get(CLIENT))
        self.assertEqual(self.engine.stats["kernel_forged_locks"], 1)
        self.clock.advance(0)
        self.assertNotIn((4, "198.18.1.10", None), self.sets.locked)

    def test_a_checked_kernel_lock_also_locks_the_address_for_traffic_coming_in(self) -> None:
        self.sets.kernel_lock("198.18.1.10", 100, flows=True, mac="02:00:00:00:00:0a")
        self.sync.poll()
        self.assertEqual(self.engine.clients.get(CLIENT).mac, MAC)
        self.clock.advance(0)
        self.assertIn((4, "198.18.1.10", None), self.sets.locked)


class SyncTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.engine = make_engine(self.clock, detectors=[FastTrackDetector(), BitTorrentDetector()])
        self.udp = self.engine.origins.resolve("fasttrack-udp")
        self.sets = FakeKernelSets()
        self.sync = KernelSync(self.engine, self.sets, self.clock)

    def test_start_copies_what_the_tables_hold(self) -> None:
        self.engine.learn(PEER, 1214, CLIENT, "fasttrack-udp")
        self.engine.block(packed("198.19.0.2"))
        self.engine.lock(CLIENT, "test")
        self.sync.start()
        self.assertEqual(
            self.sets.blocks,
            {PPC: "lock", Element(4, "peer", ("198.19.0.2",)): "block"},
        )
        self.assertEqual(self.sets.locked, {(4, "198.18.1.10", None): (120.0, False)})

    def test_start_fails_when_the_lock_times_differ(self) -> None:
        self.sets.lock_seconds = 60
        self.assertRaises(KernelSetsError, self.sync.start)

    def test_changes_of_one_turn_go_in_one_batch_after_it(self) -> None:
        self.sync.start()
        self.engine.learn(PEER, 1214, CLIENT, "fasttrack-udp")
        self.engine.learn(PEER, 1215, CLIENT, "fasttrack-udp")
        self.engine.lock(CLIENT, "tried a peer", protocol=self.udp.protocol)
        self.assertEqual(self.sets.blocks, {})
        self.clock.advance(0)
        self.assertEqual(self.sets.batches, 2)  # the start's locks, then this turn's
        self.assertIn(PPC, self.sets.blocks)
        self.assertEqual(len(self.sets.blocks), 2)
        self.assertTrue(self.sets.is_locked("198.18.1.10"))

    def test_removal_and_origin_change_reach_the_kernel(self) -> None:
        self.engine.learn(PEER, 1214, ANY_CLIENT, "fasttrack-udp")
        self.engine.learn(packed("198.19.0.3"), 4000, CLIENT, "fasttrack-udp")
        self.sync.start()
        self.engine.block(PEER, 1214)  # the admin's block of a learned peer: no lock any more
        self.engine.unblock(packed("198.19.0.3"), 4000, CLIENT)
        self.clock.advance(0)
        self.assertEqual(self.sets.blocks, {Element(4, "peer_port", ("198.19.0.1", 1214)): "block"})

    def test_a_block_learned_and_forgotten_in_one_turn_costs_nothing(self) -> None:
        self.sync.start()
        self.engine.learn(PEER, 1214, CLIENT, "fasttrack-udp")
        self.engine.unblock(PEER, 1214, CLIENT)
        self.clock.advance(0)
        self.assertEqual(self.sets.blocks, {})

    def test_unlock_releases_the_kernels_lock_but_expiry_leaves_it(self) -> None:
        self.sync.start()
        other = packed("198.18.1.11")
        self.engine.lock(CLIENT, "test")
        self.engine.lock(other, "test")
        self.clock.advance(0)
        self.engine.unlock(CLIENT)
        self.clock.advance(0)
        self.assertFalse(self.sets.is_locked("198.18.1.10"))
        self.clock.advance(121)
        self.engine.tick()
        self.clock.advance(0)
        # The kernel's own copy ran out at the same time; deleting it would undo a renewal
        # the kernel made since.
        self.assertTrue(self.sets.is_locked("198.18.1.11"))

    def test_kernel_locks_are_mirrored_for_probes(self) -> None:
        self.sync.start()
        self.sets.kernel_lock("198.18.1.10", 100, flows=True)
        self.sync.poll()
        client = self.engine.clients.get(CLIENT)
        self.assertEqual(client.until, self.clock.seconds() + 100)
        self.assertTrue(client.locks_udp)
        self.assertIn("locked by the kernel", self.engine.events.of("c")[0])
        # Mirroring writes nothing back.
        self.clock.advance(0)
        self.assertEqual(self.sets.batches, 1)

    def test_a_kernel_lock_renewal_extends_the_daemons(self) -> None:
        self.sync.start()
        self.engine.lock(CLIENT, "test")
        self.clock.advance(50)
        self.sets.kernel_lock("198.18.1.10", 119)
        self.sync.poll()
        self.assertEqual(self.engine.clients.get(CLIENT).until, self.clock.seconds() + 119)
        self.assertEqual(len(self.engine.events.of("c")), 1)

    def test_the_tail_of_an_expired_lock_is_no_new_lock(self) -> None:
        self.sync.start()
        self.sets.kernel_lock("198.18.1.10", EXPIRY_SLACK / 2)
        self.sync.poll()
        self.assertIsNone(self.engine.clients.get(CLIENT))

    def test_a_refused_batch_is_followed_by_a_whole_copy(self) -> None:
        self.sync.start()
        self.sets.refuse = 1
        self.engine.learn(PEER, 1214, CLIENT, "fasttrack-udp")
        self.clock.advance(0)
        self.assertEqual(self.sets.blocks, {PPC: "lock"})
        self.assertEqual(self.sets.loads, 2)
        self.assertEqual(self.engine.stats["kernel_errors"], 1)

    def test_a_kernel_that_keeps_refusing_is_retried_by_the_poll(self) -> None:
        self.sync.start()
        self.sets.refuse = 2
        self.engine.learn(PEER, 1214, CLIENT, "fasttrack-udp")
        self.clock.advance(0)
        self.assertEqual(self.sets.blocks, {})
        self.engine.learn(PEER, 1215, CLIENT, "fasttrack-udp")
        self.clock.advance(0)
        self.sync.poll()
        self.assertEqual(len(self.sets.blocks), 2)

    def test_sets_gone_while_running_are_one_line_until_they_are_back(self) -> None:
        self.sync.start()
        self.engine.learn(PEER, 1214, CLIENT, "fasttrack-udp")
        self.clock.advance(0)
        self.sets.refuse = 3
        with capturedLogs() as logged:
            for _ in range(3):
                self.sync.poll()
            self.sync.poll()
        texts = [formatEvent(event) for event in logged]
        self.assertEqual(len([t for t in texts if "retrying" in t]), 1, texts)
        self.assertIn("kernel sets: written again", texts)
        self.assertEqual(self.sets.blocks, {PPC: "lock"})

    def test_an_overflowing_journal_becomes_a_whole_copy(self) -> None:
        self.engine.blocks.cap = JOURNAL_CAP + 10
        self.sync.start()
        for n in range(JOURNAL_CAP + 1):
            peer = packed("198.19.0.0")[:2] + (n & 0xFFFF).to_bytes(2, "big")
            self.engine.learn(peer, 2000 + (n >> 16), CLIENT, "fasttrack-udp")
        self.clock.advance(0)
        self.assertEqual(len(self.sets.blocks), JOURNAL_CAP + 1)
        self.assertEqual(self.sets.loads, 2)

    def test_accept_all_empties_the_sets_and_turning_it_off_refills_them(self) -> None:
        self.engine.learn(PEER, 1214, CLIENT, "fasttrack-udp")
        self.sync.start()
        self.engine.accept_all = True
        self.sync.poll()
        self.assertEqual(self.sets.blocks, {})
        self.engine.accept_all = False
        self.sync.poll()
        self.assertEqual(self.sets.blocks, {PPC: "lock"})

    def test_a_dry_run_turned_on_at_run_time_empties_the_sets(self) -> None:
        self.engine.learn(PEER, 1214, CLIENT, "fasttrack-udp")
        self.sync.start()
        self.engine.dry_run = True
        self.sync.poll()
        self.assertEqual(self.sets.blocks, {})
        self.engine.learn(PEER, 1215, CLIENT, "fasttrack-udp")
        self.clock.advance(0)
        self.assertEqual(self.sets.blocks, {})

    def test_allowed_networks_follow_the_control_port(self) -> None:
        self.sync.start()
        network = ipaddress.ip_network("198.18.1.0/28")
        self.engine.allow(network)
        self.sync.poll()
        self.assertEqual(self.sets.allowed, [network])

    def test_stop_leaves_the_sets_and_follows_nothing(self) -> None:
        self.engine.learn(PEER, 1214, CLIENT, "fasttrack-udp")
        self.sync.start()
        self.sync.stop()
        self.engine.learn(PEER, 1215, CLIENT, "fasttrack-udp")
        self.clock.advance(0)
        self.assertEqual(self.sets.blocks, {PPC: "lock"})
