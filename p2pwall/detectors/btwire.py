"""BitTorrent on the wire, as bytes in and facts out: what a client cannot encrypt (DHT KRPC,
tracker announces, the plain handshake, uTP SYNs) and the peers cleartext replies name.

Pure and per-packet: no state, no engine, ``struct`` and slices only, cheap rejects first, work
bounded by the packet (and by ``MAX_PEERS``); every function answers ``None``/``False`` for
anything it does not recognise and raises nothing on any input. Replies come from hosts nobody
vouches for: what they name is returned as data, never trusted here.

Wire facts: docs/protocols.md section 5.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

from ..bencode import BencodeError, decode, decode_prefix, encode

MAX_PEERS = 200
# Real KRPC messages fit one unfragmented datagram (BEP 44's largest put is about 1.2 KB);
# anything longer is not read, which bounds the decoder's work per packet.
MAX_KRPC = 4096
# KRPC nests dict > dict > list; BEP 44's ``v`` may nest a little more.
_KRPC_DEPTH = 8
# Values in one message: a full get_peers reply (100 values, 8 nodes) has about 120; the cap
# bounds what a datagram of tiny values costs to about 0.2 ms instead of 1.5.
_KRPC_VALUES = 256
# An HTTP tracker reply is read up to here: 200 dictionary-model peers fit in about 12 KB.
_REPLY_PEEK = 16384
_HEADER_PEEK = 4096
_ANNOUNCE_PEEK = 2048
_MAX_REPLY_KEYS = 64
_MAX_CHUNKS = 16

Peers = tuple[tuple[bytes, int], ...]

_V4, _V6 = 6, 18  # compact peer sizes: address and 2-byte port
_ENTRY = {_V4: struct.Struct("!4sH"), _V6: struct.Struct("!16sH")}
_PORT = struct.Struct("!H")
_HEX = frozenset(b"0123456789abcdefABCDEF")


def _compact(data: bytes, size: int, out: list[tuple[bytes, int]]) -> None:
    """Compact peers (BEP 23: 4-byte address, 2-byte port; BEP 7: 16 + 2) appended to ``out``:
    whole entries only, port 0 dropped, ``out`` never past ``MAX_PEERS``."""
    room = MAX_PEERS - len(out)
    whole = data[: min(len(data) - len(data) % size, size * room)]
    out += [peer for peer in _ENTRY[size].iter_unpack(whole) if peer[1]]


# --- DHT (BEP 5) ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Krpc:
    """A DHT message: its kind, transaction id and the facts the detector uses."""

    kind: bytes  # b"q", b"r" or b"e"
    txid: bytes
    query: bytes | None  # b"ping", b"get_peers", b"announce_peer", b"find_node"... for kind q
    port: int  # announce_peer's "port" argument, or 0
    values: Peers  # r.values (6-byte IPv4 or, BEP 32, 18-byte IPv6 entries) and r.values6
    implied_port: bool = False  # announce_peer with implied_port=1: the UDP source port counts
    version: bytes = b""  # the "v" key (BEP 5's client version: b"LT\x02\x08", b"A2\x00\x03")


def parse_krpc(payload: bytes | memoryview) -> Krpc | None:
    """The KRPC message in a UDP payload, or ``None``.

    Matched on content, never on a prefix: keys may come in any order and replies carrying
    BEP 42's ``ip`` start ``d2:ip``. Cheap rejects first: a bencoded dict starts ``d`` and ends
    ``e``, and every KRPC message holds the key and value ``1:y1:``."""
    size = len(payload)
    if size < 12 or size > MAX_KRPC or payload[0] != 0x64 or payload[size - 1] != 0x65:
        return None
    data = bytes(payload)
    if b"1:y1:" not in data:
        return None
    try:
        message = decode(data, max_depth=_KRPC_DEPTH, max_values=_KRPC_VALUES)
    except BencodeError:
        return None
    if not isinstance(message, dict):
        return None
    kind, txid = message.get(b"y"), message.get(b"t")
    if not isinstance(txid, bytes):
        return None
    version = message.get(b"v")
    version = version if isinstance(version, bytes) else b""
    if kind == b"q":
        return _query(message, txid, version)
    if kind == b"r":
        reply = message.get(b"r")
        if not isinstance(reply, dict):
            return None
        return Krpc(kind, txid, None, 0, _values(reply), version=version)
    if kind == b"e" and isinstance(message.get(b"e"), list):
        return Krpc(kind, txid, None, 0, (), version=version)
    return None


def _query(message: dict, txid: bytes, version: bytes) -> Krpc | None:
    query, args = message.get(b"q"), message.get(b"a")
    if not isinstance(query, bytes) or not isinstance(args, dict):
        return None
    port, implied = 0, False
    if query == b"announce_peer":
        given = args.get(b"port")
        port = given if isinstance(given, int) and 0 < given < 65536 else 0
        implied = args.get(b"implied_port") == 1
    return Krpc(b"q", txid, query, port, (), implied, version)


def _values(reply: dict) -> Peers:
    """Peers in a get_peers reply: each list entry is one compact peer, its length says the
    family (a malformed entry is skipped, as clients skip it)."""
    v4: list[bytes] = []
    v6: list[bytes] = []
    for key in (b"values", b"values6"):
        entries = reply.get(key)
        if isinstance(entries, list):
            for entry in entries:
                if isinstance(entry, bytes):
                    if len(entry) == _V4:
                        v4.append(entry)
                    elif len(entry) == _V6:
                        v6.append(entry)
    out: list[tuple[bytes, int]] = []
    _compact(b"".join(v4), _V4, out)
    _compact(b"".join(v6), _V6, out)
    return tuple(out)


def krpc_ping(txid: bytes, node_id: bytes) -> bytes:
    """A KRPC ping query (BEP 5), keys sorted: what the gateway sends a client's DHT port."""
    return encode({"a": {"id": node_id}, "q": "ping", "t": txid, "y": "q"})


# --- UDP tracker (BEP 15, BEP 41) ----------------------------------------------------------

CONNECT_MAGIC = 0x41727101980
CONNECT, ANNOUNCE, SCRAPE = 0, 1, 2

_REQUEST = struct.Struct("!QII")  # connection id (or the magic), action, transaction id
_EVENT = struct.Struct("!I")
_ANNOUNCE_SIZE = 98
_ANNOUNCE_PORT = 96
_ANNOUNCE_EVENT = 80
_SCRAPE_HASH = 20
_REPLY_HEAD = 20
_ANNOUNCE_REPLY = b"\0\0\0\1"


@dataclass(frozen=True)
class UdpTrackerRequest:
    """A client's request to a UDP tracker."""

    action: int  # 0 connect, 1 announce, 2 scrape
    txid: int
    port: int  # announce's port field, else 0


def parse_udp_tracker_request(payload: bytes | memoryview) -> UdpTrackerRequest | None:
    """A connect (16 bytes, the magic), an announce (98 bytes, longer with BEP 41 options;
    event 0-3) or a scrape (16 bytes and whole 20-byte info-hashes), or ``None``."""
    size = len(payload)
    if size < 16:
        return None
    connection, action, txid = _REQUEST.unpack_from(payload)
    if action == CONNECT:
        if size == 16 and connection == CONNECT_MAGIC:
            return UdpTrackerRequest(CONNECT, txid, 0)
        return None
    if action == ANNOUNCE:
        if size < _ANNOUNCE_SIZE or _EVENT.unpack_from(payload, _ANNOUNCE_EVENT)[0] > 3:
            return None
        (port,) = _PORT.unpack_from(payload, _ANNOUNCE_PORT)
        return UdpTrackerRequest(ANNOUNCE, txid, port)
    if action == SCRAPE and size > 16 and (size - 16) % _SCRAPE_HASH == 0:
        return UdpTrackerRequest(SCRAPE, txid, 0)
    return None


def parse_udp_tracker_reply(payload: bytes | memoryview, ipv6: bool) -> Peers | None:
    """The peers of an announce reply (action 1, interval, leechers, seeders, then compact
    peers: 6 bytes each over IPv4, 18 over IPv6, as the packet's family says), or ``None``
    when the payload is not one (an error reply, a connect reply, a size that does not fit)."""
    size = len(payload)
    if size < _REPLY_HEAD or payload[:4] != _ANNOUNCE_REPLY:
        return None
    entry = _V6 if ipv6 else _V4
    if (size - _REPLY_HEAD) % entry:
        return None
    out: list[tuple[bytes, int]] = []
    _compact(bytes(payload[_REPLY_HEAD : _REPLY_HEAD + entry * MAX_PEERS]), entry, out)
    return tuple(out)


# --- HTTP tracker (BEP 3, BEP 23, BEP 7) ---------------------------------------------------


@dataclass(frozen=True)
class Announce:
    """An HTTP tracker announce request."""

    port: int  # the "port=" parameter, 0 if absent or invalid
    path: str  # the path before the query string, e.g. "/announce"
    peer_id: bytes = b""  # percent-decoded: b"-qB4520-..." names the client (BEP 20)


def parse_announce(payload: bytes | memoryview) -> Announce | None:
    """``GET /...?info_hash=...&peer_id=...`` (BEP 3): the request line of the first 2 KiB
    must carry both parameters; ``None`` otherwise."""
    if len(payload) < 24 or payload[:5] != b"GET /":
        return None
    head = bytes(payload[:_ANNOUNCE_PEEK])
    line = head.split(b"\n", 1)[0].rstrip(b"\r")
    if b"info_hash=" not in line or b"peer_id=" not in line:
        return None
    target = line[4:].split(b" ", 1)[0]
    path, _, query = target.partition(b"?")
    params: dict[bytes, bytes] = {}
    for pair in query.split(b"&"):
        name, _, value = pair.partition(b"=")
        params.setdefault(name, value)
    if b"info_hash" not in params or b"peer_id" not in params:
        return None
    port = params.get(b"port", b"")
    number = int(port) if port.isdigit() and len(port) <= 5 else 0
    return Announce(
        number if number < 65536 else 0,
        path.decode("latin-1"),
        _unquote(params[b"peer_id"]),
    )


def _unquote(text: bytes) -> bytes:
    """Percent-decoding of a query value; a malformed escape stays as it is."""
    parts = text.split(b"%")
    out = bytearray(parts[0])
    for part in parts[1:]:
        if len(part) >= 2 and _HEX.issuperset(part[:2]):
            out.append(int(part[:2], 16))
            out += part[2:]
        else:
            out += b"%" + part
    return bytes(out)


def parse_tracker_reply(payload: bytes | memoryview) -> Peers | None:
    """The peers an HTTP tracker's ``200`` reply names: ``peers`` compact (BEP 23) or a list
    of ``ip``/``port`` dicts (BEP 3), and ``peers6`` (BEP 7). A plain or chunked body; a gzip
    one is not read. ``None`` when the reply has no ``peers``/``peers6`` key within the packet.

    A cut body (the reply spans several segments and this is the first) yields the peers that
    are complete in it: whole compact entries, whole dicts; ``None`` if the cut comes before
    the ``peers`` key. Hostnames in dict peers are skipped (nothing is resolved here)."""
    if len(payload) < 16 or payload[:9] not in (b"HTTP/1.0 ", b"HTTP/1.1 "):
        return None
    data = bytes(payload[:_REPLY_PEEK])
    if data[9:12] != b"200" or data[12:13] not in (b" ", b"\r"):
        return None
    end = data.find(b"\r\n\r\n", 0, _HEADER_PEEK)
    if end < 0:
        return None
    headers, body = data[:end].lower(), data[end + 4 :]
    if _header(headers, b"content-encoding") not in (b"", b"identity"):
        return None
    if _header(headers, b"transfer-encoding") == b"chunked":
        body = _dechunk(body)
    return _body_peers(body)


def _header(headers: bytes, name: bytes) -> bytes:
    """A header's value in the lowered header block, stripped; ``b""`` when absent."""
    at = headers.find(b"\n" + name + b":")
    if at < 0:
        return b""
    start = at + len(name) + 2
    stop = headers.find(b"\n", start)
    return headers[start : stop if stop >= 0 else len(headers)].strip()


def _dechunk(body: bytes) -> bytes:
    """A chunked body's data (RFC 9112 section 7.1): up to ``_MAX_CHUNKS`` chunks, the last
    one as far as the packet goes."""
    out = bytearray()
    at = 0
    for _ in range(_MAX_CHUNKS):
        eol = body.find(b"\r\n", at, at + 32)
        if eol < 0:
            break
        digits = body[at:eol].split(b";", 1)[0].strip()
        try:
            size = int(digits, 16)
        except ValueError:
            break
        if size <= 0:
            break
        out += body[eol + 2 : eol + 2 + size]
        at = eol + 2 + size + 2
    return bytes(out)


def _body_peers(body: bytes) -> Peers | None:
    """Walk the top-level dict key by key, so a cut after the peers still counts; the walk
    ends at the dict's ``e`` (what follows, if anything, is not read)."""
    if body[:1] != b"d":
        return None
    out: list[tuple[bytes, int]] = []
    found = False
    at = 1
    for _ in range(_MAX_REPLY_KEYS):
        if at >= len(body) or body[at] == 0x65:
            break
        try:
            key, at = decode_prefix(body, at, max_depth=1)
            if not isinstance(key, bytes):
                break
            if key in (b"peers", b"peers6"):
                found = True
                at = _peers_value(body, at, _V4 if key == b"peers" else _V6, out)
            else:
                _, at = decode_prefix(body, at, max_depth=_KRPC_DEPTH)
        except BencodeError:
            break
    return tuple(out) if found else None


def _peers_value(body: bytes, at: int, entry: int, out: list[tuple[bytes, int]]) -> int:
    """Read a peers value at ``at`` into ``out`` and return where it ends; a cut value yields
    its complete peers and then ends the walk."""
    if body[at : at + 1].isdigit():
        colon = body.find(b":", at, at + 10)
        if colon < 0 or not body[at:colon].isdigit():
            raise BencodeError(f"bad peers string at {at}")
        stop = colon + 1 + int(body[at:colon])
        _compact(body[colon + 1 : min(stop, colon + 1 + entry * MAX_PEERS)], entry, out)
        return stop  # past the end when cut, which ends the walk
    if body[at : at + 1] != b"l":
        _, at = decode_prefix(body, at, max_depth=_KRPC_DEPTH)
        return at
    at += 1
    while at < len(body) and body[at] != 0x65:
        peer, at = decode_prefix(body, at, max_depth=2)
        if isinstance(peer, dict) and len(out) < MAX_PEERS:
            _dict_peer(peer, out)
    return at + 1  # past the end when cut


def _dict_peer(peer: dict, out: list[tuple[bytes, int]]) -> None:
    """BEP 3's dictionary model: ``ip`` as text (IPv4, IPv6; a hostname is skipped)."""
    ip, port = peer.get(b"ip"), peer.get(b"port")
    if not (isinstance(ip, bytes) and isinstance(port, int) and 0 < port < 65536):
        return
    if len(ip) > 45 or not ip.isascii():
        return
    text = ip.decode("ascii")
    try:
        addr = socket.inet_pton(socket.AF_INET6 if ":" in text else socket.AF_INET, text)
    except (OSError, ValueError):
        return
    out.append((addr, port))


# --- Peer wire (BEP 3) and uTP (BEP 29) ----------------------------------------------------

_HANDSHAKE = b"\x13BitTorrent protocol"
_UTP_SYN = 0x41  # type 4 (ST_SYN) << 4 | version 1
_UTP_HEADER = 20
# Extension types: 1 selective ACK (BEP 29), 2 extension bits (libutp, Transmission),
# 3 close reason (libtorrent).
_UTP_MAX_EXTENSION = 3
_UTP_MAX_EXTENSIONS = 4


def is_handshake(payload: bytes | memoryview) -> bool:
    """The plain peer-wire handshake: ``\\x13BitTorrent protocol`` at the start."""
    return len(payload) >= 20 and payload[:20] == _HANDSHAKE


def is_utp_syn(payload: bytes | memoryview) -> bool:
    """A uTP ST_SYN: the 20-byte header, byte 0 ``0x41``, then a chain of known extensions
    that ends exactly at the end of the datagram (a SYN carries no data)."""
    size = len(payload)
    if size < _UTP_HEADER or payload[0] != _UTP_SYN:
        return False
    extension, at = payload[1], _UTP_HEADER
    for _ in range(_UTP_MAX_EXTENSIONS):
        if extension == 0:
            break
        if extension > _UTP_MAX_EXTENSION or at + 2 > size:
            return False
        extension, length = payload[at], payload[at + 1]
        at += 2 + length
    return extension == 0 and at == size
