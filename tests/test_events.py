"""Event classes reach the observers that asked for them: syslog (-l), stderr (-L), debug (-d)."""

import io

from twisted.logger import formatEvent
from twisted.trial.unittest import SynchronousTestCase

from p2pwall.events import DEBUG_CLASSES, EVENT_CLASSES, EventLog, parse_classes, stderr_observer
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
        self.assertTrue(self.log(syslog="m").wants_mac)
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
        self.assertEqual(parse_classes("A", DEBUG_CLASSES, "debug"), frozenset("daDthpl"))
        self.assertEqual(parse_classes("-", DEBUG_CLASSES, "debug"), frozenset())
        with self.assertRaises(ValueError) as caught:
            parse_classes("pq", EVENT_CLASSES, "event")
        self.assertIn("'q'", str(caught.exception))
