"""The BitTorrent report's table: cells, verdicts and the rendered Markdown, from fixed runs."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from bench import btreport
from lab.btblock import Enforcement, RunResult

CONTROL = RunResult("aria2", "http", "control", True, 20971520, 80, 3.06, "exit 0", 0,
                    user_rounds=6, user_failures={"web": 0, "dns": 0, "udp": 0})  # fmt: skip
BLOCKED = RunResult(
    "aria2", "http", "blocked", False, 0, 0, 120.4, "exit 7", 0, time_lock=30, user_rounds=240,
    user_failures={"web": 0, "dns": 0, "udp": 0}, user_identified=False, user_drops=0,
    first_cleartext=1000.0, identified_at=1000.125, probes_sent=7, probes_answered=7,
    locked_at_end=True, web_back=31.5, wire_in=0,
)  # fmt: skip
# What the harness measured here without a BitTorrent detector: nothing stops the client.
UNBLOCKED = dataclasses.replace(
    BLOCKED, complete=True, received=20971520, pieces=80, seconds=3.39, identified_at=None,
    probes_sent=0, probes_answered=0, locked_at_end=False, web_back=0.01, user_rounds=10,
    wire_in=21809909,
)  # fmt: skip


class CellTests(SynchronousTestCase):
    def test_sizes(self) -> None:
        self.assertEqual(
            [btreport.size(n) for n in (None, 0, 20, 1000, 262144, 20971520)],
            ["?", "0", "20 B", "1000 B", "256 KiB", "20.0 MiB"],
        )

    def test_a_passing_row(self) -> None:
        self.assertEqual(
            btreport.cells(CONTROL, BLOCKED),
            ["aria2", "http", "complete, 3.1 s", "0 (wire 0)", "0", "0.12 s", "0 / 240 rounds",
             "7/7, locked", "31.50 s", "pass"],
        )  # fmt: skip

    def test_an_unblocked_client_fails_and_says_why(self) -> None:
        row = btreport.cells(CONTROL, UNBLOCKED)
        self.assertEqual(row[3:6], ["20.0 MiB (wire 20.8 MiB)", "80", "never"])
        self.assertEqual(row[7], "0/0, not locked")
        self.assertEqual(
            row[-1],
            "FAIL: 80 pieces completed; received 20971520 bytes; never identified; "
            "not kept locked by probes (answered 0)",
        )

    def test_control_and_user_failures_come_first_in_the_verdict(self) -> None:
        control = dataclasses.replace(CONTROL, complete=False, received=1048576)
        blocked = dataclasses.replace(BLOCKED, user_failures={"web": 2}, user_identified=True)
        row = btreport.cells(control, blocked)
        self.assertEqual(row[2], "incomplete (1.0 MiB)")
        self.assertEqual(row[6], "2 / 240 rounds, identified")
        self.assertEqual(
            row[-1],
            "FAIL: control did not complete; user had 2 failures; the user was identified",
        )

    def test_identification_without_a_cleartext_packet_seen(self) -> None:
        row = dataclasses.replace(BLOCKED, first_cleartext=None)
        self.assertEqual(btreport.identified_cell(row), "yes, no cleartext seen")

    def test_resume_and_https_rows(self) -> None:
        resume = dataclasses.replace(BLOCKED, kind="resume", received=6291456, wire_in=8000000)
        row = btreport.cells(None, resume)
        wire = "7.6 MiB on the wire after the daemon started (6.0 MiB in all)"
        self.assertEqual(row[1:4], ["resume (http)", "—", wire])
        self.assertEqual(row[-1], "FAIL: received 8000000 bytes")
        https = dataclasses.replace(BLOCKED, source="https", web_back=None)
        self.assertEqual(btreport.cells(CONTROL, https)[1], "https-only, DHT off")
        self.assertEqual(btreport.cells(CONTROL, https)[8], "not within the limit")

    def test_not_measured(self) -> None:
        row = btreport.not_measured("rtorrent", "https-only, DHT off", "needs socat")
        self.assertEqual((len(row), row[-1]), (len(btreport.HEADERS), "not measured: needs socat"))


class RenderTests(SynchronousTestCase):
    def test_markdown(self) -> None:
        text = btreport.render(
            [btreport.cells(CONTROL, BLOCKED), btreport.cells(CONTROL, UNBLOCKED)], "Header.\n"
        )
        lines = text.splitlines()
        self.assertEqual(lines[0], "Header.")
        self.assertEqual(lines[1], "")
        self.assertEqual(lines[2], "| " + " | ".join(btreport.HEADERS) + " |")
        self.assertEqual(lines[3], "|" + "---|" * len(btreport.HEADERS))
        self.assertTrue(lines[4].startswith("| aria2 | http | complete, 3.1 s | 0 (wire 0) | 0 |"))
        self.assertTrue(lines[5].endswith("(answered 0) |"))
        self.assertEqual(len(lines), 6)

    def test_header_states_the_short_lock(self) -> None:
        text = btreport.header(["aria2"], 120, 30, "2026-12-01 05:00", 600)
        self.assertIn("`--time-lock 30` (probes every 15 s)", text)
        self.assertIn("within 48 s of quitting", text)
        self.assertIn("enforced by the queue", text)

    def test_kernel_enforcement_is_stated_and_spliced_apart(self) -> None:
        kernel = Enforcement(kernel=True, lock_established=True)
        text = btreport.header(["aria2"], 120, 30, "2026-12-01 05:00", 600, kernel)
        self.assertIn("enforced by the kernel, --lock-established", text)
        self.assertEqual(
            kernel.rule_options(30),
            ["--enforce", "kernel", "--lock-time", "30", "--lock-established"],
        )
        self.assertEqual(kernel.daemon_options(), ["--enforce", "kernel"])
        self.assertEqual(Enforcement().rule_options(30), [])
        begin, end = btreport.markers("kernel")
        self.assertNotEqual((begin, end), btreport.markers())
        self.assertTrue(begin.startswith("<!-- btreport:kernel:begin"))

    def test_lock_established_needs_kernel_enforcement(self) -> None:
        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr):
            self.assertEqual(btreport.main(["--lock-established"]), 2)
        self.assertIn("--lock-established needs --enforce kernel", stderr.getvalue())


class SavedRunTests(SynchronousTestCase):
    def test_a_result_survives_json(self) -> None:
        self.assertEqual(RunResult.from_json(json.loads(json.dumps(BLOCKED.to_json()))), BLOCKED)

    def test_a_saved_run_renders_the_same_table(self) -> None:
        saved = Path(self.mktemp())
        raw = [
            {"control": CONTROL.to_json(), "run": BLOCKED.to_json(), "verdict": "pass"},
            {"control": None, "run": dataclasses.replace(BLOCKED, lock_lapsed=True).to_json()},
        ]
        saved.write_text(json.dumps({"header": "Saved.", "rows": raw}))
        out = Path(self.mktemp())
        output = io.StringIO()
        with contextlib.redirect_stdout(output):
            code = btreport.main(["--from-json", str(saved), "--out", str(out)])
        self.assertEqual(code, 1)
        expected = btreport.render(
            [
                btreport.cells(CONTROL, BLOCKED),
                btreport.cells(None, RunResult.from_json(raw[1]["run"])),
            ],
            "Saved.",
        )
        self.assertEqual(out.read_text(), expected)
        self.assertEqual(output.getvalue(), expected + "\n")
        self.assertIn("| 7/7, locked, lapsed |", expected)
        self.assertTrue(expected.rstrip().endswith("FAIL: the lock lapsed while the client ran |"))

    def test_a_bad_saved_run_is_one_line(self) -> None:
        saved = Path(self.mktemp())
        saved.write_text("[1, 2]")
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            code = btreport.main(["--from-json", str(saved)])
        self.assertEqual((code, err.getvalue().count("\n")), (2, 1))
        self.assertIn("not a saved run", err.getvalue())


class ArgumentTests(SynchronousTestCase):
    def run_main(self, *argv: str) -> tuple[int, str]:
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            code = btreport.main(list(argv))
        return code, err.getvalue()

    def test_bad_arguments_are_one_line(self) -> None:
        for argv, start in (
            (["--clients", "kazaa"], "btreport: clients must be"),
            (["--sources", "http,ftp"], "btreport: unknown sources or rows: ftp"),
            (["--rows", "resume,later"], "btreport: unknown sources or rows: later"),
            (["--seconds", "0"], "btreport: --seconds and --time-lock must be positive"),
        ):
            code, err = self.run_main(*argv)
            self.assertEqual((code, err.count("\n")), (2, 1), argv)
            self.assertTrue(err.startswith(start), err)
