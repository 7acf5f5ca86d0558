"""Block and lock tables: matching, bounds under floods, O(due) expiry and probe timing."""

from twisted.trial.unittest import SynchronousTestCase

from p2pwall.tables import ANY_CLIENT, ANY_PORT, BlockTable, LockTable
from p2pwall.testing import packed

PEER = packed("198.19.1.1")
CLIENT = packed("198.18.1.10")
OTHER = packed("198.18.1.20")


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
        table.note_hello(client, b"hello", 1214, 2000)
        self.assertEqual(list(table.due(4.9)), [])
        (probe,) = table.due(5.0)
        self.assertEqual(probe.action, "probe")
        self.assertEqual(client.probes_sent, 1)
        self.assertEqual(list(table.due(9.9)), [])
        (expire,) = table.due(10.0)
        self.assertEqual(expire.action, "expire")

    def test_answered_probe_keeps_a_client_locked_forever(self) -> None:
        table = LockTable(10, 100)
        client, _ = table.lock(CLIENT, 0.0)
        assert client is not None
        table.note_hello(client, b"hello", 1214, 2000)
        now = 0.0
        for _ in range(20):
            now += 1.0
            for due in table.due(now):
                self.assertEqual(due.action, "probe")
                table.lock(CLIENT, now + 0.1)
        self.assertTrue(table.is_locked(CLIENT, now))
        self.assertGreaterEqual(client.probes_sent, 3)

    def test_hello_after_lock_schedules_the_probe_early(self) -> None:
        table = LockTable(10, 100)
        client, _ = table.lock(CLIENT, 0.0)
        assert client is not None
        table.note_hello(client, b"hello", 1214, 2000)
        self.assertEqual([d.action for d in table.due(5.0)], ["probe"])

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
