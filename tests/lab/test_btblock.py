"""The blocking runs' pure parts: reading the daemon's answers and events, and the verdict."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from lab import btblock
from lab.btblock import Explained, RunResult, judge, parse_explain

EXPLAIN = """\
address 198.18.1.10 green allowed=no
lock locked until=2026-12-01T02:05:00Z left=97 since=2026-12-01T02:01:00Z
identified at=2026-12-01T02:01:00Z protocol=BitTorrent reason="DHT query" packet="UDP x"
probes sent=3 answered=2 last=2026-12-01T02:02:00Z
OK 198.18.1.10: locked until 2026-12-01T02:05:00Z, 0 blocks
"""


def event(cls: str, message: str, epoch: float, **fields: object) -> str:
    return json.dumps({"class": cls, "message": message, "epoch": epoch, **fields})


EVENTS = "\n".join(
    [
        event("x", "control 127.0.0.1:1: explain", 1.0, peer="127.0.0.1:1"),
        event("c", "client 198.18.1.10 identified: DHT query", 10.5, client="198.18.1.10"),
        event("c", "client 198.18.1.10 identified: again", 12.0, client="198.18.1.10"),
        event("t", "dropped TCP", 11.0, src_addr="198.18.1.10"),
        event("u", "dropped UDP", 11.0, src_addr="198.18.1.30"),
        '{"class": "c", "message": "cut sho',
        "[1, 2]",
    ]
)


def blocked(**changes: object) -> RunResult:
    """A blocked row that meets every number of the issue; ``changes`` spoil it."""
    row = RunResult(
        "aria2", "http", "blocked", False, 0, 0, 120.0, "exit 7", 0,
        time_lock=30, user_rounds=200, user_failures={"web": 0, "dns": 0, "udp": 0},
        user_identified=False, user_drops=0, first_cleartext=100.0, identified_at=100.4,
        probes_sent=7, probes_answered=7, locked_at_end=True, lock_lapsed=False, web_back=31.0,
        wire_in=0,
    )  # fmt: skip
    return dataclasses.replace(row, **changes)


class ExplainTests(SynchronousTestCase):
    def test_locked_with_probes(self) -> None:
        self.assertEqual(parse_explain(EXPLAIN), Explained(True, 3, 2))

    def test_not_locked(self) -> None:
        reply = "address 198.18.1.30 green allowed=no\nOK 198.18.1.30: not locked\n"
        self.assertEqual(parse_explain(reply), Explained())
        expired = EXPLAIN.replace("lock locked", "lock expired")
        self.assertEqual(parse_explain(expired), Explained(False, 3, 2))


class EventTests(SynchronousTestCase):
    def test_bad_lines_are_skipped(self) -> None:
        self.assertEqual(len(btblock.read_events(EVENTS)), 5)

    def test_first_identification(self) -> None:
        events = btblock.read_events(EVENTS)
        self.assertEqual(btblock.identified_at(events, "198.18.1.10"), 10.5)
        self.assertIsNone(btblock.identified_at(events, "198.18.1.30"))

    def test_touched(self) -> None:
        events = btblock.read_events(EVENTS)
        self.assertEqual(btblock.touched(events, "198.18.1.10"), (True, 1))
        self.assertEqual(btblock.touched(events, "198.18.1.30"), (False, 1))
        self.assertEqual(btblock.touched(events, "198.18.1.99"), (False, 0))

    def test_a_lock_that_lapsed_while_the_client_ran(self) -> None:
        identified = event("c", "client 198.18.1.10 identified: x", 1.0, client="198.18.1.10")
        cleared = event("c", "client 198.18.1.10 cleared: time lock expired", 40.0,
                        client="198.18.1.10")  # fmt: skip
        again = event("c", "client 198.18.1.10 identified: y", 50.0, client="198.18.1.10")
        other = event("c", "client 198.18.1.11 identified: z", 60.0, client="198.18.1.11")
        read = btblock.read_events
        self.assertFalse(
            btblock.lapsed(read("\n".join([identified, cleared, other])), "198.18.1.10")
        )
        self.assertTrue(
            btblock.lapsed(read("\n".join([identified, cleared, again])), "198.18.1.10")
        )
        self.assertFalse(btblock.lapsed([], "198.18.1.10"))

    def test_user_failures(self) -> None:
        report = {"rounds": 3, "web": {"ok": 2, "failed": 1}, "dns": {"ok": 3, "failed": 0}}
        self.assertEqual(btblock.user_failures(report), {"web": 1, "dns": 0})


class CommandLineTests(SynchronousTestCase):
    def test_user_load_targets_the_public_services(self) -> None:
        argv = btblock.user_load_argv(125, Path("/w/u.json"))
        self.assertEqual(argv[2], "load")
        for flag, value in (
            ("--web", "http://198.19.0.80:80/"),
            ("--dns", "198.19.0.80"),
            ("--echo", "198.19.0.80:7"),
            ("--seconds", "125"),
            ("--report", "/w/u.json"),
        ):
            self.assertEqual(argv[argv.index(flag) + 1], value)

    def test_tcpdump_on_green_stays_root(self) -> None:
        argv = btblock.tcpdump_argv(Path("/w/c.pcap"))
        self.assertEqual(argv[argv.index("-i") + 1], "green0")
        self.assertEqual(argv[argv.index("-Z") + 1], "root")
        self.assertEqual(argv[argv.index("-w") + 1], "/w/c.pcap")
        self.assertIn("-U", argv)


class JudgeTests(SynchronousTestCase):
    def test_a_row_meeting_every_number_passes(self) -> None:
        self.assertEqual(judge(blocked()), [])
        self.assertEqual(blocked().identified_after, 0.4)

    def test_each_number_fails_on_its_own(self) -> None:
        for changes, why in (
            ({"pieces": 1}, "1 pieces completed"),
            ({"complete": True}, "0 pieces completed"),
            ({"received": btblock.MAX_RECEIVED + 1}, f"received {btblock.MAX_RECEIVED + 1} bytes"),
            ({"identified_at": None}, "never identified"),
            ({"identified_at": 102.5}, "identified 2.5 s after its first cleartext packet"),
            ({"first_cleartext": None}, "identified None s after its first cleartext packet"),
            ({"user_failures": {"web": 2, "udp": 1}}, "user had 3 failures"),
            ({"user_identified": True}, "the user was identified"),
            ({"locked_at_end": False}, "not kept locked by probes (answered 7)"),
            ({"probes_answered": 0}, "not kept locked by probes (answered 0)"),
            ({"lock_lapsed": True}, "the lock lapsed while the client ran"),
            ({"web_back": None}, "web back after None s"),
            ({"web_back": 48.5}, "web back after 48.5 s"),
        ):
            self.assertEqual(judge(blocked(**changes)), [why], changes)

    def test_limits_are_inclusive(self) -> None:
        row = blocked(received=btblock.MAX_RECEIVED, identified_at=102.0, web_back=48.0)
        self.assertEqual(judge(row), [])

    def test_resume_counts_the_wire_after_the_daemon_started(self) -> None:
        row = blocked(kind="resume", received=5_000_000, pieces=19, wire_in=1000)
        self.assertEqual(judge(row), [])
        self.assertEqual(judge(dataclasses.replace(row, wire_in=10**6)), ["received 1000000 bytes"])
        complete = dataclasses.replace(row, complete=True)
        self.assertEqual(judge(complete), ["19 pieces completed"])

    def test_control_needs_completion_and_a_quiet_user(self) -> None:
        control = RunResult("aria2", "http", "control", True, 20, 80, 3.0, "exit 0", 0)
        self.assertEqual(judge(control), [])
        self.assertEqual(judge(dataclasses.replace(control, complete=False)), ["did not complete"])
        failed = dataclasses.replace(control, user_failures={"dns": 1})
        self.assertEqual(judge(failed), ["user had 1 failures"])
