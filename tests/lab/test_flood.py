"""The flood test's two programs: every hello a new flow, connects timed and counted, and both
refuse what they must not do."""

from __future__ import annotations

import io
import itertools
import json
import socket
import sys

from twisted.trial.unittest import SynchronousTestCase

from lab.flood import FLOOD_PEERS, connects, destinations, main, success_ratio


class DestinationsTests(SynchronousTestCase):
    def test_each_hello_is_a_new_flow_in_the_lab(self) -> None:
        first = list(itertools.islice(destinations(), 3 * len(FLOOD_PEERS)))
        self.assertEqual(len(set(first)), len(first))
        self.assertTrue(all(ip.startswith("198.19.1.") and port >= 1024 for ip, port in first))


class ConnectsTests(SynchronousTestCase):
    def test_counts_successes_and_failures(self) -> None:
        listener = socket.create_server(("127.0.0.1", 0))
        self.addCleanup(listener.close)
        report = connects(listener.getsockname(), seconds=0.2, interval=0.02, timeout=1.0)
        self.assertGreater(report["tried"], 2)
        self.assertEqual(report["succeeded"], report["tried"])
        self.assertEqual(len(report["latencies_ms"]), report["tried"])
        self.assertEqual(success_ratio(report), 1.0)
        port = listener.getsockname()[1]
        listener.close()
        refused = connects(("127.0.0.1", port), seconds=0.1, interval=0.02, timeout=1.0)
        self.assertEqual(refused["succeeded"], 0)
        self.assertEqual(refused["failures"], {"ConnectionRefusedError": refused["tried"]})
        self.assertEqual(success_ratio({"tried": 0, "succeeded": 0}), 0.0)

    def test_main_writes_the_report(self) -> None:
        listener = socket.create_server(("127.0.0.1", 0))
        self.addCleanup(listener.close)
        path = self.mktemp()
        target = f"127.0.0.1:{listener.getsockname()[1]}"
        argv = ["connects", "--target", target, "--seconds", "0.1", "--report", path]
        self.assertEqual(main(argv), 0)
        with open(path) as report:
            self.assertGreater(json.load(report)["succeeded"], 0)

    def test_refuses_targets_outside_the_lab_and_unbounded_runs(self) -> None:
        for argv, message in (
            (["connects", "--target", "192.0.2.1:80", "--seconds", "1", "--report", "x"],
             "error: --target: not a lab IPv4 address"),
            (["hellos", "--seconds", "0", "--report", "x"], "error: --seconds must be in"),
            (["hellos", "--seconds", "1000", "--report", "x"], "error: --seconds must be in"),
        ):  # fmt: skip
            stderr = io.StringIO()
            self.patch(sys, "stderr", stderr)
            self.assertRaises(SystemExit, main, argv)
            self.assertIn(message, stderr.getvalue())
