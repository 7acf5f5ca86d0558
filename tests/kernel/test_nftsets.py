"""NftSets: the nft commands libnftables gets (tests/e2e/test_kernel_sets.py gives them to the
kernel)."""

from __future__ import annotations

import ipaddress

from twisted.trial.unittest import SynchronousTestCase

from p2pwall.errors import KernelSetsError
from p2pwall.kernel.elements import Element, Lock
from p2pwall.kernel.nftsets import CHUNK, NftSets

from .support import RecordingNft

ITEM = Element(4, "peer_port_client", ("198.19.0.1", 1214, "198.18.1.10"))
MAC = "02:00:00:00:00:0a"
T = "inet p2pwall"


class NftSetsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.nft = RecordingNft()
        self.sets = NftSets(self.nft)

    def test_check_wants_every_lock_set_with_the_daemons_lock_time(self) -> None:
        self.sets.check(120)
        self.assertEqual(len(self.nft.listed), 8)
        self.nft.timeout = 60
        with self.assertRaises(KernelSetsError) as caught:
            self.sets.check(120)
        self.assertIn("--lock-time", str(caught.exception))

    def test_check_names_the_missing_set(self) -> None:
        self.nft.missing = {"locked_ip6"}
        with self.assertRaises(KernelSetsError) as caught:
            self.sets.check(120)
        self.assertIn("no set locked_ip6 in table inet p2pwall", str(caught.exception))
        self.assertIn("p2pwall-rules --enforce kernel", str(caught.exception))

    def test_load_empties_and_fills(self) -> None:
        count = self.sets.load([(ITEM, "lock")], [ipaddress.ip_network("198.18.5.0/24")])
        self.assertEqual(count, 1)
        (lines,) = self.nft.transactions
        self.assertEqual(sum(line.startswith("flush") for line in lines), 8 + 2)
        self.assertIn(f"add element {T} peer_port_client4 "
                      "{ 198.19.0.1 . 1214 . 198.18.1.10 : goto lock }", lines)  # fmt: skip
        self.assertIn(f"add element {T} allowed4 {{ 198.18.5.0/24 }}", lines)

    def test_a_large_load_goes_in_bounded_transactions(self) -> None:
        items = [(Element(4, "peer", (f"198.19.{i >> 8}.{i & 255}",)), "block")
                 for i in range(2 * CHUNK + 1)]  # fmt: skip
        self.assertEqual(self.sets.load(items, []), 2 * CHUNK + 1)
        self.assertEqual(len(self.nft.transactions), 3)
        self.assertTrue(self.nft.transactions[0][0].startswith("flush"))
        counts = [sum(line.count(": goto block") for line in t) for t in self.nft.transactions]
        self.assertEqual(counts, [CHUNK, CHUNK, 1])

    def test_apply_is_one_transaction(self) -> None:
        self.sets.apply(
            add=[(Element(6, "peer", ("2001:2:0:1000::9",)), "block")],
            replace=[(ITEM, "block")],
            remove=[Element(4, "peer", ("198.19.0.9",))],
            locks=[Lock("198.18.1.10", 4, 99.2, flows=True, mac=MAC)],
            unlocks=[],
        )
        (lines,) = self.nft.transactions
        self.assertEqual(lines[:4], [
            f"add element {T} peer6 {{ 2001:2:0:1000::9 : goto block }}",
            f"delete element {T} peer_port_client4 {{ 198.19.0.1 . 1214 . 198.18.1.10 }}",
            f"add element {T} peer_port_client4 {{ 198.19.0.1 . 1214 . 198.18.1.10 : goto block }}",
            f"delete element {T} peer4 {{ 198.19.0.9 }}",
        ])  # fmt: skip
        # Each lock set, by address and by address and MAC: add, delete, add with the timeout
        # (only an add sets one).
        self.assertEqual(
            [line.split()[4] for line in lines[4:]],
            [name for name in ("locked_ip4", "locked4", "locked_flows_ip4", "locked_flows4")
             for _ in range(3)],
        )  # fmt: skip
        self.assertEqual(
            lines[9], f"add element {T} locked4 {{ 198.18.1.10 . {MAC} timeout 100s }}"
        )

    def test_a_lock_without_a_mac_is_by_address_alone(self) -> None:
        self.sets.apply([], [], [], [Lock("2001:2:0:1::10", 6, 30, flows=False)], [])
        self.assertEqual({line.split()[4] for line in self.nft.lines()}, {"locked_ip6"})

    def test_unlock_finds_the_mac_a_lock_is_bound_to(self) -> None:
        pair = {"concat": ["198.18.1.10", MAC]}
        self.nft.listing = {"locked4": [{"elem": {"val": pair, "expires": 50}}]}
        self.sets.apply([], [], [], [], [(4, "198.18.1.10")])
        deleted = [line for line in self.nft.lines() if line.startswith("delete")]
        self.assertIn(f"delete element {T} locked4 {{ 198.18.1.10 . {MAC} }}", deleted)
        self.assertIn(f"delete element {T} locked_flows4 {{ 198.18.1.10 . {MAC} }}", deleted)
        self.assertIn(f"delete element {T} locked_flows_ip4 {{ 198.18.1.10 }}", deleted)
        self.assertEqual(len(deleted), 4)

    def test_a_refused_transaction_is_one_line(self) -> None:
        self.nft.replies = [(1, "", "Error: Could not process rule:\nFile exists\n")]
        with self.assertRaises(KernelSetsError) as caught:
            self.sets.apply([(ITEM, "lock")], [], [], [], [])
        self.assertEqual(str(caught.exception), "nft: Error: Could not process rule: File exists")

    def test_locks_merge_the_sets_of_each_address_and_mac(self) -> None:
        pair = {"concat": ["198.18.1.10", MAC]}
        self.nft.listing = {
            "locked4": [{"elem": {"val": pair, "timeout": 120, "expires": 80}}],
            "locked_flows4": [{"elem": {"val": pair, "timeout": 120, "expires": 70}}],
            "locked_ip4": [{"elem": {"val": "198.18.1.11", "timeout": 120, "expires": 5}}],
        }
        locks = sorted(self.sets.locks(), key=lambda lock: lock.addr)
        self.assertEqual(
            locks, [Lock("198.18.1.10", 4, 80.0, True, MAC), Lock("198.18.1.11", 4, 5.0, False)]
        )

    def test_clear_empties_every_block_map_and_lock_set(self) -> None:
        self.sets.clear()
        (lines,) = self.nft.transactions
        self.assertEqual(len(lines), 8 + 8)
        self.assertTrue(all(line.startswith("flush") for line in lines))

    def test_nothing_to_write_sends_nothing(self) -> None:
        self.sets.apply([], [], [], [], [])
        self.assertEqual(self.nft.transactions, [])
