"""p2pwall-ctl: send one command to the daemon's control port and print the reply.

Made for scripts: the exit status is 0 when the reply ends in ``OK``, 1 when it ends in
``ERR``, and 2 when no reply could be had (cannot connect, connection closed, timeout, bad
endpoint or arguments), with the reason on stderr. ``ControlClient`` is also what
``p2pwall-napigator`` talks through.
"""

from __future__ import annotations

import argparse
import os
import stat
import sys
from collections import deque
from dataclasses import dataclass
from typing import TextIO

from twisted.internet import defer
from twisted.internet.endpoints import clientFromString, connectProtocol
from twisted.internet.error import ConnectError, ConnectionClosed
from twisted.internet.interfaces import IReactorCore
from twisted.internet.protocol import connectionDone
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure

from ..version import version_line
from . import react_main

# A client endpoint string; the daemon's --control default, tcp:4120:interface=127.0.0.1,
# is the server form of the same port.
DEFAULT_ENDPOINT = "tcp:127.0.0.1:4120"
# Where the systemd unit (packaging/) puts the control socket.
SERVICE_SOCKET = "/run/p2pwall/control.sock"


def default_endpoint(service_socket: str = SERVICE_SOCKET) -> str:
    """``$P2PWALL_CONTROL``, else the service's socket when it exists, else the daemon's
    default TCP port: ``p2pwall-ctl stats`` works as such on a gateway that runs the unit."""
    given = os.environ.get("P2PWALL_CONTROL")
    if given:
        return given
    if stat.S_ISSOCK(_mode(service_socket)):
        return f"unix:{service_socket}"
    return DEFAULT_ENDPOINT


def _mode(path: str) -> int:
    try:
        return os.stat(path).st_mode
    except OSError:
        return 0


EXIT_OK, EXIT_ERR, EXIT_NO_REPLY = 0, 1, 2
FINAL_WORDS = ("OK", "ERR")


class ControlError(Exception):
    """No reply could be had; the message says why, for a person."""


@dataclass(frozen=True)
class ControlReply:
    lines: list[str]
    final: str

    @property
    def ok(self) -> bool:
        return self.final.split(" ", 1)[0] == "OK"


class ControlClient(LineReceiver):
    """Sends command lines and pairs each with its reply, in order, so commands may be
    pipelined: a reply is every line up to and including one starting with OK or ERR."""

    delimiter = b"\n"
    MAX_LENGTH = 1 << 20

    def __init__(self) -> None:
        self._waiting: deque[defer.Deferred[ControlReply]] = deque()
        self._lines: list[str] = []

    def command(self, line: str) -> defer.Deferred[ControlReply]:
        waiting: defer.Deferred[ControlReply] = defer.Deferred()
        self._waiting.append(waiting)
        self.transport.write(line.encode("utf-8") + b"\n")
        return waiting

    def lineReceived(self, line: bytes) -> None:
        text = line.removesuffix(b"\r").decode("utf-8", "replace")
        if text.split(" ", 1)[0] not in FINAL_WORDS:
            self._lines.append(text)
            return
        lines, self._lines = self._lines, []
        if self._waiting:
            self._waiting.popleft().callback(ControlReply(lines, text))

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        waiting, self._waiting = self._waiting, deque()
        for pending in waiting:
            pending.errback(reason)


async def connect(reactor: IReactorCore, endpoint: str, timeout: float) -> ControlClient:
    try:
        client_endpoint = clientFromString(reactor, endpoint)
    except (ValueError, TypeError, KeyError) as error:
        raise ControlError(
            f"bad endpoint {endpoint!r} ({error}); use tcp:HOST:PORT, tcp6:host=\\:\\:1:port=PORT "
            "or unix:PATH"
        ) from None
    connecting = connectProtocol(client_endpoint, ControlClient())
    connecting.addTimeout(timeout, reactor)
    try:
        return await connecting
    except (ConnectError, OSError, defer.TimeoutError) as error:
        reason = f"timed out after {timeout:g}s" if isinstance(error, defer.TimeoutError) else error
        raise ControlError(
            f"cannot connect to {endpoint}: {reason} (is p2pwall running with this --control?)"
        ) from None


async def exchange(
    reactor: IReactorCore, client: ControlClient, line: str, timeout: float
) -> ControlReply:
    """One command's reply; ``ControlError`` if the connection ends or stays silent first."""
    waiting = client.command(line)
    waiting.addTimeout(timeout, reactor)
    try:
        return await waiting
    except defer.TimeoutError:
        raise ControlError(f"no reply to {line!r} within {timeout:g}s") from None
    except ConnectionClosed:
        raise ControlError(f"connection closed before the reply to {line!r}") from None


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="p2pwall-ctl",
        description="Send one command to a running p2pwall and print its reply.",
        epilog="Exit status: 0 OK, 1 ERR, 2 no reply (cannot connect, timeout, bad arguments). "
        "'p2pwall-ctl help' lists the commands.",
    )
    parser.add_argument("--version", action="version", version=version_line("p2pwall-ctl"))
    parser.add_argument(
        "--control",
        default=default_endpoint(),
        metavar="ENDPOINT",
        help="Twisted client endpoint: tcp:HOST:PORT, tcp:host=H:port=P, unix:PATH "
        f"(default $P2PWALL_CONTROL, else unix:{SERVICE_SOCKET} if it exists, else "
        f"{DEFAULT_ENDPOINT})",
    )
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds (default 10)")
    parser.add_argument("command", nargs="+", help="the command and its arguments")
    args = parser.parse_args(argv)
    args.line = " ".join(args.command)
    if "\n" in args.line or "\r" in args.line:
        parser.error("the command must be one line")
    return args


async def ctl(
    reactor: IReactorCore,
    args: argparse.Namespace,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int:
    """Send ``args.line``, print the reply, return the exit status."""
    try:
        client = await connect(reactor, args.control, args.timeout)
        try:
            reply = await exchange(reactor, client, args.line, args.timeout)
        finally:
            client.transport.loseConnection()
    except ControlError as error:
        print(f"p2pwall-ctl: {error}", file=err)
        return EXIT_NO_REPLY
    out.write("".join(line + "\n" for line in [*reply.lines, reply.final]))
    return EXIT_OK if reply.ok else EXIT_ERR


def main(argv: list[str] | None = None) -> None:
    react_main(parse_args, ctl, argv)


if __name__ == "__main__":
    main()
