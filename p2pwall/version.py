"""``--version`` for every p2pwall command: p2pwall's own version, then Twisted's.

``usage.Options`` prints Twisted's version alone, which told an admin nothing about p2pwall.
"""

from __future__ import annotations

import sys

import twisted

from . import __version__


def version_line(program: str) -> str:
    return f"{program} {__version__} (Twisted {twisted.__version__})"


class VersionOption:
    """Mixed into a ``usage.Options``: its ``--version`` prints ``version_line`` and exits."""

    program = "p2pwall"

    def opt_version(self) -> None:
        """Display p2pwall's version and exit."""
        print(version_line(self.program))
        sys.exit(0)
