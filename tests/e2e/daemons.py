"""The real ``twistd p2pwall`` in the lab's ``gw`` with the twistd options a test chooses.

``lab.gateway.Gateway.start`` always runs ``twistd -n --pidfile=`` and adds ``--green``; the
lifecycle and green-interface tests need other command lines (daemonised, ``--uid``, no
``--green``), so they start the daemon here and use ``Gateway`` for its rules, stop and ``ctl``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from lab.gateway import BIN, ENV, Gateway
from lab.netlab import LabError

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

    def start(self, extra: Sequence[str] = (), wait: float = 20.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            raise LabError("the daemon is already running")
        start_mark = len(self.read_log())
        self.proc = self.lab.spawn("gw", self.argv(extra), log=self.log, env=ENV)
        deadline = time.monotonic() + wait
        while "reading NFQUEUE" not in self.read_log()[start_mark:]:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise LabError(f"p2pwall did not start:\n{self.read_log()[start_mark:][-3000:]}")
            time.sleep(0.05)


def wait_for(condition, seconds: float, step: float = 0.05) -> bool:
    """Poll ``condition`` until it is true or ``seconds`` have passed."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(step)
    return True
