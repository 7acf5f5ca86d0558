"""ftwall's event classes and debug classes, carried by ``twisted.logger``.

Event classes (``-l`` to syslog, ``-L`` to stderr): u U t T c p x m. Debug classes (``-d``, to
the daemon's own log, which is stdout under ``twistd -n``): d a D t h p l A -. Every line is a
structured event with ``p2pwall_class`` set, so observers can filter by class, and shows its
class in the log's system field: ``[p2pwall c] client 198.18.1.10 identified: ...``. Lines to
stderr start with their time in ISO 8601 UTC (``2026-12-01T02:00:00Z``), the same on every
machine; syslog stamps its own.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from functools import partial
from typing import TextIO

from twisted.logger import (
    FileLogObserver,
    LegacyLogObserverWrapper,
    Logger,
    formatEventAsClassicLogText,
    globalLogPublisher,
)
from zope.interface import implementer

from .interfaces import IEventSink
from .packet import Packet, endpoint_text, mac_text, proto_name
from .timefmt import iso

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

DEBUG_CLASSES = {
    "A": "everything (same as daDthpl)",
    "-": "nothing",
    "d": "DNS questions",
    "a": "DNS answers",
    "D": "all DNS packet information",
    "t": "time locks",
    "h": "FastTrack HTTP headers",
    "p": "FastTrack probe events",
    "l": "event-class messages on the daemon log too",
}


def parse_classes(text: str, known: dict[str, str], what: str) -> frozenset[str]:
    """Validate a class string such as ``"pc"``; raise ``ValueError`` naming bad letters."""
    bad = sorted(set(text) - set(known))
    if bad:
        raise ValueError(
            f"unknown {what} class(es) {''.join(bad)!r}; known: {''.join(sorted(known))}"
        )
    classes = frozenset(text) - {"-"}
    if "A" in classes:
        classes = frozenset("daDthpl")
    return classes


Observer = Callable[[dict], None]


def syslog_observer(prefix: str = "p2pwall") -> Observer:
    from twisted.python.syslog import SyslogObserver

    return LegacyLogObserverWrapper(SyslogObserver(prefix).emit)


def stderr_observer(stream: TextIO | None = None) -> Observer:
    """Event lines on ``stream`` (stderr), each stamped with its time in ISO 8601 UTC."""
    return FileLogObserver(
        stream or sys.stderr, partial(formatEventAsClassicLogText, formatTime=iso)
    )


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
    ) -> None:
        self._syslog = frozenset(syslog)
        self._stderr = frozenset(stderr)
        self._debug = frozenset(debug)
        self._to_daemon_log = "l" in self._debug
        self._mac = "m" in self._syslog | self._stderr
        self._enabled = (self._syslog | self._stderr) - {"m"}
        self._syslog_target = syslog_target or (syslog_observer() if self._syslog else None)
        self._stderr_target = stderr_target or (stderr_observer() if self._stderr else None)
        self._daemon_log = daemon_log
        self._log = Logger(namespace="p2pwall.events", observer=self._route)

    @property
    def wants_mac(self) -> bool:
        """``m``: the reader should fetch each packet's MAC address for the messages."""
        return self._mac

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
        fmt = "{verdict} {proto} {src} -> {dst} ({reason})"
        fields = {
            "verdict": verdict or ("dropped" if cls.islower() else "accepted"),
            "proto": proto_name(packet.proto),
            "src": endpoint_text(packet.src, packet.sport),
            "dst": endpoint_text(packet.dst, packet.dport),
            "reason": reason,
        }
        if self._mac and packet.mac:
            fmt += " mac={mac}"
            fields["mac"] = mac_text(packet.mac)
        self.event(cls, fmt, **fields)

    def debug(self, cls: str, fmt: str, **fields: object) -> None:
        if cls in self._debug:
            self._log.debug(
                fmt, p2pwall_class=cls, p2pwall_debug=True, log_system=f"p2pwall debug {cls}",
                **fields,
            )  # fmt: skip

    def _route(self, event: dict) -> None:
        if event["p2pwall_debug"]:
            self._daemon_log(event)
            return
        cls = event["p2pwall_class"]
        if cls in self._syslog and self._syslog_target is not None:
            self._syslog_target(event)
        if cls in self._stderr and self._stderr_target is not None:
            self._stderr_target(event)
        if self._to_daemon_log:
            self._daemon_log(event)
