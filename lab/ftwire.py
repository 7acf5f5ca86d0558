"""FastTrack wire formats the lab's simulated client and peers speak.

Kept separate from ``p2pwall`` on purpose: the lab must produce bytes from the
protocol reference (docs/protocols.md sections 1 and 2), not from the daemon's own
code, or a bug in the daemon's builders would be mirrored and go unnoticed.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import struct
from dataclasses import dataclass

HELLO = 0x27
PONG = 0x28
PONG2 = 0x29
FOLLOWUP = 0x2A

NAMES = ("KaZaA", "fileshare", "Grokster")
ENCS = (0x29, 0xA9)

# giFT's clear-text TCP session start begins with this fixed "rand" (docs/protocols.md §1.3).
SESSION_RAND = bytes.fromhex("fa00b62b")

_NAME_RE = re.compile(rb"[\x21-\x7e]{1,32}")

# The simulators must never talk to anything but the lab (or loopback, for tests).
ALLOWED_NETS = (
    ipaddress.ip_network("198.18.0.0/15"),
    ipaddress.ip_network("127.0.0.0/8"),
    ipaddress.ip_network("2001:2::/48"),
    ipaddress.ip_network("::1/128"),
)


@dataclass(frozen=True)
class Hello:
    """A parsed 0x27 node ping."""

    enc: int
    name: str


@dataclass(frozen=True)
class Pong:
    """A parsed 0x28 pong (or 0x29 pong2, which has no name)."""

    kind: int
    enc: int
    name: str | None
    load: int | None


def _check_name(name: str) -> bytes:
    raw = name.encode("ascii")
    if not _NAME_RE.fullmatch(raw):
        raise ValueError(f"network name must be 1-32 printable ASCII characters: {name!r}")
    return raw


def build_hello(name: str = "KaZaA", enc: int = 0x29) -> bytes:
    """``27 | u32 min_enc | 80 | name\\0``: 12 bytes for KaZaA."""
    return struct.pack(">BIB", HELLO, enc, 0x80) + _check_name(name) + b"\0"


def parse_hello(data: bytes) -> Hello | None:
    """Return the hello in ``data`` or None; strict so stray UDP is not mistaken."""
    if len(data) < 8 or data[0] != HELLO or data[1:4] != b"\0\0\0" or data[5] != 0x80:
        return None
    if data[-1] != 0 or not _NAME_RE.fullmatch(data[6:-1]):
        return None
    return Hello(enc=data[4], name=data[6:-1].decode("ascii"))


def build_pong(enc: int, name: str, *, tick: int = 0, load: int = 0x19, unknown: int = 0) -> bytes:
    """``28 | u32 min_enc | 00 | t | u u | load | x | name\\0``: 17 bytes for KaZaA.

    ``enc`` and ``name`` echo the hello being answered, as a supernode does.
    """
    head = struct.pack(">BIBBHBB", PONG, enc, 0, tick & 0xFF, 0, load & 0xFF, unknown & 0xFF)
    return head + _check_name(name) + b"\0"


def parse_pong(data: bytes) -> Pong | None:
    """Recognise a 0x28 pong (17 bytes for KaZaA) or a 0x29 pong2 (13 or 21 bytes)."""
    if len(data) < 5 or data[1:4] != b"\0\0\0":
        return None
    if data[0] == PONG and len(data) >= 13 and data[5] == 0 and data[-1] == 0:
        name = data[11:-1]
        if not _NAME_RE.fullmatch(name):
            return None
        return Pong(kind=PONG, enc=data[4], name=name.decode("ascii"), load=data[9])
    if data[0] == PONG2 and len(data) in (13, 21):
        return Pong(kind=PONG2, enc=data[4], name=None, load=None)
    return None


def build_followup(ident: int = 0) -> bytes:
    """``2A | u32 id``: the client's "extra setup information" request after a pong."""
    return struct.pack(">BI", FOLLOWUP, ident)


def build_session_start(seed: int, enc: int) -> bytes:
    """The 12 clear bytes that open a FastTrack TCP session (rand, seed, enc type)."""
    return SESSION_RAND + struct.pack(">II", seed, enc)


def file_hash(seed: str) -> str:
    """A 40-hex-digit FastTrack-style file hash, deterministic for a seed string."""
    return hashlib.sha1(seed.encode()).hexdigest()


def build_download(
    *,
    file_hash_hex: str,
    host: str,
    username: str,
    network: str,
    own: str,
    supernode: str,
) -> bytes:
    """An HTTP download start as a Kazaa client sends it (docs/protocols.md §2).

    ``own`` and ``supernode`` are ``a.b.c.d:port``; the daemon blocks their IPs.
    """
    if not re.fullmatch(r"[0-9a-f]{40}", file_hash_hex):
        raise ValueError(f"file hash must be 40 lower-case hex digits: {file_hash_hex!r}")
    lines = [
        f"GET /.hash={file_hash_hex} HTTP/1.1",
        f"Host: {host}",
        "UserAgent: KazaaClient Jan 26 2004 10:34:09",
        f"X-Kazaa-Username: {username}",
        f"X-Kazaa-Network: {network}",
        f"X-Kazaa-IP: {own}",
        f"X-Kazaa-SupernodeIP: {supernode}",
        "Connection: close",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


def parse_download(data: bytes) -> str | None:
    """Return the requested hash if ``data`` starts a ``GET /.hash=`` request."""
    match = re.match(rb"GET /\.hash=([0-9a-fA-F]{40}) HTTP/1\.[01]\r\n", data)
    return match.group(1).decode("ascii").lower() if match else None


def build_download_reply(body: bytes, *, username: str, network: str) -> bytes:
    """The peer's ``HTTP/1.0 200 OK`` answer to a hash request."""
    head = (
        "HTTP/1.0 200 OK\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Content-Type: application/octet-stream\r\n"
        f"X-Kazaa-Username: {username}\r\n"
        f"X-Kazaa-Network: {network}\r\n"
        "\r\n"
    )
    return head.encode("ascii") + body


def is_allowed(ip: str) -> bool:
    """True for addresses the simulators may send to: the lab's 198.18.0.0/15 and
    2001:2::/48, or loopback."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(addr in net for net in ALLOWED_NETS)


def parse_addr(text: str, default_port: int = 1214) -> tuple[str, int]:
    """``a.b.c.d[:port]``, ``[v6][:port]`` or a bare IPv6 address -> (ip, port), refusing
    anything outside the lab's ranges."""
    text = text.strip()
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        sep, port = rest[:1], rest[1:]
        if not bracket or rest[:1] not in ("", ":"):
            raise ValueError(f"bad [IPv6]:port: {text!r}")
    elif text.count(":") > 1:
        host, sep, port = text, "", ""
    else:
        host, sep, port = text.partition(":")
    if not is_allowed(host):
        raise ValueError(
            f"not a lab IPv4 address (198.18.0.0/15), lab IPv6 address (2001:2::/48) or "
            f"loopback: {text!r}"
        )
    if sep and not port.isdigit():
        raise ValueError(f"bad port: {text!r}")
    number = int(port) if sep else default_port
    if not 0 < number < 65536:
        raise ValueError(f"port out of range: {text!r}")
    # The text the sockets give back for it (an IPv6 address compressed), so the two compare.
    return str(ipaddress.ip_address(host)), number


def endpoint(ip: str, port: int) -> str:
    """``ip:port``, or ``[ip]:port`` for IPv6: how the lab's peers files and logs write one."""
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def read_peers_file(path: str, default_port: int = 1214) -> list[tuple[str, int]]:
    """One ``ip[:port]`` (IPv6: ``[ip][:port]``) a line; blank lines and ``#`` comments are
    skipped."""
    peers = []
    with open(path, encoding="ascii") as handle:
        for line in handle:
            line = line.split("#", 1)[0].strip()
            if line:
                peers.append(parse_addr(line, default_port))
    return peers
