"""sd_notify over a real unix datagram socket, as systemd listens for it."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from twisted.logger import LogLevel, capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from p2pwall import sdnotify


class ListenerMixin:
    """A datagram socket standing in for systemd's notification socket."""

    def listen(self, address: str | bytes) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.addCleanup(sock.close)
        sock.bind(address)
        sock.settimeout(5)
        return sock


class NotifyTests(ListenerMixin, SynchronousTestCase):
    def setUp(self) -> None:
        directory = Path(self.mktemp())
        directory.mkdir()
        self.path = str(directory / "notify")
        self.systemd = self.listen(self.path)

    def test_ready_with_status(self) -> None:
        sent = sdnotify.ready("reading NFQUEUE 0", environ={"NOTIFY_SOCKET": self.path})
        self.assertTrue(sent)
        self.assertEqual(self.systemd.recv(4096), b"READY=1\nSTATUS=reading NFQUEUE 0")

    def test_ready_without_status(self) -> None:
        self.assertTrue(sdnotify.ready(environ={"NOTIFY_SOCKET": self.path}))
        self.assertEqual(self.systemd.recv(4096), b"READY=1")

    def test_newline_in_a_value_cannot_add_an_assignment(self) -> None:
        sdnotify.notify({"NOTIFY_SOCKET": self.path}, STATUS="one\nREADY=1")
        self.assertEqual(self.systemd.recv(4096), b"STATUS=one READY=1")

    def test_reads_the_process_environment_by_default(self) -> None:
        self.patch(os, "environ", {"NOTIFY_SOCKET": self.path})
        self.assertTrue(sdnotify.ready("up"))
        self.assertEqual(self.systemd.recv(4096), b"READY=1\nSTATUS=up")

    def test_abstract_namespace(self) -> None:
        name = f"p2pwall-test-{os.getpid()}-{id(self)}"
        abstract = self.listen(b"\0" + name.encode())
        self.assertTrue(sdnotify.ready(environ={"NOTIFY_SOCKET": "@" + name}))
        self.assertEqual(abstract.recv(4096), b"READY=1")


class NoManagerTests(SynchronousTestCase):
    def test_without_notify_socket_nothing_is_sent(self) -> None:
        def no_socket(*args: object) -> None:
            raise AssertionError("a socket was opened without NOTIFY_SOCKET")

        self.patch(socket, "socket", no_socket)
        with capturedLogs() as events:
            self.assertFalse(sdnotify.ready("up", environ={}))
            self.assertFalse(sdnotify.ready("up", environ={"NOTIFY_SOCKET": ""}))
        self.assertEqual(events, [])

    def test_missing_socket_is_logged_not_raised(self) -> None:
        missing = str(Path(self.mktemp()) / "gone")
        with capturedLogs() as events:
            self.assertFalse(sdnotify.ready(environ={"NOTIFY_SOCKET": missing}))
        self.assertEqual([event["log_level"] for event in events], [LogLevel.error])
        self.assertIn(missing, events[0]["name"])


class FullQueueTests(ListenerMixin, SynchronousTestCase):
    def test_full_receive_queue_fails_at_once(self) -> None:
        """A manager that stopped reading must not stall the reactor: the send fails, logged."""
        directory = Path(self.mktemp())
        directory.mkdir()
        path = str(directory / "notify")
        self.listen(path)
        environ = {"NOTIFY_SOCKET": path}
        with capturedLogs() as events:
            results = [sdnotify.notify(environ, STATUS="x" * 1024) for _ in range(10_000)]
        self.assertIn(False, results)
        self.assertTrue(results[0])
        self.assertEqual({event["log_level"] for event in events}, {LogLevel.error})
