"""The install scripts' checks hold under load: no check dies of SIGPIPE under pipefail."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"

# A twistd whose help lists the plugin first, then goes on writing far past a pipe's buffer.
FAKE_TWISTD = """#!/usr/bin/env bash
echo "    p2pwall          Block FastTrack, WinMX and OpenNAP clients"
head -c 1048576 /dev/zero | tr '\\0' 'x' | fold -w 80
"""


class CheckPluginTests(SynchronousTestCase):
    def fake(self, text: str) -> Path:
        path = Path(self.mktemp())
        path.write_text(text)
        path.chmod(0o755)
        return path

    def check(self, twistd: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(SCRIPTS / "check-plugin.sh"), str(twistd)],
            capture_output=True,
            text=True,
            timeout=60,
        )

    def test_listed_plugin_passes_whatever_follows_it(self) -> None:
        result = self.check(self.fake(FAKE_TWISTD))
        self.assertEqual((result.returncode, result.stderr), (0, ""))

    def test_missing_plugin_fails_with_one_line(self) -> None:
        result = self.check(self.fake("#!/bin/sh\necho '    web   A web server'\n"))
        self.assertEqual(result.returncode, 1)
        self.assertEqual(result.stderr, "p2pwall: twistd does not list the plugin\n")

    def test_no_script_pipes_into_grep_q(self) -> None:
        """``cmd | grep -q`` under pipefail fails when ``cmd`` is still writing at the match."""
        for script in SCRIPTS.glob("*.sh"):
            for line in script.read_text().splitlines():
                if not line.lstrip().startswith("#"):
                    self.assertIsNone(re.search(r"\|\s*grep\s+-\w*q", line), script.name)
        self.assertIn("scripts/check-plugin.sh", (SCRIPTS / "install-deps.sh").read_text())
