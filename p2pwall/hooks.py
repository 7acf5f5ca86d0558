"""``--on-lock CMD`` / ``--on-release CMD``: the admin's command, run when a green host is
locked or released (fail2ban's actions, a webhook through ``curl``...).

The command line is split like a shell would split it (``shlex``) but never run by a shell:
a client address cannot inject anything, and an admin who wants a shell writes ``sh -c '...'``.
What happened is in the environment (``P2PWALL_EVENT``, ``P2PWALL_CLIENT``, ``P2PWALL_REASON``...,
see ``environment``). Commands run beside the reactor (``spawnProcess``), never blocking it, and
bounded: at most ``max_running`` at once (the rest are skipped and counted, as a flood of locks
must not fork a flood of processes), each killed after ``timeout`` seconds. Exit statuses and
failures are logged and counted in the engine's stats (``hooks_*``). It is an
``IClientObserver``, so the engine knows nothing of processes.
"""

from __future__ import annotations

import os
import shlex
import shutil
from collections.abc import Mapping, Sequence

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ProcessDone, ProcessExitedAlready
from twisted.internet.interfaces import IDelayedCall, IProcessTransport
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from .engine import Engine
from .interfaces import IClientObserver
from .packet import addr_text, endpoint_text
from .tables import Client
from .timefmt import iso

log = Logger()

# Commands running at once, and seconds before one is killed.
MAX_RUNNING = 4
TIMEOUT = 30.0
# Bytes of a command's output kept, to log with a failure.
OUTPUT_KEPT = 400


def parse_command(text: str, option: str) -> tuple[str, ...]:
    """``text`` split into argv, its program found now (on ``PATH`` for a bare name): a typo
    is a one-line ``ValueError`` at start, not a failure at the first lock."""
    try:
        argv = shlex.split(text)
    except ValueError as error:
        raise ValueError(f"{option}: cannot split {text!r}: {error}") from None
    if not argv:
        raise ValueError(f"{option}: empty command")
    program = shutil.which(argv[0]) if "/" not in argv[0] else argv[0]
    if program is None or not os.access(program, os.X_OK) or os.path.isdir(program):
        raise ValueError(f"{option}: {argv[0]!r} is not an executable program")
    return (os.path.abspath(program), *argv[1:])


def environment(
    event: str, addr: bytes, client: Client | None, now: float, dry_run: bool
) -> dict[str, str]:
    """What the command learns: the event (``lock`` or ``release``), the client, the
    protocol, the reason (why it was locked; for a release, why the lock ended) and the
    lock's first evidence."""
    identified = client.identified if client is not None else None
    protocol, lock_reason, peer = "", "", ""
    if identified is not None:
        _when, protocol, lock_reason, _proto, _sport, peer_addr, peer_port = identified
        peer = endpoint_text(peer_addr, peer_port) if peer_addr else ""
    reason = (client.ended if event == "release" and client is not None else None) or lock_reason
    env = {
        "P2PWALL_EVENT": event,
        "P2PWALL_CLIENT": addr_text(addr),
        "P2PWALL_PROTOCOL": protocol,
        "P2PWALL_REASON": reason,
        "P2PWALL_LOCK_REASON": lock_reason,
        "P2PWALL_PEER": peer,
        "P2PWALL_TIME": iso(now),
        "P2PWALL_EPOCH": f"{now:.0f}",
        "P2PWALL_DRY_RUN": str(int(dry_run)),
    }
    if event == "lock" and client is not None:
        env["P2PWALL_UNTIL"] = iso(client.until)
    return env


@implementer(IClientObserver)
class CommandHooks(Service):
    """Runs ``on_lock``/``on_release`` (argv from ``parse_command``) through ``reactor``'s
    ``spawnProcess``. A service: stopping waits for the commands still running (each ends
    within ``timeout``)."""

    def __init__(
        self,
        reactor: object,
        engine: Engine,
        on_lock: Sequence[str] | None = None,
        on_release: Sequence[str] | None = None,
        max_running: int = MAX_RUNNING,
        timeout: float = TIMEOUT,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.reactor = reactor
        self.engine = engine
        self.on_lock = tuple(on_lock) if on_lock else None
        self.on_release = tuple(on_release) if on_release else None
        self.max_running = max_running
        self.timeout = timeout
        self.environ = dict(os.environ if environ is None else environ)
        self.active: set[_Hook] = set()
        self._waiting: list[Deferred[None]] = []
        # Locked clients, kept to tell ``on_release`` why they were locked (the lock table
        # has forgotten a client by the time it is released).
        self._locked: dict[bytes, Client] = {}

    def client_locked(self, addr: bytes) -> None:
        client = self.engine.clients.get(addr)
        if self.on_release and client is not None:
            self._locked[addr] = client
        if self.on_lock:
            self._run("lock", self.on_lock, addr, client)

    def client_released(self, addr: bytes) -> None:
        client = self._locked.pop(addr, None)
        if self.on_release:
            self._run("release", self.on_release, addr, client)

    def stopService(self) -> Deferred[None]:
        super().stopService()
        if not self.active:
            return succeed(None)
        waiting: Deferred[None] = Deferred()
        self._waiting.append(waiting)
        return waiting

    def _run(self, event: str, argv: tuple[str, ...], addr: bytes, client: Client | None) -> None:
        stats = self.engine.stats
        label = f"on-{event} {addr_text(addr)}"
        if len(self.active) >= self.max_running:
            stats["hooks_skipped"] += 1
            skipped = stats["hooks_skipped"]
            if skipped & (skipped - 1) == 0:  # the 1st, 2nd, 4th, 8th...: a flood logs little
                log.warn(
                    "{label}: skipped, {running} commands still running ({skipped} skipped)",
                    label=label,
                    running=len(self.active),
                    skipped=skipped,
                )
            return
        env = {
            **self.environ,
            **environment(event, addr, client, self.engine.clock.seconds(), self.engine.dry_run),
        }
        hook = _Hook(self, label)
        try:
            self.reactor.spawnProcess(hook, argv[0], argv, env=env)  # type: ignore[attr-defined]
        except OSError as error:
            stats["hooks_failed"] += 1
            log.warn("{label}: cannot run {program}: {error}", label=label, program=argv[0],
                     error=error.strerror or error)  # fmt: skip
            return
        stats["hooks_run"] += 1
        self.active.add(hook)
        hook.timer = self.reactor.callLater(self.timeout, hook.kill)  # type: ignore[attr-defined]

    def _ended(self, hook: _Hook, reason: Failure) -> None:
        self.active.discard(hook)
        if hook.timer is not None and hook.timer.active():
            hook.timer.cancel()
        if hook.killed:
            self.engine.stats["hooks_killed"] += 1
            log.warn("{label}: killed after {timeout:g} s", label=hook.label, timeout=self.timeout)
        elif not reason.check(ProcessDone):
            self.engine.stats["hooks_failed"] += 1
            value = reason.value
            status = (
                f"killed by signal {value.signal}"
                if getattr(value, "signal", None)
                else f"exit status {getattr(value, 'exitCode', '?')}"
            )
            output = " ".join(hook.output.decode("utf-8", "replace").split())
            log.warn(
                "{label}: {status}{output}",
                label=hook.label,
                status=status,
                output=f": {output}" if output else "",
            )
        if not self.active:
            waiting, self._waiting = self._waiting, []
            for done in waiting:
                done.callback(None)


class _Hook(ProcessProtocol):
    """One running command: the first ``OUTPUT_KEPT`` bytes of its output, and its timer."""

    transport: IProcessTransport

    def __init__(self, hooks: CommandHooks, label: str) -> None:
        self.hooks = hooks
        self.label = label
        self.output = bytearray()
        self.timer: IDelayedCall | None = None
        self.killed = False

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        room = OUTPUT_KEPT - len(self.output)
        if room > 0:
            self.output += data[:room]

    def kill(self) -> None:
        self.killed = True
        try:
            self.transport.signalProcess("KILL")
        except ProcessExitedAlready:
            self.killed = False  # it ended as the timer fired: its end says how

    def processEnded(self, reason: Failure) -> None:
        self.hooks._ended(self, reason)
