"""NftSets: the JSON batches libnftables gets (the kernel's answers are in tests/e2e)."""

from __future__ import annotations

import ipaddress

from twisted.trial.unittest import SynchronousTestCase

from p2pwall.errors import KernelSetsError
from p2pwall.kernel.elements import Element, Lock
from p2pwall.kernel.nftsets import CHUNK, NftSets

from .support import RecordingNft

ITEM = Element(4, "peer_port_client", ("198.19.0.1", 1214, "198.18.1.10"))
GOTO_LOCK = {"goto": {"target": "lock"}}


class NftSetsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.nft = RecordingNft()
        self.sets = NftSets(self.nft)

    def test_check_wants_the_daemons_lock_time(self) -> None:
        self.sets.check(120)
        self.nft.timeout = 60
        with self.assertRaises(KernelSetsError) as caught:
            self.sets.check(120)
        self.assertIn("--lock-time", str(caught.exception))

    def test_check_names_the_missing_table(self) -> None:
        self.nft.replies = [(1, "", "Error: No such file or directory\nlist set inet p2pwall")]
        with self.assertRaises(KernelSetsError) as caught:
            self.sets.check(120)
        self.assertIn("p2pwall-rules --enforce kernel", str(caught.exception))

    def test_load_flushes_and_fills_in_one_batch(self) -> None:
        count = self.sets.load([(ITEM, "lock")], [ipaddress.ip_network("198.18.5.0/24")])
        self.assertEqual(count, 1)
        self.assertEqual(len(self.nft.batches), 1)
        ops = self.nft.ops()
        self.assertEqual(sum(op == "flush" for op, _, _ in ops), 8 + 2)
        self.assertIn(
            ("add", "peer_port_client4", [[{"concat": ["198.19.0.1", 1214, "198.18.1.10"]},
                                           GOTO_LOCK]]),
            ops,
        )  # fmt: skip
        self.assertIn(("add", "allowed4", [{"prefix": {"addr": "198.18.5.0", "len": 24}}]), ops)

    def test_large_loads_are_chunked_within_the_batch(self) -> None:
        items = [(Element(4, "peer", (f"198.19.{i >> 8}.{i & 255}",)), "block")
                 for i in range(CHUNK + 1)]  # fmt: skip
        self.sets.load(items, [])
        adds = [elems for op, name, elems in self.nft.ops() if op == "add" and name == "peer4"]
        self.assertEqual([len(elems) for elems in adds], [CHUNK, 1])
        self.assertEqual(len(self.nft.batches), 1)

    def test_apply_replaces_removes_and_restarts_locks(self) -> None:
        self.sets.apply(
            add=[],
            replace=[(ITEM, "block")],
            remove=[Element(4, "peer", ("198.19.0.9",))],
            locks=[Lock("198.18.1.10", 4, 99.2, flows=True, mac="02:00:00:00:00:0a")],
            unlocks=[],
        )
        ops = [(op, name) for op, name, _ in self.nft.ops()]
        self.assertEqual(ops[:3], [("delete", "peer_port_client4"), ("add", "peer_port_client4"),
                                   ("delete", "peer4")])  # fmt: skip
        # Each lock set, by address and by address and MAC: add, delete, add with the timeout
        # (only an add sets one).
        self.assertEqual(
            ops[3:],
            [(op, name) for name in ("locked_ip4", "locked4", "locked_flows_ip4", "locked_flows4")
             for op in ("add", "delete", "add")],
        )  # fmt: skip
        pair = {"concat": ["198.18.1.10", "02:00:00:00:00:0a"]}
        self.assertEqual(self.nft.ops()[8][2], [{"elem": {"val": pair, "timeout": 100}}])

    def test_a_lock_without_a_mac_is_by_address_alone(self) -> None:
        self.sets.apply([], [], [], [Lock("2001:2:0:1::10", 6, 30, flows=False)], [])
        self.assertEqual({name for _, name, _ in self.nft.ops()}, {"locked_ip6"})

    def test_unlock_finds_the_mac_a_lock_is_bound_to(self) -> None:
        self.nft.listing = {
            "locked4": [{"elem": {"val": {"concat": ["198.18.1.10", "02:00:00:00:00:0a"]},
                                  "expires": 50}}],
        }  # fmt: skip
        self.sets.apply([], [], [], [], [(4, "198.18.1.10")])
        deleted = [(name, elems) for op, name, elems in self.nft.ops() if op == "delete"]
        self.assertIn(("locked4", [{"concat": ["198.18.1.10", "02:00:00:00:00:0a"]}]), deleted)
        self.assertIn(("locked_flows_ip4", ["198.18.1.10"]), deleted)

    def test_a_refused_batch_is_one_line(self) -> None:
        self.nft.replies = [(1, "", "internal:0:0-0: Error: Could not process rule:\nFile exists")]
        with self.assertRaises(KernelSetsError) as caught:
            self.sets.apply([(ITEM, "lock")], [], [], [], [])
        self.assertEqual(
            str(caught.exception), "nft: internal:0:0-0: Error: Could not process rule: File exists"
        )

    def test_locks_merge_the_sets_of_each_address_and_mac(self) -> None:
        pair = {"concat": ["198.18.1.10", "02:00:00:00:00:0a"]}
        self.nft.listing = {
            "locked4": [{"elem": {"val": pair, "timeout": 120, "expires": 80}}],
            "locked_flows4": [{"elem": {"val": pair, "timeout": 120, "expires": 70}}],
            "locked_ip4": [{"elem": {"val": "198.18.1.11", "timeout": 120, "expires": 5}}],
        }
        locks = sorted(self.sets.locks(), key=lambda lock: lock.addr)
        self.assertEqual(
            locks,
            [Lock("198.18.1.10", 4, 80.0, True, "02:00:00:00:00:0a"),
             Lock("198.18.1.11", 4, 5.0, False)],
        )  # fmt: skip

    def test_nothing_to_write_sends_nothing(self) -> None:
        self.sets.apply([], [], [], [], [])
        self.assertEqual(self.nft.batches, [])
