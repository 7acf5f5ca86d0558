"""The control port's commands: ftwall's external commands, and more, as one table.

Why a table: ``COMMANDS`` drives dispatch, arity checks and ``help``, so a command is one row
and one ``Controller`` method, and ``help`` cannot drift from what runs. Every reply ends with
exactly one ``OK ...`` or ``ERR <reason>`` line and data lines never start with either word, so
scripts know where a reply ends without knowing the command. Commands change state only
through the engine's public methods, as packets do. The ``Controller`` knows nothing of
connections: ``control.py`` carries its lines. The grammar is in ``docs/control.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from . import __version__, explain
from .allow import OPTION, parse_network
from .endpoints import parse_endpoint
from .engine import Engine
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
Counters = Callable[[], Mapping[str, int] | None]


class Controller:
    """Runs command lines against the engine; knows nothing of connections.

    Each feature is optional, and a command whose feature is missing answers ``ERR`` (``stats``
    shows ``-``): ``names``, the banned DNS names; ``reload``, re-reads the DNS patterns and
    returns their problems (``None``: no patterns file); ``queue_stats`` and ``reader_stats``,
    the kernel queue's and the queue reader's counters (``None`` while unknown); ``dump_dir``,
    where ``dump-blocks FILE`` and ``dump-dns-names FILE`` may write. ``run(work, *args)`` runs
    slow work (formatting and writing ``dump-blocks``, seconds at a million blocks) off the
    reactor thread: the daemon passes a thread-pool runner, so packets keep their verdicts
    meanwhile; by default the work runs right away.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        names: NameSet | None = None,
        reload: Callable[[], list[str] | None] | None = None,
        queue_stats: Counters | None = None,
        reader_stats: Counters | None = None,
        dump_dir: str | Path | None = None,
        run: Runner = maybeDeferred,
    ) -> None:
        self.engine = engine
        self.started = engine.clock.seconds()
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

        # Blocks of locking origins were learned from green hosts' packets: they have revealers.
        revealed = frozenset(engine.origins.locking)
        return self.run(explain.blocks_lines, snapshot, addr, revealed).addCallback(reply)

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
        uptime = int(engine.clock.seconds() - self.started)
        lines = [f"version {__version__}", f"uptime {uptime}"]
        lines += [f"{key} {value}" for key, value in counters.items()]
        lines += [f"{key} {queue[key] if queue else '-'}" for key in QUEUE_FIELDS]
        lines += [f"{key} {reader[key] if reader else '-'}" for key in READER_FIELDS]
        return Reply.ok("stats", lines)

    def reload(self, args: list[str]) -> Reply:
        problems = self.reload_patterns() if self.reload_patterns else None
        if problems is None:
            raise CommandError("nothing to reload (no patterns file, no kernel sets)")
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
    Command("reload", "", "re-read the DNS patterns, rewrite the kernel's sets", Controller.reload),
    Command("help", "[COMMAND]", "list commands", Controller.help),
    Command("ping", "", "check the daemon answers", Controller.ping),
    Command("quit", "", "close this connection", Controller.quit),
)
COMMANDS_BY_NAME = {command.name: command for command in COMMANDS}
