"""Block and lock tables: matching, bounds under floods, O(due) expiry and probe timing."""

from twisted.trial.unittest import SynchronousTestCase

from p2pwall import tables
from p2pwall.origins import Protocol
from p2pwall.tables import ANY_CLIENT, ANY_PORT, BlockTable, LockTable
from p2pwall.testing import FakeProbe, packed

PEER = packed("198.19.1.1")
CLIENT = packed("198.18.1.10")
OTHER = packed("198.18.1.20")


def addr(i: int) -> bytes:
    return i.to_bytes(4, "big")


class CountingDict(dict):
    """A block table's dict that counts the entries its ``items()`` hands out."""

    visited = 0

    def items(self):  # type: ignore[override]
        for item in super().items():
            self.visited += 1
            yield item


def counting(table: BlockTable) -> CountingDict:
    table._blocks = CountingDict(table._blocks)
    return table._blocks


class BlockTableTests(SynchronousTestCase):
    def test_port_and_client_scopes(self) -> None:
        table = BlockTable(100)
        table.add(PEER, 1214, ANY_CLIENT, "udp", 1.0)
        self.assertIsNotNone(table.match(PEER, 1214, OTHER, 2.0))
        self.assertIsNone(table.match(PEER, 80, OTHER, 2.0))
        table.add(PEER, ANY_PORT, CLIENT, "manual", 1.0)
        self.assertIsNotNone(table.match(PEER, 80, CLIENT, 2.0))
        self.assertIsNone(table.match(PEER, 80, OTHER, 2.0))
        self.assertTrue(table.remove(PEER, ANY_PORT, CLIENT))
        self.assertFalse(table.remove(PEER, ANY_PORT, CLIENT))
        self.assertIsNone(table.match(PEER, 80, CLIENT, 2.0))

    def test_match_touches_last_seen(self) -> None:
        table = BlockTable(100)
        table.add(PEER, ANY_PORT, ANY_CLIENT, "dns", 1.0, name="www.winmx.com")
        block = table.match(PEER, 5, CLIENT, 9.0)
        assert block is not None
        self.assertEqual((block.seen, block.origin, block.name), (9.0, "dns", "www.winmx.com"))

    def test_readding_refreshes_and_manual_wins(self) -> None:
        table = BlockTable(100)
        self.assertTrue(table.add(PEER, 0, b"", "udp", 1.0))
        self.assertFalse(table.add(PEER, 0, b"", "manual", 5.0))
        ((_key, block),) = list(table.items())
        self.assertEqual((block.origin, block.seen), ("manual", 5.0))

    def test_flood_evicts_oldest_learned_and_keeps_manual(self) -> None:
        table = BlockTable(100)
        table.add(PEER, 0, b"", "manual", 0.0)
        for i in range(10_000):
            table.add(i.to_bytes(4, "big"), 1214, b"", "udp", float(i + 1))
        self.assertLessEqual(len(table), 100)
        self.assertIn((PEER, 0, b""), table)
        self.assertIn(((9999).to_bytes(4, "big"), 1214, b""), table)
        self.assertNotIn(((5).to_bytes(4, "big"), 1214, b""), table)
        self.assertGreater(table.evicted, 0)

    def test_full_of_manual_blocks_refuses_learning(self) -> None:
        table = BlockTable(10)
        for i in range(10):
            table.add(i.to_bytes(4, "big"), 0, b"", "manual", 0.0)
        self.assertFalse(table.add(PEER, 0, b"", "udp", 1.0))
        self.assertEqual(len(table), 10)

    def test_prune_keeps_manual_and_recent(self) -> None:
        table = BlockTable(100)
        table.add(PEER, 0, b"", "udp", 1.0)
        table.add(OTHER, 0, b"", "manual", 1.0)
        table.add(CLIENT, 0, b"", "udp", 50.0)
        self.assertEqual(table.prune(10.0), 1)
        self.assertEqual({k[0] for k, _ in table.items()}, {OTHER, CLIENT})

    def test_eviction_goes_by_last_seen(self) -> None:
        table = BlockTable(10)
        table.add(addr(0), ANY_PORT, CLIENT, "udp", 0.0)
        for i in range(1, 10):
            table.add(addr(i), 1214, b"", "udp", float(i))
        self.assertIsNotNone(table.match(addr(0), 80, CLIENT, 20.0))
        self.assertIsNotNone(table.match(addr(1), 1214, OTHER, 20.5))
        table.add(PEER, 1214, b"", "udp", 21.0)
        table.add(OTHER, 1214, b"", "udp", 21.0)
        self.assertIn((addr(0), ANY_PORT, CLIENT), table)
        self.assertIn((addr(1), 1214, b""), table)
        self.assertNotIn((addr(2), 1214, b""), table)
        self.assertNotIn((addr(3), 1214, b""), table)
        self.assertEqual(table.evicted, 2)

    def test_eviction_work_is_proportional_to_what_it_evicts(self) -> None:
        table = BlockTable(10_000)
        for i in range(5):
            table.add(addr(i), 0, b"", "manual", 0.0)
        for i in range(5, 10_000):
            table.add(addr(i), 1214, b"", "udp", float(i))
        blocks = counting(table)
        table.add(PEER, 1214, b"", "udp", 20_000.0)
        self.assertEqual(table.evicted, 1000)
        self.assertEqual(blocks.visited, 1005)
        self.assertNotIn((addr(1004), 1214, b""), table)
        self.assertIn((addr(1005), 1214, b""), table)
        for i in range(5):  # kept, and moved out of the next pass's way
            self.assertIn((addr(i), 0, b""), table)
        for i in range(999):  # fills the table again
            table.add(addr(100_000 + i), 1214, b"", "udp", 30_000.0)
        self.assertEqual(table.evicted, 1000)
        blocks.visited = 0
        table.add(OTHER, 1214, b"", "udp", 40_000.0)
        self.assertEqual(blocks.visited, 1000)
        self.assertEqual(table.evicted, 2000)

    def test_one_eviction_drops_at_most_evict_max_blocks(self) -> None:
        self.patch(tables, "EVICT_MAX", 50)
        table = BlockTable(1000)
        for i in range(1001):
            table.add(addr(i), 1214, b"", "udp", float(i))
        self.assertEqual((table.evicted, len(table)), (50, 951))

    def test_prune_work_is_proportional_to_what_it_forgets(self) -> None:
        table = BlockTable(10_000)
        table.add(PEER, 0, b"", "manual", 0.0)
        for i in range(10_000 - 1):
            table.add(addr(i), 1214, b"", "udp", float(i))
        table.match(addr(3), 1214, OTHER, 50_000.0)  # seen again: young now
        blocks = counting(table)
        self.assertEqual(table.prune(100.0), 99)
        self.assertEqual(blocks.visited, 101)  # 99 stale, the manual one, the first young one
        self.assertIn((PEER, 0, b""), table)
        self.assertIn((addr(3), 1214, b""), table)
        self.assertNotIn((addr(99), 1214, b""), table)
        blocks.visited = 0
        self.assertEqual(table.prune(100.0), 0)
        self.assertEqual(blocks.visited, 1)

    def test_table_of_manual_blocks_is_not_scanned(self) -> None:
        table = BlockTable(10)
        for i in range(10):
            table.add(addr(i), 0, b"", "manual", 0.0)
        blocks = counting(table)
        self.assertFalse(table.add(PEER, 0, b"", "udp", 1.0))
        self.assertEqual(table.prune(1e9), 0)
        self.assertEqual(blocks.visited, 0)
        table.remove(addr(0), 0, b"")
        self.assertTrue(table.add(PEER, 0, b"", "udp", 1.0))
        self.assertEqual(table.prune(1e9), 1)
        self.assertEqual(len(table), 9)

    def test_last_seen_moves_at_most_once_a_second(self) -> None:
        table = BlockTable(100)
        table.add(PEER, 1214, b"", "udp", 10.0)
        block = table.match(PEER, 1214, OTHER, 10.5)
        assert block is not None
        self.assertEqual((block.seen, table.refreshes), (10.0, 0))
        table.match(PEER, 1214, OTHER, 11.0)
        self.assertEqual((block.seen, table.refreshes), (11.0, 1))
        table.add(PEER, 1214, b"", "udp", 12.5)
        self.assertEqual((block.seen, table.refreshes), (12.5, 2))
        table.match(PEER, 1214, OTHER, 5.0)  # a clock stepped back does not move it back
        self.assertEqual(block.seen, 12.5)

    def test_change_counters(self) -> None:
        table = BlockTable(100)
        table.add(PEER, 0, b"", "udp", 1.0)
        table.add(OTHER, 0, b"", "udp", 1.0)
        self.assertEqual((table.changes, table.refreshes), (2, 0))
        table.add(PEER, 0, b"", "udp", 1.5)
        table.match(PEER, 80, CLIENT, 1.2)
        self.assertEqual((table.changes, table.refreshes), (2, 0))
        table.match(PEER, 80, CLIENT, 3.0)
        self.assertEqual((table.changes, table.refreshes), (2, 1))
        table.add(PEER, 0, b"", "manual", 3.0)
        self.assertEqual(table.changes, 3)
        table.remove(CLIENT, 0, b"")
        self.assertEqual(table.changes, 3)
        table.prune(2.0)
        self.assertEqual(table.changes, 4)
        self.assertEqual([k[0] for k, _ in table.items()], [PEER])
        table.remove(PEER, 0, b"")
        self.assertEqual(table.changes, 5)

    def test_a_block_keeps_its_first_sighting_and_a_corroborated_one_its_revealers(self) -> None:
        table = BlockTable(100)
        table.add(PEER, 2000, CLIENT, "udp", 1.0)
        table.add(PEER, 2000, ANY_CLIENT, "udp", 3.0, by=(CLIENT, OTHER))
        table.add(PEER, 2000, CLIENT, "udp", 5.0)
        table.match(PEER, 2000, OTHER, 7.0)
        blocks = dict(table.items())
        own, shared = blocks[(PEER, 2000, CLIENT)], blocks[(PEER, 2000, ANY_CLIENT)]
        self.assertEqual((own.first, own.seen), (1.0, 5.0))
        self.assertEqual((shared.first, shared.seen, shared.by), (3.0, 7.0, (CLIENT, OTHER)))
        self.assertFalse(hasattr(own, "by"), "no slot for revealers on client-scoped blocks")

    def test_snapshot_is_a_copy(self) -> None:
        table = BlockTable(100)
        table.add(PEER, 0, b"", "udp", 1.0)
        keys, blocks = table.snapshot()
        table.add(OTHER, 0, b"", "udp", 2.0)
        table.remove(PEER, 0, b"")
        self.assertEqual(keys, [(PEER, 0, b"")])
        self.assertEqual([b.origin for b in blocks], ["udp"])


class LockTableTests(SynchronousTestCase):
    def test_lock_refresh_and_expiry(self) -> None:
        table = LockTable(10, 100)
        client, new = table.lock(CLIENT, 0.0)
        self.assertTrue(new)
        self.assertTrue(table.is_locked(CLIENT, 9.9))
        self.assertEqual(list(table.due(9.9)), [])
        _, new = table.lock(CLIENT, 5.0)
        self.assertFalse(new)
        self.assertEqual(list(table.due(14.9)), [])
        self.assertTrue(table.is_locked(CLIENT, 14.9))
        (due,) = table.due(15.0)
        self.assertEqual((due.action, due.client.addr), ("expire", CLIENT))
        self.assertIsNone(table.get(CLIENT))

    def test_disabled_lock_table_locks_nothing(self) -> None:
        table = LockTable(0, 100)
        self.assertEqual(table.lock(CLIENT, 0.0), (None, False))
        self.assertFalse(table.is_locked(CLIENT, 0.0))

    def test_probe_at_half_lock_then_expiry_when_unanswered(self) -> None:
        table = LockTable(10, 100)
        client, _ = table.lock(CLIENT, 0.0)
        assert client is not None
        table.set_probe(client, FakeProbe())
        self.assertEqual(list(table.due(4.9)), [])
        (probe,) = table.due(5.0)
        self.assertEqual((probe.action, client.last_probe), ("probe", 5.0))
        self.assertEqual(list(table.due(9.9)), [])
        (expire,) = table.due(10.0)
        self.assertEqual(expire.action, "expire")

    def test_answered_probe_keeps_a_client_locked_forever(self) -> None:
        table = LockTable(10, 100)
        client, _ = table.lock(CLIENT, 0.0)
        assert client is not None
        table.set_probe(client, FakeProbe())
        now = 0.0
        probes = 0
        for _ in range(20):
            now += 1.0
            for due in table.due(now):
                self.assertEqual(due.action, "probe")
                probes += 1
                table.lock(CLIENT, now + 0.1)
        self.assertTrue(table.is_locked(CLIENT, now))
        self.assertGreaterEqual(probes, 3)

    def test_probe_given_after_lock_is_scheduled_early(self) -> None:
        table = LockTable(10, 100)
        client, _ = table.lock(CLIENT, 0.0)
        assert client is not None
        table.set_probe(client, FakeProbe())
        self.assertEqual([d.action for d in table.due(5.0)], ["probe"])

    def test_one_probe_per_protocol_family(self) -> None:
        table = LockTable(10, 100)
        client, _ = table.lock(CLIENT, 0.0)
        assert client is not None
        first, again = FakeProbe(port=1), FakeProbe(port=2)
        other = FakeProbe(protocol=Protocol("Other", "other"))
        for probe in (first, other, again):
            table.set_probe(client, probe)
        self.assertEqual(client.probes, {"test": again, "other": other})

    def test_expiry_work_is_proportional_to_what_is_due(self) -> None:
        table = LockTable(100, 100_000)
        for i in range(50_000):
            table.lock(i.to_bytes(4, "big"), float(i % 1000))
        self.assertEqual(len(list(table.due(100.5))), 1 * 50)
        self.assertEqual(len(table._heap), 50_000 - 50)

    def test_flood_of_clients_is_bounded_and_reports_evictions(self) -> None:
        table = LockTable(10, 100)
        evicted = []
        table.on_evict = evicted.append
        for i in range(1000):
            table.lock(i.to_bytes(4, "big"), float(i))
        self.assertLessEqual(len(table), 100)
        self.assertEqual(len(evicted), table.evicted)
        self.assertIsNotNone(table.get((999).to_bytes(4, "big")))
        self.assertLess(len(table._heap), 1000)

    def test_due_looks_at_no_more_than_its_limit(self) -> None:
        table = LockTable(10, 1000)
        for i in range(500):
            table.lock(addr(i), 0.0)
        self.assertEqual(len(list(table.due(10.0, limit=200))), 200)
        self.assertEqual(len(table), 300)
        self.assertEqual(len(list(table.due(10.0))), 300)

    def test_a_probe_over_the_allowance_is_put_off_without_holding_up_expiries(self) -> None:
        table = LockTable(10, 100)
        probed, _ = table.lock(CLIENT, 0.0)
        assert probed is not None
        table.set_probe(probed, FakeProbe())
        table.lock(OTHER, -4.0)  # expires at 6.0, after the probe fell due at 5.0
        actions = [(due.action, due.client.addr) for due in table.due(6.0, probes=0)]
        self.assertEqual(actions, [("expire", OTHER)])
        self.assertIsNone(probed.last_probe)
        (probe,) = table.due(6.0 + tables.PROBE_DEFER, probes=1)
        self.assertEqual((probe.action, probe.client.addr), ("probe", CLIENT))


MAC1, MAC2 = b"\x02\x00\x00\x00\x00\x01", b"\x02\x00\x00\x00\x00\x02"


class RevealersTests(SynchronousTestCase):
    def test_only_another_host_with_another_mac_corroborates(self) -> None:
        revealers = tables.Revealers(100)
        self.assertFalse(revealers.corroborated(PEER, 2000, CLIENT, MAC1))
        self.assertFalse(revealers.corroborated(PEER, 2000, CLIENT, MAC2), "the same address")
        self.assertFalse(revealers.corroborated(PEER, 2000, OTHER, MAC1), "the same MAC")
        self.assertFalse(revealers.corroborated(PEER, 2000, OTHER, None), "no MAC to compare")
        self.assertFalse(revealers.corroborated(PEER, 2001, OTHER, MAC2), "another port")
        self.assertEqual(revealers.corroborated(PEER, 2000, OTHER, MAC2), CLIENT, "the first")

    def test_bounded(self) -> None:
        revealers = tables.Revealers(100)
        for i in range(1000):
            revealers.corroborated(addr(i), 2000, CLIENT, MAC1)
        self.assertLessEqual(len(revealers), 100)
        self.assertTrue(revealers.corroborated(addr(999), 2000, OTHER, MAC2), "newest kept")


class ClientScopedMatchTests(SynchronousTestCase):
    def test_a_clients_port_block_comes_before_an_any_port_block(self) -> None:
        table = BlockTable(100)
        table.add(PEER, 2000, CLIENT, "udp", 0.0)
        table.add(PEER, ANY_PORT, ANY_CLIENT, tables.MANUAL, 0.0)
        self.assertEqual(table.match(PEER, 2000, CLIENT, 0.0).origin, "udp")
        self.assertEqual(table.match(PEER, 2000, OTHER, 0.0).origin, tables.MANUAL)
        self.assertIsNone(BlockTable(10).match(PEER, 2000, CLIENT, 0.0))
