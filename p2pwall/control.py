"""The control port's line protocol: connections, their limits, and listening.

Why apart from the commands (``commands.py``): what a connection needs (lines of at most 1,024
bytes, replies in command order while slow work runs off the reactor thread, backpressure from
a client that does not read, a cap on connections, an idle timeout, a 0600 unix socket and
one-line start errors) is the same whatever the commands do. Admins use ``nc``, ``socat``,
``telnet`` or ``p2pwall-ctl``; the grammar is documented in ``docs/control.md``.
"""

from __future__ import annotations

from pathlib import Path

from twisted.application.service import Service
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import (
    IHalfCloseableProtocol,
    IListeningPort,
    IReactorTime,
    IStreamServerEndpoint,
)
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols.basic import LineReceiver
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure
from zope.interface import implementer

from .commands import Controller, Reply, rendered
from .errors import StartError

log = Logger()

# Connections served at once; the next one gets ``ERR too many connections``. Each holds a
# protocol and its buffers: a local program opening connections in a loop is bounded.
MAX_CONNECTIONS = 32
# Seconds a connection may stay without sending a line before it is closed.
IDLE_TIMEOUT = 300.0
# A unix socket's mode when the endpoint names none: only root (the daemon's user) connects.
UNIX_MODE = "600"


def peer_text(address: object) -> str:
    """A connection's remote end for the log: ``host:port``, ``[v6]:port`` or ``unix``."""
    if isinstance(address, IPv6Address):
        return f"[{address.host}]:{address.port}"
    if isinstance(address, IPv4Address):
        return f"{address.host}:{address.port}"
    return "unix"


@implementer(IHalfCloseableProtocol)
class ControlProtocol(LineReceiver, TimeoutMixin):
    """One control connection: ``\\n``-terminated lines (a trailing ``\\r`` is dropped).

    Beyond the factory's ``max_connections`` a connection gets one ``ERR`` line and is
    closed; a connection that sends no line for ``idle_timeout`` seconds is closed."""

    delimiter = b"\n"
    MAX_LENGTH = 1024
    factory: ControlFactory

    def connectionMade(self) -> None:
        self.peer = peer_text(self.transport.getPeer())
        self._working = False  # a reply is being worked on off the reactor thread
        self._write_paused = False  # the transport's buffer is full
        self._client_done = False  # the client half-closed
        if not self.factory.admit(self):
            self._log(
                "<connection>", f"ERR too many connections (max {self.factory.max_connections})"
            )
            self.transport.write(b"ERR too many connections\n")
            super().pauseProducing()  # nothing it sends is read
            self.transport.loseConnection()
            return
        # Backpressure: a client that sends commands but does not read the replies fills the
        # transport's buffer; the transport then pauses us (LineReceiver stops reading lines)
        # instead of the daemon's memory growing without end.
        self.transport.registerProducer(self, True)
        self.callLater = self.factory.clock.callLater
        self.setTimeout(self.factory.idle_timeout)

    def connectionLost(self, reason: Failure) -> None:
        self.setTimeout(None)
        self.factory.release(self)
        super().connectionLost(reason)

    def timeoutConnection(self) -> None:
        """No line for ``idle_timeout`` seconds: say so and close. A reply still worked on
        (``dump-blocks``) is not idleness; a client that does not read is cut off at once, as
        a polite close would wait for its full buffer to drain."""
        if self._working:
            self.setTimeout(self.factory.idle_timeout)
            return
        reply = f"ERR idle for {self.factory.idle_timeout:.0f} s, closing"
        self._log("<idle>", reply)
        if self._write_paused:
            self.transport.abortConnection()
            return
        self.transport.write(rendered([reply]))
        self.transport.loseConnection()

    def lineReceived(self, line: bytes) -> None:
        self.resetTimeout()
        line = line.removesuffix(b"\r")
        try:
            text = line.decode("ascii")
        except UnicodeDecodeError:
            text = None
        if text is None or not text.replace("\t", " ").isprintable():
            self._answer(f"<{len(line)} bytes, not text>", Reply.error("not a text line"))
        elif text.strip():
            self._answer(text, self.factory.controller.execute(text))

    def readConnectionLost(self) -> None:
        """The client is done sending (``echo stats | nc -N``): answer everything it sent,
        then close. Without this a half-close would drop the connection with the answers
        still unsent."""
        self._client_done = True
        self._close_when_answered()

    def writeConnectionLost(self) -> None:
        """Nothing to do: the client stopped reading, we just stop being heard."""

    def lineLengthExceeded(self, line: bytes) -> None:
        reply = Reply(f"ERR line too long (max {self.MAX_LENGTH} bytes)", close=True)
        self._answer(f"<{len(line)} bytes, too long>", reply)

    def pauseProducing(self) -> None:
        """The transport's buffer is full: read no more commands until it drains."""
        self._write_paused = True
        super().pauseProducing()

    def resumeProducing(self) -> None:
        self._write_paused = False
        self._read_on()

    def _answer(self, command: str, reply: Reply | Deferred[Reply]) -> None:
        """Commands run one at a time, so replies leave in command order: while a reply is
        worked on off the reactor thread (``dump-blocks``), no further line is read."""
        if not isinstance(reply, Deferred):
            self._write_guarded(reply, command)
            return
        self._working = True
        super().pauseProducing()
        reply.addErrback(self._internal_error, command)
        reply.addCallback(self._write_guarded, command)
        reply.addCallback(self._worked)

    def _worked(self, _: object) -> None:
        self._working = False
        self._read_on()

    def _read_on(self) -> None:
        """Read the next commands (those buffered first), unless something still holds us."""
        if self._working or self._write_paused or self.transport.disconnecting:
            return
        super().resumeProducing()
        self._close_when_answered()

    def _close_when_answered(self) -> None:
        if self._client_done and not (self._working or self._write_paused):
            self.transport.loseConnection()

    def _internal_error(self, failure: Failure, command: str) -> Reply:
        log.failure("control command {command!r} failed", failure=failure, command=command)
        return Reply.error("internal error (see the daemon log)")

    def _write_guarded(self, reply: Reply, command: str) -> None:
        try:
            self._write(reply, command)
        except Exception:
            log.failure("writing the reply to {command!r} failed", command=command)

    def _write(self, reply: Reply, command: str) -> None:
        if reply.body:
            self.transport.write(reply.body)
        self.transport.write(rendered([*reply.lines, reply.final]))
        self._log(command, reply.final)
        if reply.close:
            self.transport.loseConnection()

    def _log(self, command: str, reply: str) -> None:
        self.factory.controller.engine.events.event(
            "x",
            "control {peer}: {command} -> {reply}",
            peer=self.peer,
            command=command,
            reply=reply,
        )


class ControlFactory(Factory):
    """Serves the control port: each connection's lines go to ``controller``. At most
    ``max_connections`` are served at once, each closed after ``idle_timeout`` seconds without
    a line, timed on ``clock`` (the engine's by default)."""

    protocol = ControlProtocol
    noisy = False

    def __init__(
        self,
        controller: Controller,
        max_connections: int = MAX_CONNECTIONS,
        idle_timeout: float = IDLE_TIMEOUT,
        clock: IReactorTime | None = None,
    ) -> None:
        self.controller = controller
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.clock = clock if clock is not None else controller.engine.clock
        self.connections: set[ControlProtocol] = set()

    def admit(self, protocol: ControlProtocol) -> bool:
        """Count ``protocol`` in, unless ``max_connections`` are served already."""
        if len(self.connections) >= self.max_connections:
            return False
        self.connections.add(protocol)
        return True

    def release(self, protocol: ControlProtocol) -> None:
        self.connections.discard(protocol)


def _split_fields(description: str) -> list[str]:
    """An endpoint string's ``:``-separated fields, as Twisted splits them (``\\`` escapes)."""
    fields, field, escaped = [], "", False
    for char in description:
        if escaped:
            field += char
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ":":
            fields.append(field)
            field = ""
        else:
            field += char
    return [*fields, field]


def _unix_path(description: str) -> str | None:
    """The socket path of a ``unix:`` endpoint string; None for any other kind."""
    kind, *fields = _split_fields(description)
    if kind != "unix":
        return None
    options = dict(field.split("=", 1) for field in fields if "=" in field)
    positional = [field for field in fields if "=" not in field]
    return options.get("address", positional[0] if positional else None)


def control_endpoint(description: str) -> str:
    """``description`` with ``mode=600`` added to a ``unix:`` endpoint that gives no mode:
    Twisted's default, 0666, lets every local user block and unblock peers."""
    kind, *fields = _split_fields(description)
    if kind != "unix" or any(field.startswith("mode=") for field in fields):
        return description
    return f"{description}:mode={UNIX_MODE}"


def _reason(error: BaseException) -> str:
    """The words of a listening error, without Twisted's "Couldn't listen on ..." preamble."""
    if isinstance(error, CannotListenError):
        error = error.socketError
    if isinstance(error, OSError):
        return error.strerror or str(error)
    return str(error)


def listen_control(
    description: str, factory: Factory, reactor: object, what: str = "control port"
) -> IListeningPort:
    """Listen on the endpoint now (``control_endpoint`` applied). A bad endpoint, a missing
    socket directory or a busy port is a ``StartError`` with one line naming ``what``."""
    description = control_endpoint(description)
    where = f"{what} {description}"
    try:
        endpoint = serverFromString(reactor, description)
    except (ValueError, KeyError, TypeError) as error:
        raise StartError(f"{where}: bad endpoint: {error}") from None
    path = _unix_path(description)
    if path is not None and not Path(path).parent.is_dir():
        raise StartError(f"{where}: directory {Path(path).parent} does not exist")
    return listen_now(endpoint, factory, where)


def listen_now(endpoint: IStreamServerEndpoint, factory: Factory, where: str) -> IListeningPort:
    """``endpoint.listen(factory)``'s port, or a ``StartError`` naming ``where``: listening
    errors as one line, and an endpoint that would listen only later (twistd must know now
    whether the daemon runs). Any other failure is a bug and raised as it is."""
    outcome: list[IListeningPort | Failure] = []
    endpoint.listen(factory).addBoth(outcome.append)
    if not outcome:
        raise StartError(f"{where}: the endpoint does not listen at once")
    result = outcome[0]
    if isinstance(result, Failure):
        if not result.check(CannotListenError, OSError):
            result.raiseException()
        raise StartError(f"{where}: cannot listen: {_reason(result.value)}")
    return result


class ControlService(Service):
    """Listens on the control port from ``privilegedStartService`` (a socket in /run needs
    root), with ``listen_control``'s one-line errors; stops listening at stop."""

    what = "control port"

    def __init__(self, description: str, factory: Factory, reactor: object) -> None:
        self.description = description
        self.factory = factory
        self.reactor = reactor
        self.port: IListeningPort | None = None

    def privilegedStartService(self) -> None:
        self.port = listen_control(self.description, self.factory, self.reactor, self.what)
        super().privilegedStartService()

    def startService(self) -> None:
        if self.port is None:
            self.privilegedStartService()
        super().startService()

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        port, self.port = self.port, None
        return port.stopListening() if port is not None else None
