"""The main job, `make demo`, runs end to end: a short run must end Kazaa-proof."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from .support import skip_reason

CHECKOUT = Path(__file__).resolve().parents[2]


class DemoTests(SynchronousTestCase):
    def test_short_demo_run(self) -> None:
        reason = skip_reason()
        if reason:
            raise self.skipTest(reason)
        done = subprocess.run(
            [sys.executable, "-m", "lab.demo", "--scale", "0.3", "--time-lock", "3"],
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
