"""Store file round trip, atomic writes, ageing, and the client directory."""

import os
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from p2pwall.store import ClientDirectory, StoreFile, format_block, parse_block, write_atomically
from p2pwall.tables import ORIGINS, BlockTable
from p2pwall.testing import packed


class StoreFileTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = Path(self.mktemp())
        self.dir.mkdir()
        self.path = self.dir / "peers"

    def test_round_trip(self) -> None:
        table = BlockTable(100)
        table.add(packed("198.19.1.1"), 1214, b"", "udp", 1000.0)
        table.add(packed("2001:db8::7"), 0, packed("fd00::1"), "manual", 900.0)
        table.add(packed("198.19.2.1"), 0, b"", "dns", 990.0, name="www.winmx.com")
        StoreFile(self.path, 3600).save(table, 1000.0)
        again = BlockTable(100)
        self.assertEqual(StoreFile(self.path, 3600).load(again, 1001.0), 3)
        self.assertEqual(
            {(k, b.origin, b.seen, b.name) for k, b in again.items()},
            {(k, b.origin, b.seen, b.name) for k, b in table.items()},
        )

    def test_old_learned_entries_are_dropped_manual_kept(self) -> None:
        self.path.write_text(
            "# comment\n"
            "198.19.1.1 1214 * udp 100\n"
            "198.19.1.2 * * manual 100\n"
            "198.19.1.3 * * http 5000\n"
        )
        table = BlockTable(100)
        self.assertEqual(StoreFile(self.path, 1000).load(table, 5500.0), 2)
        self.assertEqual(
            {k[0] for k, _ in table.items()}, {packed("198.19.1.2"), packed("198.19.1.3")}
        )

    def test_bad_lines_are_skipped(self) -> None:
        self.path.write_text(
            "garbage\n198.19.1.1 99999 * udp 1\n300.1.1.1 * * udp 1\n198.19.1.9 * * what 1\n"
            "198.19.1.4 * * udp 1\n\x00\xff\n"
        )
        table = BlockTable(100)
        self.assertEqual(StoreFile(self.path, 1e9).load(table, 2.0), 1)

    def test_load_adds_in_last_seen_order_so_pruning_stays_exact(self) -> None:
        self.path.write_text(
            "198.19.1.1 * * udp 300\n198.19.1.2 * * manual 50\n198.19.1.3 * * udp 100\n"
            "198.19.1.4 * * http 200\n"
        )
        table = BlockTable(100)
        self.assertEqual(StoreFile(self.path, 1e9).load(table, 400.0), 4)
        self.assertEqual(
            [k[0][3] for k, _ in table.items()],
            [2, 3, 4, 1],  # last octets, by last-seen
        )
        self.assertEqual(table.prune(250.0), 2)
        self.assertEqual({k[0][3] for k, _ in table.items()}, {1, 2})

    def test_loaded_blocks_share_the_origin_strings(self) -> None:
        self.path.write_text("198.19.1.1 * * udp 1\n198.19.1.2 * * http 1\n")
        table = BlockTable(100)
        StoreFile(self.path, 1e9).load(table, 2.0)
        for _key, block in table.items():  # not a string per line: memory, at a million lines
            self.assertIs(block.origin, ORIGINS[ORIGINS.index(block.origin)])

    def test_write_writes_the_snapshot(self) -> None:
        table = BlockTable(100)
        table.add(packed("198.19.1.1"), 1214, b"", "udp", 1000.0)
        table.add(packed("198.19.1.2"), 0, b"", "udp", 10.0)  # too old to be written
        table.add(packed("fd00::9"), 0, packed("198.18.1.10"), "manual", 10.0)
        snapshot = table.snapshot()
        table.remove(packed("198.19.1.1"), 1214, b"")
        table.add(packed("198.19.1.3"), 0, b"", "udp", 1000.0)
        self.assertEqual(StoreFile(self.path, 100).write(snapshot, 1000.0), 2)
        self.assertEqual(
            self.path.read_text().splitlines()[1:],
            ["198.19.1.1 1214 * udp 1000", "fd00::9 * 198.18.1.10 manual 10"],
        )

    def test_missing_file_is_empty(self) -> None:
        self.assertEqual(StoreFile(self.path, 10).load(BlockTable(10), 0.0), 0)

    def test_line_format(self) -> None:
        entry = parse_block("2001:db8::1 80 198.18.1.10 manual 12 some name")
        self.assertEqual(format_block(entry), "2001:db8::1 80 198.18.1.10 manual 12 some name")
        for bad in ("1.2.3.4 * *", "1.2.3.4 -1 * udp 1", "1.2.3.4 * * udp x"):
            self.assertRaises(ValueError, parse_block, bad)

    def test_atomic_write_leaves_no_temp_file_and_replaces(self) -> None:
        self.path.write_text("old")
        write_atomically(self.path, "new")
        self.assertEqual(self.path.read_text(), "new")
        self.assertEqual(os.listdir(self.dir), ["peers"])

    def test_failed_write_keeps_the_old_file(self) -> None:
        self.path.write_text("old")
        self.assertRaises(TypeError, write_atomically, self.path, object())
        self.assertEqual(self.path.read_text(), "old")
        self.assertEqual(os.listdir(self.dir), ["peers"])


class ClientDirectoryTests(SynchronousTestCase):
    def test_files_follow_locks_and_stale_files_are_cleared(self) -> None:
        path = Path(self.mktemp())
        path.mkdir()
        (path / "198.18.1.99").touch()
        (path / "README").touch()
        directory = ClientDirectory(path)
        directory.start()
        self.assertEqual(os.listdir(path), ["README"])
        directory.client_locked(packed("198.18.1.10"))
        directory.client_locked(packed("fd00::10"))
        self.assertEqual(sorted(os.listdir(path)), ["198.18.1.10", "README", "fd00::10"])
        directory.client_released(packed("198.18.1.10"))
        directory.client_released(packed("198.18.1.10"))
        self.assertEqual(sorted(os.listdir(path)), ["README", "fd00::10"])
