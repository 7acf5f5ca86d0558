"""ftwall's event classes and debug classes, carried by ``twisted.logger``.

Event classes (``-l`` to syslog, ``-L`` to stderr): u U t T c p x m. Debug classes (``-d``, to
the daemon's own log, which is stdout under ``twistd -n``): d a D t h p l A -. Every line is a
structured event with ``p2pwall_class`` set, so observers can filter by class, and shows its
class in the log's system field: ``[p2pwall c] client 198.18.1.10 identified: ...``. Lines to
stderr start with their time in ISO 8601 UTC (``2026-12-01T02:00:00Z``), the same on every
machine; syslog stamps its own.

``--json-events FILE`` writes the same events, one JSON object a line (``twisted.logger``'s
JSON support), for a SIEM: the classes of ``--json-classes`` and the debug classes of ``-d``,
each with its fields as keys (``event_record``). ``JsonEventFile.reopen`` starts a new file
after logrotate moved the old one (SIGHUP).
"""

from __future__ import annotations

import errno
import os
import stat
import sys
from collections.abc import Callable, Iterable
from functools import partial
from typing import TextIO

from twisted.logger import (
    FileLogObserver,
    LegacyLogObserverWrapper,
    Logger,
    formatEvent,
    formatEventAsClassicLogText,
    globalLogPublisher,
    jsonFileLogObserver,
)
from zope.interface import implementer

from .interfaces import IEventSink
from .packet import Packet, addr_text, endpoint_text, mac_text, proto_name
from .timefmt import iso

log = Logger()

EVENT_CLASSES = {
    "u": "dropped UDP packets",
    "U": "accepted UDP packets",
    "t": "dropped TCP packets",
    "T": "accepted TCP packets",
    "c": "identified (and cleared) green-network P2P clients",
    "p": "identified public-network peers",
    "x": "external (control port) commands",
    "m": "add MAC addresses to messages",
}

# The core's debug classes; each detector adds its own (``IDetectorFactory.debug_classes``).
DEBUG_CLASSES = {
    "A": "everything",
    "-": "nothing",
    "t": "time locks",
    "p": "probe events",
    "l": "event-class messages on the daemon log too",
}
# Class letters that are switches, not classes of messages.
_SWITCHES = frozenset("A-")


def parse_classes(text: str, known: dict[str, str], what: str) -> frozenset[str]:
    """Validate a class string such as ``"pc"``; raise ``ValueError`` naming bad letters."""
    bad = sorted(set(text) - set(known))
    if bad:
        raise ValueError(
            f"unknown {what} class(es) {''.join(bad)!r}; known: {''.join(sorted(known))}"
        )
    if "A" in text:
        return frozenset(known) - _SWITCHES
    return frozenset(text) - _SWITCHES


Observer = Callable[[dict], None]


def syslog_observer(prefix: str = "p2pwall") -> Observer:
    from twisted.python.syslog import SyslogObserver

    return LegacyLogObserverWrapper(SyslogObserver(prefix).emit)


def stderr_observer(stream: TextIO | None = None) -> Observer:
    """Event lines on ``stream`` (stderr), each stamped with its time in ISO 8601 UTC."""
    return FileLogObserver(
        stream or sys.stderr, partial(formatEventAsClassicLogText, formatTime=iso)
    )


def event_record(event: dict) -> dict:
    """One event as a SIEM reads it: its time (ISO 8601 UTC and epoch seconds), class, whether
    it is a debug event, the text line's message, then every field it was logged with (but
    those named ``_...``: pieces of the text line, which structured fields say again)."""
    record = {
        "time": iso(event["log_time"]),
        "epoch": event["log_time"],
        "class": event["p2pwall_class"],
        "debug": event["p2pwall_debug"],
        "message": formatEvent(event),
    }
    for key, value in event.items():
        if not key.startswith(("log_", "p2pwall_", "_")):
            record.setdefault(key, value)
    return record


def open_append(path: str) -> TextIO:
    """``path`` opened for appending, created mode 0640; ``OSError`` for anything but a regular
    file, found without blocking (opening a FIFO to write waits for a reader)."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    fd = os.open(path, flags, 0o640)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", path)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "a", encoding="utf-8")
    except BaseException:
        os.close(fd)
        raise


class JsonEventFile:
    """``--json-events``: an observer writing each event as one line of JSON (``event_record``)
    to ``path``. ``reopen`` (SIGHUP) opens the path anew, so logrotate can move the file away;
    when that fails the old file is kept, and the error logged."""

    def __init__(self, path: str) -> None:
        """``OSError`` when the file cannot be opened."""
        self.path = path
        self._file = open_append(path)
        self._observer = jsonFileLogObserver(self._file, recordSeparator="")

    def __call__(self, event: dict) -> None:
        self._observer(event_record(event))

    def reopen(self) -> None:
        try:
            new = open_append(self.path)
        except OSError as error:
            log.error(
                "--json-events {path}: cannot reopen, still writing the old file: {error}",
                path=self.path,
                error=error.strerror or error,
            )
            return
        old, self._file = self._file, new
        self._observer = jsonFileLogObserver(new, recordSeparator="")
        old.close()
        log.info("--json-events: reopened {path}", path=self.path)

    def close(self) -> None:
        self._file.close()


@implementer(IEventSink)
class EventLog:
    """Routes each event to the observers that asked for its class."""

    def __init__(
        self,
        syslog: Iterable[str] = (),
        stderr: Iterable[str] = (),
        debug: Iterable[str] = (),
        syslog_target: Observer | None = None,
        stderr_target: Observer | None = None,
        daemon_log: Observer = globalLogPublisher,
        json: Iterable[str] = (),
        json_target: Observer | None = None,
    ) -> None:
        """``json``: the classes ``json_target`` gets (with every debug event asked for)."""
        self._syslog = frozenset(syslog)
        self._stderr = frozenset(stderr)
        self._debug = frozenset(debug)
        self._json = frozenset(json) if json_target is not None else frozenset()
        self._json_target = json_target
        self._to_daemon_log = "l" in self._debug
        self._mac = "m" in self._syslog | self._stderr
        self._enabled = (self._syslog | self._stderr | self._json) - {"m"}
        self._syslog_target = syslog_target or (syslog_observer() if self._syslog else None)
        self._stderr_target = stderr_target or (stderr_observer() if self._stderr else None)
        self._daemon_log = daemon_log
        self._log = Logger(namespace="p2pwall.events", observer=self._route)

    def wants(self, cls: str) -> bool:
        return cls in self._enabled

    def wants_debug(self, cls: str) -> bool:
        return cls in self._debug

    def event(self, cls: str, fmt: str, **fields: object) -> None:
        if cls in self._enabled:
            self._log.info(
                fmt, p2pwall_class=cls, p2pwall_debug=False, log_system=f"p2pwall {cls}", **fields
            )

    def packet(self, cls: str, packet: Packet, reason: str, verdict: str | None = None) -> None:
        """``verdict``: the word for what was done, when it is not what ``cls`` says
        (``would drop`` in dry-run mode)."""
        if cls not in self._enabled:
            return
        fmt = "{verdict} {protocol} {src} -> {dst} ({reason})"
        fields: dict[str, object] = {
            "verdict": verdict or ("dropped" if cls.islower() else "accepted"),
            "protocol": proto_name(packet.proto),
            "src": endpoint_text(packet.src, packet.sport),
            "dst": endpoint_text(packet.dst, packet.dport),
            "reason": reason,
            # The same, structured, for JSON readers (a dropped packet's source is the client).
            "src_addr": addr_text(packet.src),
            "src_port": packet.sport,
            "dst_addr": addr_text(packet.dst),
            "dst_port": packet.dport,
        }
        if packet.mac:
            fields["mac"] = mac_text(packet.mac)
            if self._mac:
                fmt += " mac={mac}"
        self.event(cls, fmt, **fields)

    def debug(self, cls: str, fmt: str, **fields: object) -> None:
        if cls in self._debug:
            self._log.debug(
                fmt, p2pwall_class=cls, p2pwall_debug=True, log_system=f"p2pwall debug {cls}",
                **fields,
            )  # fmt: skip

    def _route(self, event: dict) -> None:
        cls = event["p2pwall_class"]
        if self._json_target is not None and (event["p2pwall_debug"] or cls in self._json):
            self._json_target(event)
        if event["p2pwall_debug"]:
            self._daemon_log(event)
            return
        if cls in self._syslog and self._syslog_target is not None:
            self._syslog_target(event)
        if cls in self._stderr and self._stderr_target is not None:
            self._stderr_target(event)
        if self._to_daemon_log:
            self._daemon_log(event)
