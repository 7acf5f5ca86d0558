"""Issue 11 §4 with the real daemon: each real BitTorrent client, encryption required, leeching
through the HTTP tracker behind ``p2pwall-rules`` and ``twistd p2pwall`` in the lab's ``gw``.

Asserted, per client: with the daemon 0 pieces completed and at most one piece (256 KiB) of
payload received in 120 s, the client identified within 2 s of its first cleartext BitTorrent
packet, the ordinary user's web, DNS and UDP without a failure and never identified, the
client locked all along (no lapse) with probes answered when it stops, and its host's web
back within the lock plus one probe interval; and the swarm works (a control run without the
daemon, after the blocked one, completes), so that 0 bytes means the daemon stopped the client.

One swarm serves the whole class (built by the first test, torn down after the last, or at
exit). Skips unless asked (``P2PWALL_BT_MATRIX=1``, ``make bt-matrix``) and root with the
clients and tcpdump installed (``scripts/install-bt-lab.sh``). About 3 minutes a client.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import sys

from twisted.trial.unittest import SynchronousTestCase

from lab.btblock import (
    IDENTIFY_WITHIN,
    LEECH_SECONDS,
    MAX_RECEIVED,
    TIME_LOCK,
    RunResult,
    blocked_run,
    control_run,
)
from lab.btlab import CLIENTS, BtLab, client_missing, swarm_missing

from .support import skip_reason


class SharedSwarm:
    """One BtLab for every test of a class; the last test (or exit) tears it down."""

    def __init__(self, tests: int) -> None:
        self.left = tests
        self.lab: BtLab | None = None

    def get(self) -> BtLab:
        if self.lab is None:
            installed = [client for client in CLIENTS if client_missing(client) is None]
            lab = BtLab(installed)
            atexit.register(lab.teardown)
            try:
                lab.setup()
                lab.start_swarm(lifetime=3600)
                lab.start_services()
            except BaseException:
                lab.teardown()
                raise
            self.lab = lab
        return self.lab

    def done(self) -> None:
        self.left -= 1
        if self.left <= 0 and self.lab is not None:
            self.lab.teardown()


MATRIX = "P2PWALL_BT_MATRIX"


def matrix_off() -> str | None:
    """The real-client matrix takes about 13 minutes with every client installed: it runs when
    asked (as ``make bt-matrix`` does), not in every ``make test``."""
    if os.environ.get(MATRIX) == "1":
        return None
    return f"the real-client blocking matrix runs with {MATRIX}=1 (make bt-matrix)"


class BlockedHttpTrackerTests(SynchronousTestCase):
    swarm = SharedSwarm(len(CLIENTS))

    def blocked(self, client: str) -> None:
        self.addCleanup(self.swarm.done)
        reason = (
            skip_reason()
            or matrix_off()
            or swarm_missing()
            or client_missing(client)
            or (None if shutil.which("tcpdump") else "needs tcpdump (apt-get install tcpdump)")
        )
        if reason:
            raise self.skipTest(reason)
        lab = self.swarm.get()
        # Blocked first: once a client has completed, the swarm knows its address and port,
        # and the seeders connect to it from outside (bench.btreport's resume row asks that).
        result = blocked_run(lab, client, "http", LEECH_SECONDS, TIME_LOCK)
        print(f"btblock {client} http: {json.dumps(result.to_json())}", file=sys.stderr)
        control = control_run(lab, client, "http")
        self.assertTrue(control.complete, f"the swarm does not work: {control.detail}")
        self.check(result)

    def check(self, result: RunResult) -> None:
        self.assertFalse(result.complete, result.detail)
        self.assertEqual(result.pieces, 0, "pieces completed")
        self.assertLessEqual(result.received, MAX_RECEIVED, "payload bytes received")
        self.assertIsNotNone(result.first_cleartext, "the lab saw no cleartext BitTorrent packet")
        self.assertIsNotNone(result.identified_at, "the daemon never identified the client")
        self.assertLessEqual(result.identified_after, IDENTIFY_WITHIN)
        self.assertGreater(result.user_rounds, 0, "the user load did not run")
        self.assertEqual(result.user_failures, {"web": 0, "dns": 0, "udp": 0})
        self.assertFalse(result.user_identified, "the ordinary user was identified")
        self.assertTrue(result.locked_at_end, "not locked when the client stopped")
        self.assertGreater(result.probes_answered, 0, "no probe answered while it idled")
        self.assertFalse(result.lock_lapsed, "the lock lapsed while the client ran")
        self.assertIsNotNone(result.web_back, "web never came back after the client quit")
        self.assertLessEqual(result.web_back, TIME_LOCK * 1.5 + 3)

    def test_aria2(self) -> None:
        self.blocked("aria2")

    def test_libtorrent(self) -> None:
        self.blocked("libtorrent")

    def test_transmission(self) -> None:
        self.blocked("transmission")

    def test_qbittorrent(self) -> None:
        self.blocked("qbittorrent")

    def test_rtorrent(self) -> None:
        self.blocked("rtorrent")
