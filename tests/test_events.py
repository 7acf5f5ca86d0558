"""Event classes reach the observers that asked for them: syslog (-l), stderr (-L), debug (-d),
the JSON events file (--json-events)."""

import errno
import io
import json
import os
import stat

from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from p2pwall.events import (
    DEBUG_CLASSES,
    EVENT_CLASSES,
    EventLog,
    JsonEventFile,
    event_record,
    parse_classes,
    stderr_observer,
)
from p2pwall.packet import decode
from p2pwall.testing import udp


def texts(events: list[dict]) -> list[str]:
    return [formatEvent(e) for e in events]


class RoutingTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.syslog: list[dict] = []
        self.stderr: list[dict] = []
        self.daemon: list[dict] = []

    def log(self, syslog: str = "", stderr: str = "", debug: str = "") -> EventLog:
        return EventLog(syslog, stderr, debug, self.syslog.append, self.stderr.append,
                        self.daemon.append)  # fmt: skip

    def test_each_class_goes_where_it_was_asked(self) -> None:
        log = self.log(syslog="pc", stderr="u")
        log.event("p", "peer {peer}", peer="198.19.1.1")
        log.event("c", "client {client}", client="198.18.1.10")
        log.event("t", "not asked for")
        log.packet("u", decode(udp("198.18.1.10", "198.19.1.1", 1, 2)), "fasttrack")
        self.assertEqual(texts(self.syslog), ["peer 198.19.1.1", "client 198.18.1.10"])
        self.assertEqual(
            texts(self.stderr), ["dropped UDP 198.18.1.10:1 -> 198.19.1.1:2 (fasttrack)"]
        )
        self.assertEqual(self.daemon, [])
        self.assertEqual([e["p2pwall_class"] for e in self.syslog], ["p", "c"])
        self.assertEqual([e["log_system"] for e in self.syslog], ["p2pwall p", "p2pwall c"])

    def test_debug_classes_go_to_the_daemon_log(self) -> None:
        log = self.log(debug="tp")
        log.debug("t", "lock")
        log.debug("h", "headers")
        log.event("p", "peer")
        self.assertEqual(texts(self.daemon), ["lock"])
        self.assertEqual(self.daemon[0]["log_system"], "p2pwall debug t")
        self.assertTrue(log.wants_debug("p") and not log.wants_debug("h"))

    def test_debug_l_copies_events_to_the_daemon_log(self) -> None:
        log = self.log(syslog="c", debug="l")
        log.event("c", "client")
        self.assertEqual((texts(self.syslog), texts(self.daemon)), (["client"], ["client"]))

    def test_m_adds_mac_addresses(self) -> None:
        packet = decode(udp("198.18.1.10", "198.19.1.1", 1, 2))
        packet.mac = b"\x02\x00\x00\xaa\xbb\xcc"
        self.log(stderr="u").packet("u", packet, "x")
        self.log(stderr="um").packet("u", packet, "x")
        self.assertEqual(
            texts(self.stderr),
            ["dropped UDP 198.18.1.10:1 -> 198.19.1.1:2 (x)",
             "dropped UDP 198.18.1.10:1 -> 198.19.1.1:2 (x) mac=02:00:00:aa:bb:cc"],
        )  # fmt: skip
        self.assertFalse(self.log(syslog="m").wants("m"))

    def test_a_dry_run_drop_says_would_drop(self) -> None:
        packet = decode(udp("198.18.1.10", "198.19.1.1", 1, 2))
        self.log(stderr="u").packet("u", packet, "fasttrack", verdict="would drop")
        self.assertEqual(
            texts(self.stderr), ["would drop UDP 198.18.1.10:1 -> 198.19.1.1:2 (fasttrack)"]
        )

    def test_stderr_lines_start_with_the_time_in_utc(self) -> None:
        stream = io.StringIO()
        event = {"log_format": "client", "log_time": 1_700_000_000.5, "log_system": "p2pwall c"}
        stderr_observer(stream)(event)
        self.assertEqual(stream.getvalue(), "2023-11-14T22:13:20Z [p2pwall c] client\n")


class ParseTests(SynchronousTestCase):
    def test_parse(self) -> None:
        self.assertEqual(parse_classes("uUtT", EVENT_CLASSES, "event"), frozenset("uUtT"))
        self.assertEqual(parse_classes("A", DEBUG_CLASSES, "debug"), frozenset("tpl"))
        self.assertEqual(parse_classes("A", {**DEBUG_CLASSES, "b": "more"}, "debug"), set("tplb"))
        self.assertEqual(parse_classes("-", DEBUG_CLASSES, "debug"), frozenset())
        with self.assertRaises(ValueError) as caught:
            parse_classes("pq", EVENT_CLASSES, "event")
        self.assertIn("'q'", str(caught.exception))


class JsonEventTests(SynchronousTestCase):
    """``--json-events``: one JSON object a line, each field a key, for a SIEM."""

    def setUp(self) -> None:
        self.path = self.mktemp()
        self.file = JsonEventFile(self.path)
        self.addCleanup(lambda: self.file._file.close())

    def lines(self) -> list[dict]:
        with open(self.path, encoding="utf-8") as handle:
            return [json.loads(line) for line in handle]

    def test_packet_events_carry_their_fields(self) -> None:
        log = EventLog(json="u", json_target=self.file)
        packet = decode(udp("198.18.1.10", "198.19.1.1", 1214, 2000))
        packet.mac = b"\x02\x00\x00\xaa\xbb\xcc"
        log.packet("u", packet, "blocked peer (udp)")
        (line,) = self.lines()
        self.assertRegex(line.pop("time"), r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
        self.assertIsInstance(line.pop("epoch"), float)
        self.assertEqual(
            line,
            {
                "class": "u",
                "debug": False,
                "message": "dropped UDP 198.18.1.10:1214 -> 198.19.1.1:2000 (blocked peer (udp))",
                "verdict": "dropped",
                "protocol": "UDP",
                "src": "198.18.1.10:1214",
                "dst": "198.19.1.1:2000",
                "reason": "blocked peer (udp)",
                "src_addr": "198.18.1.10",
                "src_port": 1214,
                "dst_addr": "198.19.1.1",
                "dst_port": 2000,
                "mac": "02:00:00:aa:bb:cc",
            },
        )

    def test_the_time_is_the_events_in_utc(self) -> None:
        record = event_record(
            {"log_time": 1_700_000_000.5, "log_format": "client {client}", "client": "198.18.1.10",
             "p2pwall_class": "c", "p2pwall_debug": False, "log_system": "p2pwall c"}
        )  # fmt: skip
        self.assertEqual(
            record,
            {"time": "2023-11-14T22:13:20Z", "epoch": 1_700_000_000.5, "class": "c",
             "debug": False, "message": "client 198.18.1.10", "client": "198.18.1.10"},
        )  # fmt: skip

    def test_pieces_of_the_text_line_are_left_out(self) -> None:
        record = event_record(
            {"log_time": 1.0, "log_format": "client {client}{_mac}", "client": "198.18.1.10",
             "_mac": " mac=02:00:00:00:00:0a", "mac": "02:00:00:00:00:0a",
             "p2pwall_class": "c", "p2pwall_debug": False}
        )  # fmt: skip
        self.assertEqual(record["message"], "client 198.18.1.10 mac=02:00:00:00:00:0a")
        self.assertNotIn("_mac", record)
        self.assertEqual(record["mac"], "02:00:00:00:00:0a")

    def test_its_classes_and_the_debug_classes_asked_for(self) -> None:
        stderr: list[dict] = []
        log = EventLog(stderr="t", debug="p", stderr_target=stderr.append,
                       daemon_log=lambda e: None, json="cp", json_target=self.file)  # fmt: skip
        log.event("c", "client {client} identified: {reason}", client="198.18.1.10", reason="x")
        log.event("p", "peer {peer}", peer="198.19.1.1:2000")
        log.event("x", "control")
        log.event("t", "tcp")
        log.debug("p", "probe sent to {client}", client="198.18.1.10:1214")
        log.debug("t", "not asked for")
        self.assertEqual(
            [(e["class"], e["debug"], e["message"]) for e in self.lines()],
            [("c", False, "client 198.18.1.10 identified: x"), ("p", False, "peer 198.19.1.1:2000"),
             ("p", True, "probe sent to 198.18.1.10:1214")],
        )  # fmt: skip
        self.assertEqual(self.lines()[0]["client"], "198.18.1.10")
        self.assertEqual(texts(stderr), ["tcp"], "the text events stay as they were")

    def test_reopen_starts_a_new_file_after_rotation(self) -> None:
        log = EventLog(json="c", json_target=self.file)
        log.event("c", "first")
        os.rename(self.path, self.path + ".1")
        log.event("c", "second")
        with capturedLogs() as logged:
            self.file.reopen()
        log.event("c", "third")
        with open(self.path + ".1", encoding="utf-8") as rotated:
            self.assertEqual([json.loads(line)["message"] for line in rotated], ["first", "second"])
        self.assertEqual([line["message"] for line in self.lines()], ["third"])
        self.assertEqual([formatEvent(e) for e in logged], [f"--json-events: reopened {self.path}"])

    def test_a_failed_reopen_keeps_the_old_file(self) -> None:
        log = EventLog(json="c", json_target=self.file)
        os.rename(self.path, self.path + ".1")
        os.mkdir(self.path)
        with capturedLogs() as logged:
            self.file.reopen()
        log.event("c", "still here")
        with open(self.path + ".1", encoding="utf-8") as rotated:
            self.assertEqual([json.loads(line)["message"] for line in rotated], ["still here"])
        (error,) = [formatEvent(e) for e in logged]
        self.assertIn("cannot reopen, still writing the old file", error)

    def test_only_a_regular_file_and_without_blocking(self) -> None:
        fifo = self.mktemp()
        os.mkfifo(fifo)
        with self.assertRaises(OSError) as caught:
            JsonEventFile(fifo)
        self.assertIn(caught.exception.errno, (errno.ENXIO, errno.EINVAL))
        self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode) & 0o037, 0)
