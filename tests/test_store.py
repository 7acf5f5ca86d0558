"""Store file round trip, atomic writes, ageing, and the client directory."""

import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from twisted.internet.task import Clock
from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from p2pwall.errors import StartError
from p2pwall.networks import GreenNetworks
from p2pwall.store import (
    CLIENT_FILE_RETRY,
    MAX_LINE,
    REPORTED_LINES,
    ClientDirectory,
    StoreFile,
    format_block,
    parse_block,
    write_atomically,
)
from p2pwall.tables import BlockTable
from p2pwall.testing import ORIGINS, packed

ROOT = Path(__file__).resolve().parents[1]

LOAD = (
    "from p2pwall.store import StoreFile\n"
    "from p2pwall.tables import BlockTable\n"
    "from p2pwall.testing import ORIGINS\n"
    "StoreFile(sys.argv[1], 1e9, ORIGINS).load(BlockTable(10), 1.0)\n"
)


def logged(events: list[dict]) -> list[str]:
    return [formatEvent(event) for event in events]


def without_dac(test: SynchronousTestCase, code: str, *args: Path) -> str:
    """Run ``code`` in a child without the capabilities that let root read and write any
    file (as root, permissions are never denied); return the ``StartError`` line it raises.
    ``args`` (``sys.argv[1:]``) are absolute paths: the child runs elsewhere."""
    if os.getuid() != 0 or not shutil.which("setpriv"):
        test.skipTest("needs root and setpriv (util-linux) to drop CAP_DAC_OVERRIDE")
    script = (
        f"import sys\nsys.path.insert(0, {str(ROOT)!r})\n"
        "from p2pwall.errors import StartError\n"
        f"try:\n{textwrap.indent(code, '    ')}except StartError as error:\n    print(error)\n"
    )
    result = subprocess.run(
        ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", sys.executable, "-c"]
        + [script, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    test.assertEqual(result.stderr, "")
    return result.stdout


class StoreFileTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = Path(self.mktemp())
        self.dir.mkdir()
        self.path = self.dir / "peers"

    def test_round_trip(self) -> None:
        table = BlockTable(100)
        table.add(packed("198.19.1.1"), 1214, b"", "fasttrack-udp", 1000.0)
        table.add(packed("2001:db8::7"), 0, packed("fd00::1"), "manual", 900.0)
        table.add(packed("198.19.2.1"), 0, b"", "dns", 990.0, name="www.winmx.com")
        StoreFile(self.path, 3600, ORIGINS).save(table, 1000.0)
        again = BlockTable(100)
        self.assertEqual(StoreFile(self.path, 3600, ORIGINS).load(again, 1001.0), 3)
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
        self.assertEqual(StoreFile(self.path, 1000, ORIGINS).load(table, 5500.0), 2)
        self.assertEqual(
            {k[0] for k, _ in table.items()}, {packed("198.19.1.2"), packed("198.19.1.3")}
        )

    def test_bad_lines_are_skipped(self) -> None:
        self.path.write_text(
            "garbage\n198.19.1.1 99999 * udp 1\n300.1.1.1 * * udp 1\n198.19.1.9 * * what 1\n"
            "198.19.1.4 * * udp 1\n\x00\xff\n"
        )
        table = BlockTable(100)
        self.assertEqual(StoreFile(self.path, 1e9, ORIGINS).load(table, 2.0), 1)

    def test_load_adds_in_last_seen_order_so_pruning_stays_exact(self) -> None:
        self.path.write_text(
            "198.19.1.1 * * udp 300\n198.19.1.2 * * manual 50\n198.19.1.3 * * udp 100\n"
            "198.19.1.4 * * http 200\n"
        )
        table = BlockTable(100)
        self.assertEqual(StoreFile(self.path, 1e9, ORIGINS).load(table, 400.0), 4)
        self.assertEqual(
            [k[0][3] for k, _ in table.items()],
            [2, 3, 4, 1],  # last octets, by last-seen
        )
        self.assertEqual(table.prune(250.0), 2)
        self.assertEqual({k[0][3] for k, _ in table.items()}, {1, 2})

    def test_loaded_blocks_share_the_origin_strings(self) -> None:
        self.path.write_text("198.19.1.1 * * udp 1\n198.19.1.2 * * http 1\n")
        table = BlockTable(100)
        StoreFile(self.path, 1e9, ORIGINS).load(table, 2.0)
        for _key, block in table.items():  # not a string per line: memory, at a million lines
            known = ORIGINS.resolve(block.origin)
            assert known is not None
            self.assertIs(block.origin, known.name)

    def test_origins_of_older_versions_load_under_their_new_names(self) -> None:
        self.path.write_text("198.19.1.1 1214 * udp 1\n198.19.1.2 80 * http 1\n")
        table = BlockTable(100)
        StoreFile(self.path, 1e9, ORIGINS).load(table, 2.0)
        origins = {key[0]: block.origin for key, block in table.items()}
        self.assertEqual(
            origins,
            {packed("198.19.1.1"): "fasttrack-udp", packed("198.19.1.2"): "fasttrack-http"},
        )

    def test_write_writes_the_snapshot(self) -> None:
        table = BlockTable(100)
        table.add(packed("198.19.1.1"), 1214, b"", "fasttrack-udp", 1000.0)
        table.add(packed("198.19.1.2"), 0, b"", "fasttrack-udp", 10.0)  # too old to be written
        table.add(packed("fd00::9"), 0, packed("fd00::10"), "manual", 10.0)
        snapshot = table.snapshot()
        table.remove(packed("198.19.1.1"), 1214, b"")
        table.add(packed("198.19.1.3"), 0, b"", "fasttrack-udp", 1000.0)
        self.assertEqual(StoreFile(self.path, 100, ORIGINS).write(snapshot, 1000.0), 2)
        self.assertEqual(
            self.path.read_text().splitlines()[1:],
            ["198.19.1.1 1214 * fasttrack-udp 1000", "fd00::9 * fd00::10 manual 10"],
        )

    def test_missing_file_is_empty(self) -> None:
        self.assertEqual(StoreFile(self.path, 10, ORIGINS).load(BlockTable(10), 0.0), 0)

    def test_line_format(self) -> None:
        entry = parse_block("2001:db8::1 80 fd00::10 manual 12 some name", ORIGINS)
        self.assertEqual(format_block(entry), "2001:db8::1 80 fd00::10 manual 12 some name")
        for bad in (
            "1.2.3.4 * *",
            "1.2.3.4 -1 * udp 1",
            "1.2.3.4 * * udp x",
            "1.2.3.4 * * udp nan",
            "1.2.3.4 * * udp -inf",
            "1.2.3.4 * fd00::1 manual 1",
            "2001:db8::1 * 198.18.1.10 manual 1",
        ):
            self.assertRaises(ValueError, parse_block, bad, ORIGINS)

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


class StoreFileGuardTests(SynchronousTestCase):
    """A file that cannot be used stops the start with one line; a bad line costs one line."""

    def setUp(self) -> None:
        self.dir = Path(self.mktemp()).resolve()
        self.dir.mkdir()
        self.path = self.dir / "peers"

    def load(self, path: Path, table: BlockTable | None = None, **context) -> int:
        return StoreFile(path, 1e9, ORIGINS).load(
            BlockTable(100) if table is None else table, 10_000.0, **context
        )

    def test_a_directory_is_a_start_error(self) -> None:
        self.path.mkdir()
        error = self.assertRaises(StartError, self.load, self.path)
        self.assertEqual(str(error), f"store file {self.path}: not a regular file")

    def test_a_fifo_is_a_start_error_not_a_hang(self) -> None:
        os.mkfifo(self.path)
        error = self.assertRaises(StartError, self.load, self.path)
        self.assertEqual(str(error), f"store file {self.path}: not a regular file")

    def test_a_missing_directory_is_a_start_error(self) -> None:
        path = self.dir / "missing" / "peers"
        error = self.assertRaises(StartError, self.load, path)
        self.assertEqual(str(error), f"store file {path}: directory {path.parent} does not exist")
        self.assertRaises(StartError, StoreFile(self.path / "x", 1, ORIGINS).check)  # under a file

    def test_a_missing_file_in_a_usable_directory_is_empty(self) -> None:
        StoreFile(self.path, 1, ORIGINS).check()
        self.assertEqual(self.load(self.path), 0)

    def test_an_unreadable_file_is_a_start_error(self) -> None:
        self.path.write_text("198.19.1.1 * * udp 1\n")
        self.path.chmod(0)
        self.assertEqual(
            without_dac(self, LOAD, self.path), f"store file {self.path}: Permission denied\n"
        )

    def test_a_directory_without_write_access_is_a_start_error(self) -> None:
        self.dir.chmod(0o500)
        self.assertEqual(
            without_dac(self, LOAD, self.path),
            f"store file {self.path}: cannot create files in {self.dir}\n",
        )

    def test_temp_files_of_a_killed_write_are_removed(self) -> None:
        stale = [self.dir / ".peers.k3_9xq0a", self.dir / ".peers.abcdefgh"]
        kept = [self.dir / ".peers.names.k3_9xq0a", self.dir / ".peers.bak", self.dir / "other"]
        for path in stale + kept:
            path.write_text("198.19.1.1 * * udp 1\n")
        self.path.write_text("198.19.1.2 * * udp 1\n")
        self.assertEqual(self.load(self.path), 1)
        self.assertEqual(sorted(os.listdir(self.dir)), sorted(p.name for p in [*kept, self.path]))

    def test_bad_values_are_rejected_per_line(self) -> None:
        self.path.write_text(
            "198.19.1.1 * * udp nan\n"
            "198.19.1.2 * * udp inf\n"
            "198.19.1.3 * * udp 10400\n"  # 400 s ahead of the clock
            "192.168.1.5 * * udp 100\n"  # a green peer
            "198.19.1.4 * * http 100\n"  # the gateway's own address
            "198.19.1.5 * fd00::1 udp 100\n"
            "fd00::7 * * dns 100\n"
            "198.19.1.6 * * udp 10200\n"  # within the clock skew
            "192.168.1.6 * 192.168.1.10 manual 100\n"  # an admin's block stays
            "198.19.1.7 1214 * udp 100\n"
        )
        table = BlockTable(100)
        with capturedLogs() as events:
            count = self.load(
                self.path,
                table,
                green=GreenNetworks(["192.168.0.0/16", "fd00::/8"]),
                local={packed("198.19.1.4")},
            )
        self.assertEqual(count, 3)
        self.assertEqual(
            sorted(k[0] for k, _ in table.items()),
            sorted(packed(a) for a in ("198.19.1.6", "192.168.1.6", "198.19.1.7")),
        )
        self.assertEqual(
            logged(events),
            [
                f"{self.path}:1: last-seen must be a finite number, got nan",
                f"{self.path}:2: last-seen must be a finite number, got inf",
                f"{self.path}:3: last-seen 10400 is in the future (now 10000)",
                f"{self.path}:4: peer 192.168.1.5 is in the green networks",
                f"{self.path}:5: peer 198.19.1.4 is one of the gateway's addresses",
                f"{self.path}:6: peer and client must both be IPv4 or both IPv6",
                f"{self.path}:7: peer fd00::7 is in the green networks",
            ],
        )

    def test_reading_stops_at_the_table_cap(self) -> None:
        self.path.write_text("".join(f"198.19.1.{i} * * udp {i}\n" for i in range(1, 31)))
        table = BlockTable(10)
        with capturedLogs() as events:
            self.assertEqual(self.load(self.path, table), 10)
        self.assertEqual(table.evicted, 0)
        self.assertEqual(
            logged(events),
            [
                f"{self.path}:11: stopped reading, --max-peers (10) blocks read;"
                " the rest of the file is dropped"
            ],
        )

    def test_a_long_line_is_rejected_and_the_next_lines_load(self) -> None:
        with self.path.open("w") as handle:
            handle.write("198.19.1.1 * * udp 1 " + "x" * (MAX_LINE - 22) + "\n")  # just fits
            handle.write("198.19.1.2 * * udp 1 " + "x" * (8 * 1024 * 1024) + "\n")
            handle.write("198.19.1.3 * * udp 1\n")
            handle.write("198.19.1.4 * * udp 1 " + "x" * MAX_LINE)  # no newline at the end
        table = BlockTable(100)
        with capturedLogs() as events:
            self.assertEqual(self.load(self.path, table), 2)
        self.assertEqual(
            sorted(k[0] for k, _ in table.items()), [packed("198.19.1.1"), packed("198.19.1.3")]
        )
        self.assertEqual(
            logged(events),
            [
                f"{self.path}:2: line longer than {MAX_LINE} bytes",
                f"{self.path}:4: line longer than {MAX_LINE} bytes",
            ],
        )

    def test_a_flood_of_bad_lines_is_logged_in_short(self) -> None:
        self.path.write_text("junk\n" * (REPORTED_LINES + 500) + "198.19.1.1 * * udp 1\n")
        with capturedLogs() as events:
            self.assertEqual(self.load(self.path), 1)
        lines = logged(events)
        self.assertEqual(len(lines), REPORTED_LINES + 1)
        self.assertEqual(lines[-1], f"{self.path}: 500 more bad lines skipped")


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


class ClientDirectoryGuardTests(SynchronousTestCase):
    """A path that cannot hold client files stops the start; a failed create is not lost."""

    def setUp(self) -> None:
        self.dir = Path(self.mktemp()).resolve()
        self.dir.mkdir()
        self.path = self.dir / "clients"
        self.clock = Clock()

    def test_a_file_is_a_start_error(self) -> None:
        self.path.touch()
        error = self.assertRaises(StartError, ClientDirectory(self.path).start)
        self.assertEqual(str(error), f"client directory {self.path}: not a directory")
        error = self.assertRaises(StartError, ClientDirectory(self.path / "sub").start)
        self.assertEqual(str(error), f"client directory {self.path / 'sub'}: Not a directory")

    def test_a_directory_without_write_access_is_a_start_error(self) -> None:
        self.path.mkdir(mode=0o500)
        self.assertEqual(
            without_dac(
                self,
                "from p2pwall.store import ClientDirectory\nClientDirectory(sys.argv[1]).start()\n",
                self.path,
            ),
            f"client directory {self.path}: cannot create files in it\n",
        )

    def test_a_subdirectory_named_like_an_address_is_reported_and_skipped(self) -> None:
        self.path.mkdir()
        (self.path / "198.18.1.10").mkdir()
        (self.path / "198.18.1.11").touch()
        with capturedLogs() as events:
            ClientDirectory(self.path).start()
        self.assertEqual(os.listdir(self.path), ["198.18.1.10"])
        self.assertEqual(
            logged(events),
            [f"client directory: {self.path / '198.18.1.10'} is a directory, left alone"],
        )

    def test_a_failed_create_is_tried_again_until_it_works(self) -> None:
        directory = ClientDirectory(self.path, self.clock)
        directory.start()
        blocker = self.path / "198.18.1.10"
        blocker.mkdir()
        with capturedLogs() as events:
            directory.client_locked(packed("198.18.1.10"))
            self.clock.advance(CLIENT_FILE_RETRY)
            self.clock.advance(CLIENT_FILE_RETRY)
        self.assertEqual(len(logged(events)), 1)  # one warning, not one a try
        self.assertIn("trying again", logged(events)[0])
        blocker.rmdir()
        self.clock.advance(CLIENT_FILE_RETRY)
        self.assertTrue((self.path / "198.18.1.10").is_file())
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_a_release_replaces_the_pending_create(self) -> None:
        directory = ClientDirectory(self.path, self.clock)
        directory.start()
        blocker = self.path / "198.18.1.10"
        blocker.mkdir()
        directory.client_locked(packed("198.18.1.10"))
        directory.client_released(packed("198.18.1.10"))
        blocker.rmdir()
        self.clock.advance(CLIENT_FILE_RETRY)
        self.assertEqual(os.listdir(self.path), [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_clear_at_stop_ends_the_retries(self) -> None:
        directory = ClientDirectory(self.path, self.clock)
        directory.start()
        (self.path / "fd00::10").mkdir()
        directory.client_locked(packed("fd00::10"))
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        directory.clear()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_a_fifo_named_like_a_client_fails_instead_of_blocking(self) -> None:
        directory = ClientDirectory(self.path, self.clock)
        directory.start()
        os.mkfifo(self.path / "198.18.1.10")

        def blocked(signum: int, frame: object) -> None:
            raise TimeoutError("opening the client file blocked")

        previous = signal.signal(signal.SIGALRM, blocked)
        self.addCleanup(signal.signal, signal.SIGALRM, previous)
        signal.alarm(5)
        try:
            with capturedLogs() as events:
                directory.client_locked(packed("198.18.1.10"))
        finally:
            signal.alarm(0)
        self.assertIn("No such device or address; trying again", logged(events)[0])
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
