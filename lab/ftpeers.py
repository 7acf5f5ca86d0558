"""Simulated FastTrack peers (supernodes) for the lab's public side.

Each ``ip:port`` gets a UDP socket that answers 0x27 hellos with a 0x28 pong, and a
TCP socket that accepts sessions and serves ``GET /.hash=`` downloads, so the
simulated client has something real to break through to. One line per event on
stdout lets tests see exactly which packets got past the gateway.

    python lab/ftpeers.py --peer 198.19.1.1:1214 --peer [2001:2:0:1001::1]:1214 \\
        --peers-file F --duration 60
"""

from __future__ import annotations

import argparse
import struct
import sys
import time
import zlib
from collections.abc import Sequence
from typing import Any, TextIO

from twisted.internet import protocol

try:
    from lab import ftwire
except ImportError:  # run as a script: python lab/ftpeers.py
    import ftwire  # type: ignore[no-redef]

MAX_DURATION = 3600.0
MAX_REQUEST = 4096
BODY = b"simulated FastTrack file\n" * 8


class EventLog:
    """Writes one flushed line per event, so a test can read it while we run."""

    def __init__(self, out: TextIO, started: float) -> None:
        self.out = out
        self.started = started

    def __call__(self, event: str, **fields: object) -> None:
        parts = " ".join(f"{key}={value}" for key, value in fields.items())
        self.out.write(f"{time.monotonic() - self.started:8.3f} {event} {parts}\n")
        self.out.flush()


class PeerUDP(protocol.DatagramProtocol):
    """Answers hellos like a supernode: echo the client's min-enc and network name."""

    def __init__(self, me: str, log: EventLog, started: float) -> None:
        self.me = me
        self.log = log
        self.started = started
        # A per-peer constant load byte, so pongs from different peers differ a little.
        self.load = zlib.crc32(me.encode()) % 90 + 5

    def datagramReceived(self, data: bytes, addr: tuple[str, int]) -> None:
        src = ftwire.endpoint(addr[0], addr[1])
        hello = ftwire.parse_hello(data)
        if hello is None:
            self.log("udp-other", peer=self.me, src=src, len=len(data), first=f"{data[:1].hex()}")
            return
        if not ftwire.is_allowed(addr[0]):
            self.log("hello-ignored", peer=self.me, src=src, why="outside-lab")
            return
        # The "t" byte rises by one about every 30 minutes on a real supernode.
        tick = int((time.monotonic() - self.started) // 1800)
        pong = ftwire.build_pong(hello.enc, hello.name, tick=tick, load=self.load)
        self.transport.write(pong, addr)
        self.log("hello", peer=self.me, src=src, name=hello.name, enc=f"0x{hello.enc:02x}")
        self.log("pong", peer=self.me, dst=src, len=len(pong))


class PeerSession(protocol.Protocol):
    """One accepted TCP connection: a FastTrack session start or an HTTP download."""

    def __init__(self, me: str, log: EventLog) -> None:
        self.me = me
        self.log = log
        self.buffer = b""
        self.answered = False

    def connectionMade(self) -> None:
        remote = self.transport.getPeer()
        self.src = ftwire.endpoint(remote.host, remote.port)
        self.log("tcp-accept", peer=self.me, src=self.src)

    def dataReceived(self, data: bytes) -> None:
        if self.answered:
            return
        self.buffer += data
        if self.buffer.startswith(ftwire.SESSION_RAND) and len(self.buffer) >= 12:
            self.answered = True
            self.log("session-start", peer=self.me, src=self.src)
            # Our seed and encryption type; everything after this would be encrypted.
            self.transport.write(struct.pack(">II", zlib.crc32(self.me.encode()), 0x29))
            self.transport.loseConnection()
        elif b"\r\n\r\n" in self.buffer:
            self.answered = True
            wanted = ftwire.parse_download(self.buffer)
            if wanted is None:
                self.log("http-other", peer=self.me, src=self.src, line=self._first_line())
                self.transport.write(b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n")
            else:
                self.log("download", peer=self.me, src=self.src, hash=wanted, status=200)
                self.transport.write(
                    ftwire.build_download_reply(BODY, username="peer", network="KaZaA")
                )
            self.transport.loseConnection()
        elif len(self.buffer) > MAX_REQUEST:
            self.answered = True
            self.log("tcp-garbage", peer=self.me, src=self.src, len=len(self.buffer))
            self.transport.loseConnection()

    def _first_line(self) -> str:
        return repr(self.buffer.split(b"\r\n", 1)[0][:80])

    def connectionLost(self, reason: object = None) -> None:
        self.log("tcp-close", peer=self.me, src=getattr(self, "src", "?"))


class PeerFactory(protocol.ServerFactory):
    def __init__(self, me: str, log: EventLog) -> None:
        self.me = me
        self.log = log

    def buildProtocol(self, addr: object) -> PeerSession:
        return PeerSession(self.me, self.log)


def start_peers(
    reactor: Any,
    peers: Sequence[tuple[str, int]],
    log: EventLog,
    started: float,
) -> None:
    """Listen on every peer address, before the reactor runs, so a clash fails loudly."""
    for ip, port in peers:
        me = ftwire.endpoint(ip, port)
        reactor.listenUDP(port, PeerUDP(me, log, started), interface=ip)
        reactor.listenTCP(port, PeerFactory(me, log), interface=ip)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="ftpeers", description="Simulated FastTrack peers for the p2pwall lab."
    )
    parser.add_argument(
        "--peer",
        action="append",
        default=[],
        metavar="IP:PORT",
        help="a peer to simulate (repeatable); port defaults to 1214",
    )
    parser.add_argument("--peers-file", metavar="FILE", help="one ip[:port] a line")
    parser.add_argument(
        "--duration",
        type=float,
        default=60.0,
        help=f"seconds to run before exiting (max {MAX_DURATION:.0f})",
    )
    args = parser.parse_args(argv)
    try:
        args.peers = [ftwire.parse_addr(text) for text in args.peer]
        if args.peers_file:
            args.peers += ftwire.read_peers_file(args.peers_file)
    except ValueError as err:
        parser.error(str(err))
    if not args.peers:
        parser.error("give at least one --peer or a --peers-file")
    if not 0 < args.duration <= MAX_DURATION:
        parser.error(f"--duration must be in (0, {MAX_DURATION:.0f}]")
    args.peers = list(dict.fromkeys(args.peers))
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from twisted.internet import reactor as _reactor

    reactor: Any = _reactor
    started = time.monotonic()
    log = EventLog(sys.stdout, started)
    start_peers(reactor, args.peers, log, started)
    log("ready", peers=len(args.peers), duration=args.duration)
    reactor.callLater(args.duration, reactor.stop)
    reactor.addSystemEventTrigger("before", "shutdown", lambda: log("exit"))
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
