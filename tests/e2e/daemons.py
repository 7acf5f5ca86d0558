"""The real ``twistd p2pwall`` in the lab's ``gw`` with the twistd options a test chooses.

``lab.gateway.Gateway.argv`` runs ``twistd -n --pidfile=`` and adds ``--green``; the lifecycle
and green-interface tests need other command lines (daemonised, ``--uid``, no ``--green``), so
they override it here and use ``Gateway`` for the rest.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from lab.gateway import BIN, Gateway

TWISTD = str(BIN / "twistd")


class OwnArgvGateway(Gateway):
    """A ``Gateway`` whose ``start`` runs ``twistd [twistd_options] p2pwall --queue N
    [options]``: nothing added."""

    def __init__(self, *args, twistd_options: Sequence[str] = ("-n", "--pidfile="), **kw) -> None:
        super().__init__(*args, **kw)
        self.twistd_options = list(twistd_options)

    def argv(self, extra: Sequence[str] = ()) -> list[str]:
        return [TWISTD, *self.twistd_options, "p2pwall", "--queue", str(self.queue),
                *self.options, *extra]  # fmt: skip


def wait_for(condition, seconds: float, step: float = 0.05) -> bool:
    """Poll ``condition`` until it is true or ``seconds`` have passed."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(step)
    return True
