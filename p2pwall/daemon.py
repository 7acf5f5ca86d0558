"""Failing and living like a Unix daemon under twistd.

A start failure is one line and exit status 1, with ``-n`` and daemonised alike (twistd's own
mechanism only works for an ``Exception``, and carries 100 bytes of it); the capabilities the
daemon needs survive ``--uid``; SIGHUP never ends the daemon.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress

from twisted.application.service import Service
from twisted.internet.interfaces import IReactorThreads
from twisted.logger import Logger

from . import capabilities
from .errors import StartError

log = Logger()


class StartFailed(SystemExit, Exception):  # noqa: N818 - named for what the admin sees
    """A ``StartError`` on its way out of twistd, with the one line as its exit message.

    Both at once on purpose: twistd reports a daemon's start failure to the waiting parent
    only for an ``Exception`` (``UnixApplicationRunner.postApplication`` writes it to the
    status pipe; a bare ``SystemExit`` skips that and the parent waits for ever), and the
    interpreter prints a ``SystemExit``'s message and exits 1 without a traceback."""


@contextmanager
def one_line_failures(report: Callable[[str], None] | None = None) -> Iterator[None]:
    """Turn a ``StartError`` raised inside into ``StartFailed``, telling ``report`` first."""
    try:
        yield
    except StartError as error:
        if report is not None:
            report(str(error))
        raise StartFailed(str(error)) from None


class LaunchStderr:
    """The stderr twistd was launched with, kept until the daemon has started.

    Daemonised, a start failure reaches the waiting parent through twistd's status pipe, which
    carries only its first 100 bytes; the whole line is written here first, so the admin's
    terminal shows it in full. In the process that launched (``-n``) the line goes to the log
    on stdout as it is, so nothing is written here."""

    def __init__(self) -> None:
        self._pid = os.getpid()
        try:
            self._fd: int | None = os.dup(2)
        except OSError:
            self._fd = None

    def report(self, line: str) -> None:
        if self._fd is not None and os.getpid() != self._pid:
            # When nobody reads it any more, twistd's status pipe still tells the parent.
            with suppress(OSError):
                os.write(self._fd, f"p2pwall: {line}\n".encode(errors="replace"))
        self.close()

    def close(self) -> None:
        """Let go of the terminal: a launcher that waits for end-of-file must not wait for us."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class CapabilityService(Service):
    """Keeps CAP_NET_ADMIN and CAP_NET_RAW when twistd switches to ``--uid``/``--gid``
    between the privileged start and the start (see ``capabilities``); first of the services,
    so the others start with them."""

    def __init__(self) -> None:
        self._euid: int | None = None  # before the switch

    def privilegedStartService(self) -> None:
        self._euid = os.geteuid()
        try:
            capabilities.keep_across_setuid()
        except OSError as error:
            raise StartError(f"cannot keep capabilities across --uid: {error}") from None
        super().privilegedStartService()

    def startService(self) -> None:
        super().startService()
        if self._euid in (None, os.geteuid()):
            return
        try:
            capabilities.restore_needed()
        except OSError as error:
            raise StartError(
                f"cannot keep CAP_NET_ADMIN and CAP_NET_RAW after --uid/--gid ({error}): "
                "every verdict would fail; run without --uid"
            ) from None
        log.info("running as uid {uid} with CAP_NET_ADMIN and CAP_NET_RAW", uid=os.geteuid())


class ReloadService(Service):
    """SIGHUP, always handled: its default action would end the daemon on the spot, without
    writing the store file or removing the pidfile.

    With ``-D`` the DNS patterns are loaded at start (``initial``, after the store, so .wsx IPs
    are blocked fresh) and again on each SIGHUP, as daemons do (``reload``, which also writes
    the kernel's sets anew with ``--enforce kernel``). Each SIGHUP first calls ``reopen``'s
    functions: the ``--json-events`` file is opened anew, after logrotate moved it. With neither,
    a SIGHUP is logged as having nothing to reload. twistd's own ``--logfile`` rotates on
    SIGUSR1 (twistd's handler). The signal handler only hands the work to the reactor."""

    def __init__(
        self,
        reload: Callable[[], object] | None,
        reactor: IReactorThreads,
        reopen: Sequence[Callable[[], object]] = (),
        initial: Callable[[], object] | None = None,
    ) -> None:
        self._reload = reload
        self._initial = initial
        self._reactor = reactor
        self._reopen = tuple(reopen)
        self._previous: Callable | int | None = None

    def startService(self) -> None:
        super().startService()
        if self._initial is not None:
            self._initial()
        previous = signal.signal(signal.SIGHUP, self._hangup)
        self._previous = signal.SIG_DFL if previous is None else previous

    def stopService(self) -> None:
        super().stopService()
        if self._previous is not None:
            signal.signal(signal.SIGHUP, self._previous)
            self._previous = None

    def _hangup(self, signum: int, frame: object) -> None:
        self._reactor.callFromThread(self._hungup)

    def _hungup(self) -> None:
        for reopen in self._reopen:
            reopen()
        if self._reload is not None:
            self._reload()
        elif not self._reopen:
            log.info("SIGHUP: nothing to reload (no -D patterns file)")
