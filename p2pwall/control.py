"""The control port: ftwall's external commands, and more, as a text line protocol.

Why lines: admins use ``nc``, ``socat``, ``telnet`` or ``p2pwall-ctl``, and scripts need to
know where a reply ends without knowing the command, so every reply ends with exactly one
``OK ...`` or ``ERR <reason>`` line and data lines never start with either word. One table,
``COMMANDS``, drives dispatch, arity checks and ``help``. Commands change state only through
the engine's public methods, as packets do. The grammar is documented in ``docs/control.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from twisted.application.service import Service
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, maybeDeferred
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

from . import explain
from .allow import OPTION, parse_network
from .detectors.wsx import parse_endpoint
from .engine import Engine
from .errors import StartError
from .networks import Network
from .packet import addr_text, endpoint_text
from .store import HEADER, Snapshot, snapshot_lines, write_lines
from .tables import ANY_CLIENT, ANY_PORT
from .timefmt import iso, iso_or_dash

log = Logger()

PROC_QUEUE = "/proc/net/netfilter/nfnetlink_queue"

# Counters always shown by ``stats``, even at zero; detectors may add more to engine.stats.
STAT_COUNTERS = (
    "packets",
    "accept_tcp",
    "accept_udp",
    "drop_tcp",
    "drop_udp",
    "accept_all",
    "spoofs",
    "probes_sent",
    "probes_answered",
    "peers_learned",
    "clients_locked",
    "clients_released",
)
QUEUE_FIELDS = ("queue_total", "queue_dropped", "queue_user_dropped")
READER_FIELDS = (
    "reader_errors",
    "reader_undecoded",
    "reader_cut",
    "reader_enobufs",
    "reader_refused",
)

# Connections served at once; the next one gets ``ERR too many connections``. Each holds a
# protocol and its buffers: a local program opening connections in a loop is bounded.
MAX_CONNECTIONS = 32
# Seconds a connection may stay without sending a line before it is closed.
IDLE_TIMEOUT = 300.0
# A unix socket's mode when the endpoint names none: only root (the daemon's user) connects.
UNIX_MODE = "600"


class NameSet(Protocol):
    """Banned DNS names as the DNS detector keeps them; a plain ``set`` fits."""

    def __contains__(self, name: object) -> bool: ...
    def __iter__(self) -> Iterator[str]: ...
    def add(self, name: str) -> object: ...
    def discard(self, name: str) -> object: ...


class CommandError(Exception):
    """A command cannot be done; the message becomes the ``ERR`` line."""


@dataclass
class Reply:
    """Data lines, then one final ``OK``/``ERR`` line; ``close`` ends the connection. ``body``
    holds data lines already rendered (``rendered``), by work done off the reactor thread."""

    final: str
    lines: list[str] = field(default_factory=list)
    close: bool = False
    body: bytes = b""

    @classmethod
    def ok(cls, text: str, lines: Iterable[str] = (), close: bool = False) -> Reply:
        return cls(f"OK {text}", list(lines), close)

    @classmethod
    def error(cls, reason: str) -> Reply:
        return cls(f"ERR {reason}")


@dataclass(frozen=True)
class Command:
    """One row of the command table; ``args`` is the usage, ``[X]`` marking optional words."""

    name: str
    args: str
    help: str
    run: Callable[[Controller, list[str]], Reply]

    @property
    def usage(self) -> str:
        return f"{self.name} {self.args}".rstrip()

    @property
    def arity(self) -> tuple[int, int]:
        words = self.args.split()
        return sum(not word.startswith("[") for word in words), len(words)


def parse_queue_stats(text: str, queue: int) -> dict[str, int] | None:
    """Our queue's row of /proc/net/netfilter/nfnetlink_queue, or None if it is absent.

    Row: queue, peer portid, queue_total, copy mode, copy range, queue_dropped (queue full),
    queue_user_dropped (netlink socket buffer full), id sequence, 1.
    """
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 7 and fields[0] == str(queue):
            try:
                values = [int(fields[i]) for i in (2, 5, 6)]
            except ValueError:
                return None
            return dict(zip(QUEUE_FIELDS, values, strict=True))
    return None


def read_queue_stats(queue: int, path: str = PROC_QUEUE) -> dict[str, int] | None:
    try:
        with open(path, encoding="ascii", errors="replace") as handle:
            return parse_queue_stats(handle.read(), queue)
    except OSError:
        return None


def _address(text: str, what: str) -> tuple[bytes, int | None]:
    """An IP address with an optional port (``ip``, ``ipv4:port``, ``[ipv6]:port``)."""
    endpoint = parse_endpoint(text)
    if endpoint is None or isinstance(endpoint[0], str):
        raise CommandError(
            f"bad {what} {text[:80]!r}: expected IP, IPv4:PORT or [IPv6]:PORT, PORT 1-65535"
        )
    return endpoint[0].packed, endpoint[1]


def _host(text: str, what: str) -> bytes:
    """An IP address without a port."""
    addr, port = _address(text, what)
    if port is not None:
        raise CommandError(f"bad {what} {text[:80]!r}: an address, without a port")
    return addr


def _network(text: str) -> Network:
    try:
        return parse_network(text)
    except ValueError as error:
        raise CommandError(str(error)) from None


def block_listing(snapshot: Snapshot) -> list[str]:
    """``dump-blocks`` lines: the store file's, then the first and last sighting in ISO 8601
    UTC (after the optional name: a name never holds ``=``)."""
    lines = snapshot_lines(snapshot)
    return [
        f"{line} first-seen={iso(block.first)} last-seen={iso(block.seen)}"
        for line, block in zip(lines, snapshot[1], strict=True)
    ]


def _name(text: str) -> str:
    endpoint = parse_endpoint(text)
    if endpoint is None or not isinstance(endpoint[0], str) or endpoint[1] is not None:
        raise CommandError(f"bad DNS name {text[:80]!r}: expected a host name like a.example.com")
    return endpoint[0]


def _switch(name: str, text: str) -> bool:
    if text not in ("0", "1"):
        raise CommandError(f"{name} takes 0 or 1")
    return text == "1"


def rendered(lines: Iterable[str]) -> bytes:
    """Reply lines as they go on the wire."""
    return "".join(line + "\n" for line in lines).encode("utf-8", "replace")


def _write_error(path: Path, error: OSError) -> str:
    """The ``ERR`` text for a dump that could not be written."""
    return f"cannot write {path}: {error.strerror or error}"


def _describe(peer: bytes, port: int, client: bytes) -> str:
    target = endpoint_text(peer, port)
    return f"{target} for client {addr_text(client)}" if client else target


Runner = Callable[..., "Deferred[Any]"]


class Controller:
    """Runs command lines against the engine; knows nothing of connections.

    ``run(work, *args)`` runs slow work (formatting and writing ``dump-blocks``, seconds at a
    million blocks) off the reactor thread: the daemon passes a thread-pool runner, so packets
    keep their verdicts meanwhile; by default the work runs right away.
    """

    def __init__(
        self,
        engine: Engine,
        names: NameSet | None = None,
        reload: Callable[[], list[str] | None] | None = None,
        queue_stats: Callable[[], Mapping[str, int] | None] | None = None,
        dump_dir: str | Path | None = None,
        reader_stats: Callable[[], Mapping[str, int] | None] | None = None,
        run: Runner = maybeDeferred,
    ) -> None:
        self.engine = engine
        self.run = run
        self.names = names
        self.reload_patterns = reload
        self.queue_stats = queue_stats
        self.reader_stats = reader_stats
        self.dump_dir = Path(dump_dir) if dump_dir else None

    def execute(self, line: str) -> Reply | Deferred[Reply]:
        """Run one command line; every failure becomes an ``ERR`` reply, never an exception."""
        word, *args = line.split()
        command = COMMANDS_BY_NAME.get(word.lower())
        if command is None:
            return Reply.error(f"unknown command {word[:40]!r}, try help")
        low, high = command.arity
        if not low <= len(args) <= high:
            return Reply.error(f"usage: {command.usage}")
        try:
            return command.run(self, args)
        except CommandError as error:
            return Reply.error(str(error))
        except Exception:
            log.failure("control command {line!r} failed", line=line)
            return Reply.error("internal error (see the daemon log)")

    # Blocks

    def _target(self, args: list[str]) -> tuple[bytes, int, bytes]:
        peer, port = _address(args[0], "peer")
        client = ANY_CLIENT
        if len(args) > 1:
            client, client_port = _address(args[1], "client")
            if client_port is not None:
                raise CommandError(f"bad client {args[1][:80]!r}: an address, without a port")
            if len(client) != len(peer):
                raise CommandError("peer and client must both be IPv4 or both IPv6")
        return peer, port or ANY_PORT, client

    def block(self, args: list[str]) -> Reply:
        key = self._target(args)
        if self.engine.block(*key):
            return Reply.ok(f"blocked {_describe(*key)}")
        if key in self.engine.blocks:
            return Reply.ok(f"already blocked {_describe(*key)}")
        raise CommandError(f"block table full ({self.engine.blocks.cap} manual blocks)")

    def unblock(self, args: list[str]) -> Reply:
        key = self._target(args)
        if not self.engine.unblock(*key):
            peer, port, client = key
            hint = ""
            if not port and not client and self.engine.clients.get(peer) is not None:
                hint = f" ({addr_text(peer)} is a locked client: unlock frees it)"
            raise CommandError(f"not blocked: {_describe(*key)}{hint}")
        return Reply.ok(f"unblocked {_describe(*key)}")

    def unlock(self, args: list[str]) -> Reply:
        addr = _host(args[0], "client")
        if not self.engine.unlock(addr):
            raise CommandError(f"not locked: {addr_text(addr)}")
        return Reply.ok(f"unlocked {addr_text(addr)}")

    def explain(self, args: list[str]) -> Deferred[Reply]:
        """What the daemon holds about an address; the blocks are found in a snapshot of the
        table by ``run`` (a scan), the rest now."""
        engine = self.engine
        addr = _host(args[0], "address")
        state, lock_lines = explain.client_lines(engine, addr)
        known = addr in engine.green or bool(lock_lines)
        head = [explain.address_line(engine, addr), *lock_lines]
        snapshot = engine.blocks.snapshot()

        def reply(blocks: list[str]) -> Reply:
            summary = f"{state}, {len(blocks)} blocks" if known else f"{len(blocks)} blocks"
            return Reply.ok(f"{addr_text(addr)}: {summary}", [*head, *blocks])

        return self.run(explain.blocks_lines, snapshot, addr).addCallback(reply)

    def dump_blocks(self, args: list[str]) -> Deferred[Reply]:
        """The table as it is now (a snapshot: two list copies), formatted by ``run``."""
        snapshot = self.engine.blocks.snapshot()
        if not args:

            def render() -> tuple[int, bytes]:
                lines = block_listing(snapshot)
                return len(lines), rendered(lines)

            done = self.run(render)
            return done.addCallback(lambda result: Reply(f"OK {result[0]} blocks", body=result[1]))
        path = self._dump_path(args[0])

        def write() -> int:
            lines = snapshot_lines(snapshot)
            write_lines(path, lines, HEADER)
            return len(lines)

        def failed(failure: Failure) -> Reply:
            # Anything but an OSError is a bug: it goes on to the protocol's internal error.
            failure.trap(OSError)
            return Reply.error(_write_error(path, failure.value))

        done = self.run(write)
        return done.addCallbacks(
            lambda count: Reply.ok(f"{count} blocks written to {path}"), failed
        )

    # DNS names

    def _name_set(self) -> NameSet:
        if self.names is None:
            raise CommandError("DNS name banning is not available")
        return self.names

    def ban_dns_name(self, args: list[str]) -> Reply:
        names, name = self._name_set(), _name(args[0])
        if name in names:
            return Reply.ok(f"already banned {name}")
        names.add(name)
        return Reply.ok(f"banned {name}")

    def unban_dns_name(self, args: list[str]) -> Reply:
        names, name = self._name_set(), _name(args[0])
        if name not in names:
            raise CommandError(f"not banned: {name}")
        names.discard(name)
        return Reply.ok(f"unbanned {name}")

    def dump_dns_names(self, args: list[str]) -> Reply:
        lines = sorted(self._name_set())
        if not args:
            return Reply.ok(f"{len(lines)} names", lines)
        path = self._dump_path(args[0])
        try:
            write_lines(path, lines)
        except OSError as error:
            raise CommandError(_write_error(path, error)) from None
        return Reply.ok(f"{len(lines)} names written to {path}")

    def _dump_path(self, name: str) -> Path:
        """Dumps go into the dump directory only: a plain name, replaced atomically by rename,
        which replaces a symlink planted there instead of following it."""
        if self.dump_dir is None:
            raise CommandError("no dump directory configured (--dump-dir)")
        if "/" in name or ".." in name or name.startswith("."):
            raise CommandError(f"bad file name {name[:80]!r}: a plain name, no '/' or '..'")
        return self.dump_dir / name

    # Modes and state

    def accept_all(self, args: list[str]) -> Reply:
        if args:
            self.engine.accept_all = _switch("accept-all", args[0])
        return Reply.ok(f"accept-all {int(self.engine.accept_all)}")

    def dry_run(self, args: list[str]) -> Reply:
        if args:
            self.engine.dry_run = _switch("dry-run", args[0])
        return Reply.ok(f"dry-run {int(self.engine.dry_run)}")

    def allow(self, args: list[str]) -> Reply:
        allowed = self.engine.allowed
        if not args:
            lines = [f"{network} {origin}" for network, origin in allowed]
            return Reply.ok(f"{len(lines)} networks", lines)
        network = _network(args[0])
        new, released = self.engine.allow(network)
        if not new:
            return Reply.ok(f"already allowed {network}")
        return Reply.ok(f"allowed {network}, {released} clients released")

    def disallow(self, args: list[str]) -> Reply:
        network = _network(args[0])
        origin = self.engine.allowed.remove(network)
        if origin is None:
            raise CommandError(f"not allowed: {network}")
        again = " (given by --allow: allowed again at restart)" if origin == OPTION else ""
        return Reply.ok(f"disallowed {network}{again}")

    def clients(self, args: list[str]) -> Reply:
        now = self.engine.clock.seconds()
        lines = []
        for client in sorted(self.engine.clients, key=lambda c: (len(c.addr), c.addr)):
            last_probe = "-" if client.last_probe is None else f"{client.last_probe:.0f}"
            lines.append(
                f"{addr_text(client.addr)} {'locked' if client.until > now else 'expired'}"
                f" left={max(0.0, client.until - now):.0f} since={client.since:.0f}"
                f" last-probe={last_probe} probes-sent={client.probes_sent}"
                f" probes-answered={client.probes_answered}"
                f" since-utc={iso(client.since)} until-utc={iso(client.until)}"
                f" last-probe-utc={iso_or_dash(client.last_probe)}"
            )
        return Reply.ok(f"{len(lines)} clients", lines)

    def stats(self, args: list[str]) -> Reply:
        engine = self.engine
        counters = dict.fromkeys(STAT_COUNTERS, 0)
        counters.update(sorted(engine.stats.items()))
        counters["packets"] = engine.packets
        counters.update(
            accept_all_mode=int(engine.accept_all),
            dry_run_mode=int(engine.dry_run),
            allowed_networks=len(engine.allowed),
            blocks=len(engine.blocks),
            blocks_cap=engine.blocks.cap,
            blocks_evicted=engine.blocks.evicted,
            clients=len(engine.clients),
            clients_cap=engine.clients.cap,
            clients_evicted=engine.clients.evicted,
        )
        queue = self.queue_stats() if self.queue_stats else None
        reader = self.reader_stats() if self.reader_stats else None
        lines = [f"{key} {value}" for key, value in counters.items()]
        lines += [f"{key} {queue[key] if queue else '-'}" for key in QUEUE_FIELDS]
        lines += [f"{key} {reader[key] if reader else '-'}" for key in READER_FIELDS]
        return Reply.ok("stats", lines)

    def reload(self, args: list[str]) -> Reply:
        problems = self.reload_patterns() if self.reload_patterns else None
        if problems is None:
            raise CommandError("no patterns file configured")
        lines = ["problem " + " ".join(problem.split()) for problem in problems]
        return Reply.ok(f"reloaded, {len(lines)} problems", lines)

    # The session

    def help(self, args: list[str]) -> Reply:
        rows = COMMANDS
        if args:
            command = COMMANDS_BY_NAME.get(args[0].lower())
            if command is None:
                raise CommandError(f"unknown command {args[0][:40]!r}")
            rows = (command,)
        return Reply.ok(f"{len(rows)} commands", (f"{c.usage:<30} {c.help}" for c in rows))

    def ping(self, args: list[str]) -> Reply:
        return Reply.ok("pong")

    def quit(self, args: list[str]) -> Reply:
        return Reply.ok("bye", close=True)


COMMANDS = (
    Command("block", "PEER[:PORT] [CLIENT]", "block a peer (for one client)", Controller.block),
    Command("unblock", "PEER[:PORT] [CLIENT]", "remove exactly that block", Controller.unblock),
    Command("dump-blocks", "[FILE]", "list blocks, or write them to FILE", Controller.dump_blocks),
    Command(
        "ban-dns-name", "NAME", "learn the addresses DNS gives for NAME", Controller.ban_dns_name
    ),
    Command("unban-dns-name", "NAME", "stop learning NAME's addresses", Controller.unban_dns_name),
    Command(
        "dump-dns-names", "[FILE]", "list banned names, or write to FILE", Controller.dump_dns_names
    ),
    Command("accept-all", "[0|1]", "show or set accept-everything mode", Controller.accept_all),
    Command("dry-run", "[0|1]", "show or set decide-but-drop-nothing mode", Controller.dry_run),
    Command("clients", "", "list P2P clients and their time locks", Controller.clients),
    Command("unlock", "CLIENT", "release a locked client now", Controller.unlock),
    Command("explain", "ADDR", "why a host is locked, what blocks an address", Controller.explain),
    Command("allow", "[CIDR]", "never lock or block CIDR (list without one)", Controller.allow),
    Command("disallow", "CIDR", "stop allowing exactly CIDR", Controller.disallow),
    Command("stats", "", "counters, table sizes and kernel queue drops", Controller.stats),
    Command("reload", "", "re-read the DNS patterns and .wsx files", Controller.reload),
    Command("help", "[COMMAND]", "list commands", Controller.help),
    Command("ping", "", "check the daemon answers", Controller.ping),
    Command("quit", "", "close this connection", Controller.quit),
)
COMMANDS_BY_NAME = {command.name: command for command in COMMANDS}


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
    """Serves the control port; ``names``, ``reload``, ``queue_stats``, ``dump_dir`` and
    ``reader_stats`` are optional features (see ``Controller``): without one its commands answer
    ``ERR`` (or ``stats`` shows ``-``). At most ``max_connections`` are served at once, each
    closed after ``idle_timeout`` seconds without a line, timed on ``clock`` (the engine's by
    default)."""

    protocol = ControlProtocol
    noisy = False

    def __init__(
        self,
        engine: Engine,
        max_connections: int = MAX_CONNECTIONS,
        idle_timeout: float = IDLE_TIMEOUT,
        clock: IReactorTime | None = None,
        **features: Any,
    ) -> None:
        self.controller = Controller(engine, **features)
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.clock = clock if clock is not None else engine.clock
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


def listen_control(description: str, factory: Factory, reactor: object) -> IListeningPort:
    """Listen on the control endpoint now (``control_endpoint`` applied). A bad endpoint, a
    missing socket directory or a busy port is a ``StartError`` with one line."""
    description = control_endpoint(description)
    where = f"control port {description}"
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

    def __init__(self, description: str, factory: Factory, reactor: object) -> None:
        self.description = description
        self.factory = factory
        self.reactor = reactor
        self.port: IListeningPort | None = None

    def privilegedStartService(self) -> None:
        self.port = listen_control(self.description, self.factory, self.reactor)
        super().privilegedStartService()

    def startService(self) -> None:
        if self.port is None:
            self.privilegedStartService()
        super().startService()

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        port, self.port = self.port, None
        return port.stopListening() if port is not None else None
