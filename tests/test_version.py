"""Every command's ``--version`` names p2pwall's version (usage.Options printed Twisted's)."""

from __future__ import annotations

import contextlib
import io

from twisted.trial.unittest import SynchronousTestCase

import twisted
from p2pwall import __version__
from p2pwall.options import Options
from p2pwall.tools import ctl, napigator, rules


class VersionTests(SynchronousTestCase):
    def printed(self, parse) -> str:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            error = self.assertRaises(SystemExit, parse, ["--version"])
        self.assertIn(error.code, (0, None))
        return out.getvalue().strip()

    def test_each_command(self) -> None:
        for program, parse in (
            ("p2pwall", Options().parseOptions),
            ("p2pwall-rules", rules.Options().parseOptions),
            ("p2pwall-ctl", ctl.parse_args),
            ("p2pwall-napigator", napigator.parse_args),
        ):
            self.assertEqual(
                self.printed(parse), f"{program} {__version__} (Twisted {twisted.__version__})"
            )
