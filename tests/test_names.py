"""Banned DNS names survive a restart: saved on each change, loaded at start."""

import os
from pathlib import Path

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from p2pwall.detectors.dns import DnsDetector
from p2pwall.errors import StartError
from p2pwall.names import BannedNames
from p2pwall.options import Options
from p2pwall.service import makeService
from p2pwall.testing import FakeKernelQueue, RecordingSpoofer


class BannedNamesTests(SynchronousTestCase):
    def test_saved_on_change_and_loaded(self) -> None:
        path = Path(self.mktemp())
        names = BannedNames(path)
        names.add("cache1.example.net")
        names.add("a.example.net")
        names.discard("a.example.net")
        names.discard("never.example.net")
        again = BannedNames(path)
        self.assertEqual(again.load(), 1)
        self.assertEqual(list(again), ["cache1.example.net"])
        self.assertIn("cache1.example.net", again)

    def test_without_a_path_nothing_is_written(self) -> None:
        names = BannedNames()
        names.add("a.example.net")
        self.assertEqual((names.load(), len(names)), (0, 1))

    def test_tolerant_load(self) -> None:
        path = Path(self.mktemp())
        path.write_text("# comment\n\nWWW.Example.NET.\nnot a name\n\xff.example.net\n")
        names = BannedNames(path)
        self.assertEqual(names.load(), 2)
        self.assertIn("www.example.net", names)

    def test_a_file_that_cannot_be_read_is_a_start_error(self) -> None:
        """Tolerated, the first ban would replace the file and lose its names; a FIFO would
        block the start."""
        path = Path(self.mktemp())
        path.mkdir()
        error = self.assertRaises(StartError, BannedNames(path).load)
        self.assertEqual(str(error), f"banned names file {path}: not a regular file")
        path = Path(self.mktemp())
        os.mkfifo(path)
        error = self.assertRaises(StartError, BannedNames(path).load)
        self.assertEqual(str(error), f"banned names file {path}: not a regular file")

    def test_temp_files_of_a_killed_write_are_removed(self) -> None:
        folder = Path(self.mktemp())
        folder.mkdir()
        path = folder / "peers.names"
        path.write_text("a.example.net\n")
        (folder / ".peers.names.x_9abc01").write_text("b.example.net\n")
        (folder / "peers").write_text("")
        names = BannedNames(path)
        self.assertEqual(names.load(), 1)
        self.assertEqual(sorted(os.listdir(folder)), ["peers", "peers.names"])


class ServiceTests(SynchronousTestCase):
    def build(self, store: Path):
        options = Options()
        options.parseOptions(["-f", str(store), "--control", "tcp:0:interface=127.0.0.1"])
        service = makeService(options, MemoryReactorClock(), FakeKernelQueue, RecordingSpoofer())
        (dns,) = [d for d in service.engine.detectors if isinstance(d, DnsDetector)]
        return dns

    def test_a_ban_outlives_the_daemon(self) -> None:
        store = Path(self.mktemp())
        self.build(store).banned.add("opennap.example.net")
        self.assertTrue(Path(f"{store}.names").exists())
        self.assertIn("opennap.example.net", self.build(store).banned)
