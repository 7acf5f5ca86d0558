"""A simulated FastTrack (Kazaa) client that behaves the way ftwall has to defeat.

It follows the three phases of the ftwall article, on a clock that ``--scale``
shrinks so tests can run it in seconds:

1. UDP flood (5 s at scale 1): 0x27 hellos to every cached peer, in batches of 10
   every 0.1 s, and again every 2 s to peers that have not answered. A 0x28 pong
   from a cached peer triggers a 0x2A follow-up and a TCP connect to that peer.
2. Parallel TCP (5 s): every 0.5 s, 8 connects (2 s timeout) to the cached peers
   mixed evenly with ``--hidden-peer`` addresses that were never pinged.
3. Serial TCP (10 s): one connect at a time, 3 s timeout, 0.2 s apart.

Peers are all IPv4 or all IPv6 (``[ip]:port``), and so is the client's socket.

Then it lingers ``--linger`` seconds (not scaled). All the while it answers any
0x27 hello on its own UDP port (ftwall's probe) with a 0x28 pong. ``--no-udp``
skips phase 1 and UDP entirely, and every TCP connection it makes carries a Kazaa
HTTP download request instead of a session start: the traffic ftwall's safety
net must catch.

A TCP connection that completes is a "breakthrough". Behind a working ftwall a
UDP-mode run has none. A ``--no-udp`` run has a few (the first batch of parallel
connects, whose GETs are what reveal it) but no successful download.

    python lab/ftclient.py --peers-file F [--hidden-peer IP:PORT ...] --scale 0.25 \\
        --linger 5 --report out.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import socket
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, TextIO

from twisted.internet import defer, error, protocol
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint, connectProtocol
from twisted.logger import (
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogBeginner,
    textFileLogObserver,
)
from twisted.python.failure import Failure

try:
    from lab import ftwire
except ImportError:  # run as a script: python lab/ftclient.py
    import ftwire  # type: ignore[no-redef]

Peer = tuple[str, int]

MAX_LINGER = 600.0
MAX_PEERS = 5000
MAX_IN_FLIGHT = 64
MAX_PROBES_KEPT = 1000
MIN_TIMEOUT = 0.2


@dataclass(frozen=True)
class Timing:
    """The client's time constants at scale 1, in seconds."""

    phase1: float = 5.0
    phase2: float = 5.0
    phase3: float = 10.0
    hello_gap: float = 0.1
    hello_round: float = 2.0
    connect_timeout: float = 2.0
    parallel_every: float = 0.5
    serial_timeout: float = 3.0
    serial_gap: float = 0.2
    reply_timeout: float = 2.0
    hello_batch: int = 10
    parallel_batch: int = 8

    def scaled(self, factor: float) -> Timing:
        """Every duration times ``factor``; timeouts never below MIN_TIMEOUT."""
        changes: dict[str, float] = {}
        for item in fields(self):
            value = getattr(self, item.name)
            if isinstance(value, float):
                value *= factor
                if item.name.endswith("timeout"):
                    value = max(value, MIN_TIMEOUT)
                changes[item.name] = value
        return replace(self, **changes)


@dataclass
class Report:
    """What the run did; written as JSON by ``--report``."""

    mode: str
    name: str
    enc: int
    own: str
    scale: float
    timing: dict[str, float]
    cache_size: int
    hidden_peers: int
    phases: list[dict[str, Any]] = field(default_factory=list)
    hellos_sent: int = 0
    pongs_received: int = 0
    pong2_received: int = 0
    pong_peers: int = 0
    followups_sent: int = 0
    probes_answered: int = 0
    probes: list[dict[str, Any]] = field(default_factory=list)
    connects_tried: dict[str, int] = field(default_factory=lambda: {"1": 0, "2": 0, "3": 0})
    connects_succeeded: dict[str, int] = field(default_factory=lambda: {"1": 0, "2": 0, "3": 0})
    connect_failures: dict[str, int] = field(default_factory=dict)
    breakthroughs: list[dict[str, Any]] = field(default_factory=list)
    downloads_tried: int = 0
    downloads_succeeded: int = 0
    inbound_tcp: int = 0
    duration: float = 0.0


@dataclass(frozen=True)
class Config:
    cache: list[Peer]
    hidden: list[Peer]
    name: str
    enc: int
    port: int
    bind: str
    own_ip: str
    supernode: str
    username: str
    no_udp: bool
    scale: float
    linger: float
    timing: Timing


def fmt(peer: Peer) -> str:
    return ftwire.endpoint(*peer)


def mix(cache: Sequence[Peer], hidden: Sequence[Peer]) -> list[Peer]:
    """Spread hidden peers evenly among cached ones, as Kazaa mixes them in phase 2."""
    keyed = [((i + 0.5) / len(cache), 0, p) for i, p in enumerate(cache)]
    keyed += [((i + 0.5) / len(hidden), 1, p) for i, p in enumerate(hidden)]
    return [peer for _, _, peer in sorted(keyed)]


class ClientUDP(protocol.DatagramProtocol):
    def __init__(self, client: Client) -> None:
        self.client = client

    def datagramReceived(self, data: bytes, addr: tuple[str, int]) -> None:
        self.client.udp_received(data, (addr[0], addr[1]))


class SessionOpener(protocol.Protocol):
    """Sends the clear 12-byte FastTrack session start and hangs up on the reply."""

    def __init__(self, enc: int, timeout: float, clock: Any) -> None:
        self.enc = enc
        self.timeout = timeout
        self.clock = clock

    def connectionMade(self) -> None:
        self.transport.write(ftwire.build_session_start(random.getrandbits(32), self.enc))
        self.timer = self.clock.callLater(self.timeout, self.transport.abortConnection)

    def dataReceived(self, data: bytes) -> None:
        self.transport.loseConnection()

    def connectionLost(self, reason: Failure | None = None) -> None:
        if self.timer.active():
            self.timer.cancel()


class Downloader(protocol.Protocol):
    """Sends a Kazaa HTTP download request and reports whether a 200 came back."""

    def __init__(self, request: bytes, timeout: float, clock: Any) -> None:
        self.request = request
        self.timeout = timeout
        self.clock = clock
        self.reply = b""
        self.done: defer.Deferred[bool] = defer.Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self.request)
        self.timer = self.clock.callLater(self.timeout, self.transport.abortConnection)

    def dataReceived(self, data: bytes) -> None:
        self.reply = (self.reply + data)[:4096]

    def connectionLost(self, reason: Failure | None = None) -> None:
        if self.timer.active():
            self.timer.cancel()
        status = self.reply.split(b"\r\n", 1)[0].split(b" ")
        self.done.callback(len(status) > 1 and status[1] == b"200")


class Client:
    """Runs the three phases, answers probes, and keeps the score in a Report."""

    def __init__(self, reactor: Any, cfg: Config, out: TextIO) -> None:
        self.reactor = reactor
        self.cfg = cfg
        self.t = cfg.timing
        self.out = out
        self.report = Report(
            mode="no-udp" if cfg.no_udp else "udp",
            name=cfg.name,
            enc=cfg.enc,
            own=ftwire.endpoint(cfg.own_ip, cfg.port),
            scale=cfg.scale,
            timing={k: round(v, 4) for k, v in asdict(self.t).items() if isinstance(v, float)},
            cache_size=len(cfg.cache),
            hidden_peers=len(cfg.hidden),
        )
        self.cache_set = set(cfg.cache)
        self.hidden_set = set(cfg.hidden)
        self.rotation = mix(cfg.cache, cfg.hidden)
        self.next_index = 0
        self.phase = 0
        self.answered: set[Peer] = set()
        self.followed: set[Peer] = set()
        self.in_flight: set[defer.Deferred[Any]] = set()
        self.calls: list[Any] = []
        self.hello = ftwire.build_hello(cfg.name, cfg.enc)
        self.udp: Any = None
        self.tcp: Any = None
        self.phase_timer: Any = None
        self.watchdog: Any = None
        self.started = 0.0
        self.finished = False
        self.done: defer.Deferred[Report] = defer.Deferred()

    # -- plumbing -----------------------------------------------------------

    def now(self) -> float:
        return round(self.reactor.seconds() - self.started, 3)

    def say(self, line: str) -> None:
        self.out.write(f"[{self.now():7.3f}] {line}\n")
        self.out.flush()

    def later(self, delay: float, fn: Callable[..., Any], *args: Any) -> None:
        self.calls = [c for c in self.calls if c.active()]
        self.calls.append(self.reactor.callLater(delay, fn, *args))

    def cancel_calls(self) -> None:
        for call in self.calls:
            if call.active():
                call.cancel()
        self.calls = []

    # -- lifecycle ----------------------------------------------------------

    def listen(self) -> None:
        """Open our own port first, so a busy port is an error before anything is sent."""
        if not self.cfg.no_udp:
            self.udp = self.reactor.listenUDP(self.cfg.port, ClientUDP(self), self.cfg.bind)
        self.tcp = self.reactor.listenTCP(self.cfg.port, _InboundFactory(self), 50, self.cfg.bind)

    def start(self) -> defer.Deferred[Report]:
        self.started = self.reactor.seconds()
        t = self.t
        total = t.phase2 + t.phase3 + self.cfg.linger + (0 if self.cfg.no_udp else t.phase1)
        # A hard stop in case any bookkeeping below goes wrong: the run is bounded.
        self.watchdog = self.reactor.callLater(total + 10 * t.connect_timeout + 5, self.finish)
        self.say(
            f"ftclient {self.report.mode} name={self.cfg.name} enc=0x{self.cfg.enc:02x} "
            f"own={self.report.own} cache={len(self.cfg.cache)} hidden={len(self.cfg.hidden)} "
            f"scale={self.cfg.scale} phases={t.phase1:g}/{t.phase2:g}/{t.phase3:g}s"
        )
        if self.cfg.no_udp:
            self.report.phases.append({"phase": 1, "skipped": "no-udp"})
            self.start_phase2()
        else:
            self.start_phase1()
        return self.done

    def begin_phase(self, phase: int, what: str, length: float) -> None:
        self.phase = phase
        self.report.phases.append({"phase": phase, "what": what, "start": self.now()})
        self.say(f"phase {phase} ({what}) for {length:g}s")

    def end_phase(self) -> None:
        self.cancel_calls()
        entry = self.report.phases[-1]
        entry["end"] = self.now()
        key = str(self.phase)
        r = self.report
        self.say(
            f"phase {self.phase} done: hellos={r.hellos_sent} pongs={r.pongs_received} "
            f"followups={r.followups_sent} probes={r.probes_answered} "
            f"connects={r.connects_tried[key]} ok={r.connects_succeeded[key]} "
            f"breakthroughs={len(r.breakthroughs)} downloads={r.downloads_succeeded}"
            f"/{r.downloads_tried}"
        )

    def finish(self) -> None:
        if self.finished:
            return
        self.finished = True
        self.cancel_calls()
        for timer in (self.watchdog, self.phase_timer):
            if timer is not None and timer.active():
                timer.cancel()
        for d in list(self.in_flight):
            d.cancel()
        for port in (self.udp, self.tcp):
            if port is not None:
                port.stopListening()
        self.report.duration = self.now()
        r = self.report
        self.say(
            f"done: hellos={r.hellos_sent} pongs={r.pongs_received} "
            f"probes={r.probes_answered} connects={sum(r.connects_tried.values())} "
            f"breakthroughs={len(r.breakthroughs)} downloads={r.downloads_succeeded}"
            f"/{r.downloads_tried}"
        )
        self.done.callback(self.report)

    # -- phase 1: UDP flood -------------------------------------------------

    def start_phase1(self) -> None:
        self.begin_phase(1, "udp flood", self.t.phase1)
        self.hello_round()
        self.phase_timer = self.reactor.callLater(self.t.phase1, self.start_phase2)

    def hello_round(self) -> None:
        targets = [p for p in self.cfg.cache if p not in self.answered]
        batch = self.t.hello_batch
        for n, start in enumerate(range(0, len(targets), batch)):
            self.later(n * self.t.hello_gap, self.send_hellos, targets[start : start + batch])
        self.later(self.t.hello_round, self.hello_round)

    def send_hellos(self, peers: list[Peer]) -> None:
        for peer in peers:
            if peer not in self.answered:
                self.udp.write(self.hello, peer)
                self.report.hellos_sent += 1

    def udp_received(self, data: bytes, src: Peer) -> None:
        hello = ftwire.parse_hello(data)
        if hello is not None:
            self.answer_probe(hello, src)
            return
        pong = ftwire.parse_pong(data)
        if pong is None:
            return
        if pong.kind == ftwire.PONG2:
            self.report.pong2_received += 1
            return
        self.report.pongs_received += 1
        if src not in self.answered:
            self.answered.add(src)
            self.report.pong_peers = len(self.answered)
        # Only a peer we pinged, and only while flooding, gets the follow-up and SYN.
        if self.phase == 1 and src in self.cache_set and src not in self.followed:
            self.followed.add(src)
            self.udp.write(ftwire.build_followup(), src)
            self.report.followups_sent += 1
            self.attempt(src, 1, self.t.connect_timeout)

    def answer_probe(self, hello: ftwire.Hello, src: Peer) -> None:
        if not ftwire.is_allowed(src[0]):
            self.say(f"probe from {fmt(src)} ignored: outside the lab")
            return
        self.udp.write(ftwire.build_pong(hello.enc, hello.name), src)
        self.report.probes_answered += 1
        if len(self.report.probes) < MAX_PROBES_KEPT:
            self.report.probes.append({"t": self.now(), "from": fmt(src), "phase": self.phase})
        self.say(f"probe from {fmt(src)} answered with a pong (#{self.report.probes_answered})")

    # -- phase 2: parallel TCP ----------------------------------------------

    def start_phase2(self) -> None:
        if self.phase == 1:
            self.end_phase()
        self.begin_phase(2, "parallel tcp", self.t.phase2)
        self.parallel_tick()
        self.phase_timer = self.reactor.callLater(self.t.phase2, self.start_phase3)

    def next_peer(self) -> Peer:
        peer = self.rotation[self.next_index % len(self.rotation)]
        self.next_index += 1
        return peer

    def parallel_tick(self) -> None:
        for _ in range(self.t.parallel_batch):
            if len(self.in_flight) >= MAX_IN_FLIGHT:
                break
            self.attempt(self.next_peer(), 2, self.t.connect_timeout)
        self.later(self.t.parallel_every, self.parallel_tick)

    # -- phase 3: one at a time ---------------------------------------------

    def start_phase3(self) -> None:
        self.end_phase()
        self.begin_phase(3, "serial tcp", self.t.phase3)
        self.phase_timer = self.reactor.callLater(self.t.phase3, self.end_phase3)
        self.serial_step()

    def serial_step(self) -> None:
        self.attempt(self.next_peer(), 3, self.t.serial_timeout).addBoth(self.serial_next)

    def serial_next(self, _: object) -> None:
        if self.phase == 3 and not self.finished:
            self.later(self.t.serial_gap, self.serial_step)

    def end_phase3(self) -> None:
        self.end_phase()
        self.phase = 4
        if self.cfg.linger > 0 and not self.cfg.no_udp:
            self.say(f"lingering {self.cfg.linger:g}s, answering probes")
        self.phase_timer = self.reactor.callLater(self.cfg.linger, self.finish)

    # -- TCP attempts -------------------------------------------------------

    def attempt(self, peer: Peer, phase: int, timeout: float) -> defer.Deferred[Any]:
        """One TCP connect; a completed handshake is a breakthrough."""
        key = str(phase)
        self.report.connects_tried[key] += 1
        kind = TCP6ClientEndpoint if ":" in peer[0] else TCP4ClientEndpoint
        endpoint = kind(self.reactor, peer[0], peer[1], timeout=timeout)
        proto: protocol.Protocol
        if self.cfg.no_udp:
            proto = Downloader(self.download_request(peer), self.t.reply_timeout, self.reactor)
        else:
            proto = SessionOpener(self.cfg.enc, self.t.reply_timeout, self.reactor)
        d = connectProtocol(endpoint, proto)
        self.in_flight.add(d)

        def connected(_: object) -> None:
            self.report.connects_succeeded[key] += 1
            hidden = peer in self.hidden_set
            self.report.breakthroughs.append(
                {"t": self.now(), "phase": phase, "peer": fmt(peer), "hidden": hidden}
            )
            self.say(
                f"BREAKTHROUGH phase {phase}: tcp to {fmt(peer)}"
                f"{' (hidden peer)' if hidden else ''}"
            )
            if isinstance(proto, Downloader):
                self.report.downloads_tried += 1
                proto.done.addCallback(self.download_done, peer)

        def failed(reason: Failure) -> None:
            cancelled = reason.check(defer.CancelledError, error.ConnectingCancelledError)
            name = "Cancelled" if cancelled else reason.type.__name__
            self.report.connect_failures[name] = self.report.connect_failures.get(name, 0) + 1

        d.addCallbacks(connected, failed)
        d.addBoth(lambda _: self.in_flight.discard(d))
        return d

    def download_request(self, peer: Peer) -> bytes:
        seed = f"{fmt(peer)}#{self.report.downloads_tried}"
        return ftwire.build_download(
            file_hash_hex=ftwire.file_hash(seed),
            host=fmt(peer),
            username=self.cfg.username,
            network=self.cfg.name,
            own=self.report.own,
            supernode=self.cfg.supernode,
        )

    def download_done(self, ok: bool, peer: Peer) -> None:
        if ok:
            self.report.downloads_succeeded += 1
        self.say(f"download from {fmt(peer)} {'succeeded' if ok else 'failed'}")


class _Inbound(protocol.Protocol):
    """A peer calling back in on our port: counted and dropped."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def connectionMade(self) -> None:
        self.client.report.inbound_tcp += 1
        self.transport.loseConnection()


class _InboundFactory(protocol.ServerFactory):
    def __init__(self, client: Client) -> None:
        self.client = client

    def buildProtocol(self, addr: object) -> _Inbound:
        return _Inbound(self.client)


def own_address(towards: str) -> str:
    """The source address the kernel picks for ``towards`` (a UDP connect sends nothing)."""
    family = socket.AF_INET6 if ":" in towards else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.connect((towards, 9))
        return str(sock.getsockname()[0])


def parse_args(argv: Sequence[str]) -> tuple[Config, str | None]:
    parser = argparse.ArgumentParser(
        prog="ftclient", description="Simulated FastTrack client for the p2pwall lab."
    )
    add = parser.add_argument
    add(
        "--peer",
        action="append",
        default=[],
        metavar="IP:PORT",
        help="a cached peer (repeatable); port defaults to 1214",
    )
    add("--peers-file", metavar="FILE", help="cached peers, one ip[:port] a line")
    add(
        "--hidden-peer",
        action="append",
        default=[],
        metavar="IP:PORT",
        help="a peer never pinged in phase 1, only tried over TCP (repeatable)",
    )
    add("--cache-size", type=int, default=200, help="keep at most this many cached peers")
    add("--name", default="KaZaA", choices=ftwire.NAMES, help="network name in hellos")
    add(
        "--enc",
        default="0x29",
        choices=["0x29", "0xA9", "0xa9"],
        help="min encryption type in hellos",
    )
    add("--port", type=int, default=1214, help="own UDP and TCP port")
    add(
        "--ip",
        help="own address: listen only there and send it as X-Kazaa-IP "
        "(default: listen on all, X-Kazaa-IP is the route's source address)",
    )
    add("--supernode", metavar="IP:PORT", help="X-Kazaa-SupernodeIP (default: first peer)")
    add("--username", default="rogue", help="X-Kazaa-Username")
    add("--no-udp", action="store_true", help="no UDP at all; HTTP downloads over TCP")
    add("--scale", type=float, default=1.0, help="multiply every time constant (0.01-10)")
    add(
        "--linger",
        type=float,
        default=0.0,
        help=f"seconds to keep answering probes after phase 3 (max {MAX_LINGER:.0f})",
    )
    add("--report", metavar="FILE", help="write a JSON summary here")
    args = parser.parse_args(argv)
    try:
        cache = [ftwire.parse_addr(text) for text in args.peer]
        if args.peers_file:
            cache += ftwire.read_peers_file(args.peers_file)
        cache = list(dict.fromkeys(cache))[: max(args.cache_size, 0)]
        hidden = [
            p for p in dict.fromkeys(map(ftwire.parse_addr, args.hidden_peer)) if p not in cache
        ]
        supernode = ftwire.parse_addr(args.supernode) if args.supernode else None
        own_ip = ftwire.parse_addr(args.ip)[0] if args.ip else None
    except ValueError as err:
        parser.error(str(err))
    if not cache:
        parser.error("give at least one --peer or a --peers-file")
    # One socket of one family talks to every peer: IPv4 or IPv6 throughout.
    ipv6 = ":" in cache[0][0]
    named = [ip for ip, _ in [*cache, *hidden, *([supernode] if supernode else [])]]
    mixed = [ip for ip in [*named, *([own_ip] if own_ip else [])] if (":" in ip) != ipv6]
    if mixed:
        parser.error(f"peers, --supernode and --ip must all be IPv{6 if ipv6 else 4}: {mixed[0]}")
    if len(cache) + len(hidden) > MAX_PEERS:
        parser.error(f"at most {MAX_PEERS} peers")
    if not 0.01 <= args.scale <= 10:
        parser.error("--scale must be in [0.01, 10]")
    if not 0 <= args.linger <= MAX_LINGER:
        parser.error(f"--linger must be in [0, {MAX_LINGER:.0f}]")
    if not 0 < args.port < 65536:
        parser.error("--port out of range")
    return Config(
        cache=cache,
        hidden=hidden,
        name=args.name,
        enc=int(args.enc, 16),
        port=args.port,
        bind=own_ip or ("::" if ipv6 else ""),
        own_ip=own_ip or own_address(cache[0][0]),
        supernode=fmt(supernode or cache[0]),
        username=args.username,
        no_udp=args.no_udp,
        scale=args.scale,
        linger=args.linger,
        timing=Timing().scaled(args.scale),
    ), args.report


def write_report(report: Report, path: str) -> None:
    """Atomically, so a reader never sees half a file."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(asdict(report), handle, indent=2, sort_keys=True)
        handle.write("\n")
    os.replace(tmp, path)


def main(argv: Sequence[str] | None = None) -> int:
    cfg, report_path = parse_args(sys.argv[1:] if argv is None else argv)
    from twisted.internet import reactor as _reactor

    reactor: Any = _reactor
    # Errors in callbacks must be seen, not swallowed while the run silently stalls.
    globalLogBeginner.beginLoggingTo(
        [
            FilteringLogObserver(
                textFileLogObserver(sys.stderr), [LogLevelFilterPredicate(LogLevel.warn)]
            )
        ],
        redirectStandardIO=False,
    )
    client = Client(reactor, cfg, sys.stdout)
    try:
        client.listen()
    except error.CannotListenError as err:
        print(f"ftclient: cannot listen on port {cfg.port}: {err}", file=sys.stderr)
        return 2

    def stop(report: Report) -> None:
        try:
            if report_path:
                write_report(report, report_path)
        finally:
            # Already stopping when a SIGTERM or SIGINT brought us here.
            with contextlib.suppress(error.ReactorNotRunning):
                reactor.stop()

    reactor.callWhenRunning(lambda: client.start().addCallback(stop))
    # SIGTERM/SIGINT stop the reactor: still count what was done and write the report.
    reactor.addSystemEventTrigger("before", "shutdown", client.finish)
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
