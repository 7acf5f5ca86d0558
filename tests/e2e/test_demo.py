"""The main job, `make demo`, runs end to end: a short run must end Kazaa-proof."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from lab import btdemo
from lab.btlab import client_missing, swarm_missing

from .support import skip_reason

CHECKOUT = Path(__file__).resolve().parents[2]


class DemoTests(SynchronousTestCase):
    def test_short_demo_run(self) -> None:
        reason = skip_reason()
        if reason:
            raise self.skipTest(reason)
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "lab.demo",
                "--scale",
                "0.3",
                "--time-lock",
                "3",
                "--no-bittorrent",
            ],  # fmt: skip
            cwd=CHECKOUT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        self.assertEqual(done.returncode, 0, done.stdout[-3000:] + done.stderr[-2000:])
        for phase in ("-- phase 1:", "-- phase 2:", "-- phase 3:", "-- the client has quit"):
            self.assertIn(phase, done.stdout)
        self.assertIn("breakthroughs (TCP connections that got through)  0", done.stdout)
        self.assertIn("Kazaa-proof: yes", done.stdout)

    def test_short_bittorrent_act(self) -> None:
        """The second act: a real client, stopped, its bytes on screen (skips without the
        BitTorrent lab's packages: scripts/install-bt-lab.sh, which `make demo` runs)."""
        reason = skip_reason() or swarm_missing() or client_missing(btdemo.CLIENT)
        if reason:
            raise self.skipTest(reason)
        done = subprocess.run(
            [sys.executable, "-m", "lab.btdemo", "--seconds", "25", "--time-lock", "8"],
            cwd=CHECKOUT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        self.assertEqual(done.returncode, 0, done.stdout[-3000:] + done.stderr[-2000:])
        self.assertIn("aria2c has", done.stdout)
        self.assertRegex(done.stdout, r"client identified +client 198\.18\.1\.10 identified: Bit")
        self.assertIn("BitTorrent stopped: yes", done.stdout)
