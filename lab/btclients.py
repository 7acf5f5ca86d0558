"""Daemon-style BitTorrent leechers for the lab: transmission-daemon, qbittorrent-nox, rtorrent.

Each is started in its green namespace with a configuration that requires encryption, given the
torrent through its own control interface, and polled for progress until complete or the time
limit; then stopped. The configuration renderers and progress parsers are pure, for unit tests.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import socket
import struct
import subprocess
import time
import xmlrpc.client
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from xml.parsers.expat import ExpatError

from lab.netlab import LabError, check_lab_addr, stop_process

if TYPE_CHECKING:
    from lab.btlab import BtLab

TRANSMISSION_RPC = 9091
TRANSMISSION_PEER = 51413
QBT_WEBUI = 8080
PEER_PORT = 6881
POLL = 0.5
STOP_WAIT = 5.0


@dataclass(frozen=True)
class Progress:
    """A leecher's own account: fraction done, payload bytes received, pieces complete."""

    fraction: float = 0.0
    received: int = 0
    pieces: int = 0


def popcount(bitfield: bytes) -> int:
    """Set bits in a piece bitfield: the pieces a client has."""
    return int.from_bytes(bitfield, "big").bit_count()


ARIA2_BLOCK = 16 * 1024


def aria2_progress(control: bytes) -> Progress:
    """Progress from aria2's control file (``FILE.aria2``, version 1, big-endian), which it
    writes when it stops before the end: the piece bitfield, then each piece in flight with a
    bitfield of its 16 KiB blocks. Unreadable or short: nothing."""
    try:
        version, _ext, hash_length = struct.unpack_from(">HII", control, 0)
        if version != 1:
            return Progress()
        offset = 10 + hash_length
        piece_length, total, _upload, length = struct.unpack_from(">IQQI", control, offset)
        offset += 24
        pieces = popcount(control[offset : offset + length])
        offset += length
        (in_flight,) = struct.unpack_from(">I", control, offset)
        offset += 4
        partial = 0
        for _ in range(in_flight):
            _index, size, length = struct.unpack_from(">III", control, offset)
            offset += 12
            partial += min(size, popcount(control[offset : offset + length]) * ARIA2_BLOCK)
            offset += length
    except struct.error:
        return Progress()
    done = min(total, pieces * piece_length) + partial
    return Progress(done / total if total else 0.0, done, pieces)


def transmission_settings(directory: Path, bind: str, encryption: int = 2, dht: bool = True) -> str:
    """settings.json: encryption required (2; a seeder uses 1, preferred), DHT/PEX/LPD (unless
    ``dht`` is off) and uTP on, RPC on loopback only."""
    check_lab_addr(bind)
    if encryption not in (0, 1, 2):
        raise LabError(f"transmission encryption is 0, 1 or 2: {encryption}")
    settings = {
        "encryption": encryption,
        "dht-enabled": dht,
        "pex-enabled": dht,
        "lpd-enabled": dht,
        "utp-enabled": True,
        "port-forwarding-enabled": False,
        "bind-address-ipv4": bind,
        "peer-port": TRANSMISSION_PEER,
        "download-dir": str(directory),
        "incomplete-dir-enabled": False,
        "rename-partial-files": False,
        "start-added-torrents": True,
        "rpc-enabled": True,
        "rpc-bind-address": "127.0.0.1",
        "rpc-port": TRANSMISSION_RPC,
        "rpc-authentication-required": False,
        "rpc-whitelist-enabled": False,
        "rpc-host-whitelist-enabled": False,
        "message-level": 2,
    }
    return json.dumps(settings, indent=1) + "\n"


def dht_bootstrap(router: str, port: int) -> str:
    """Transmission's ``dht.bootstrap`` file: one ``host port`` per line."""
    return f"{check_lab_addr(router)} {port}\n"


def transmission_progress(info: str) -> float:
    """Fraction done from ``transmission-remote -t 1 -i``; 0 before the torrent shows up."""
    found = re.search(r"Percent Done:\s*([0-9.]+)%", info)
    return float(found.group(1)) / 100 if found else 0.0


def transmission_rpc_progress(reply: str) -> Progress:
    """Progress from a ``torrent-get`` reply (percentDone, downloadedEver, pieces as a base64
    bitfield); nothing before the torrent shows up or on a bad reply."""
    try:
        torrent = json.loads(reply)["arguments"]["torrents"][0]
        return Progress(
            float(torrent["percentDone"]),
            int(torrent["downloadedEver"]),
            popcount(base64.b64decode(torrent["pieces"], validate=True)),
        )
    except (ValueError, KeyError, IndexError, TypeError, binascii.Error):
        return Progress()


def qbittorrent_conf(directory: Path, dht: bool = True) -> str:
    """qBittorrent.conf: encryption required (1), DHT/PEX/LSD on unless ``dht`` is off, no port
    mapping, no GeoIP; HTTPS tracker certificates not checked (the lab's is self-signed)."""
    on = "true" if dht else "false"
    return (
        "[LegalNotice]\nAccepted=true\n\n"
        "[BitTorrent]\n"
        "Session\\Encryption=1\n"
        f"Session\\DHTEnabled={on}\n"
        f"Session\\PeXEnabled={on}\n"
        f"Session\\LSDEnabled={on}\n"
        "Session\\ValidateHTTPSTrackerCertificate=false\n"
        f"Session\\Port={PEER_PORT}\n"
        f"Session\\DefaultSavePath={directory}\n\n"
        "[Network]\nPortForwardingEnabled=false\n\n"
        "[Preferences]\n"
        "Connection\\ResolvePeerCountries=false\n"
        "Connection\\UPnP=false\n"
        "WebUI\\Address=127.0.0.1\n"
        f"WebUI\\Port={QBT_WEBUI}\n"
        "WebUI\\LocalHostAuth=false\n"
        "WebUI\\CSRFProtection=false\n"
        "WebUI\\HostHeaderValidation=false\n"
    )


def qbittorrent_progress(properties: str) -> Progress:
    """Progress from ``/api/v2/torrents/properties`` (pieces_have of pieces_num,
    total_downloaded); nothing before the torrent (or a magnet's metadata) is there."""
    try:
        info = json.loads(properties)
        have, total = int(info["pieces_have"]), int(info["pieces_num"])
        received = int(info["total_downloaded"])
    except (ValueError, KeyError, TypeError):
        return Progress()
    return Progress(have / total if total > 0 else 0.0, received, have)


def rtorrent_rc(
    directory: Path, torrent: Path | str, socket_path: Path, router: str, dht: bool = True
) -> str:
    """rtorrent.rc: RC4 required both ways, DHT booted off the lab router (unless ``dht`` is
    off: no DHT, no PEX), SCGI on a socket, HTTPS trackers' certificates not checked."""
    check_lab_addr(router.rsplit(":", 1)[0])
    discovery = (
        "dht.mode.set = auto\n"
        "protocol.pex.set = yes\n"
        f'schedule2 = dht_boot,1,0,"dht.add_node={router}"\n'
        if dht
        else "dht.mode.set = disable\nprotocol.pex.set = no\n"
    )
    return (
        f"directory.default.set = {directory}\n"
        f"session.path.set = {directory / 'session'}\n"
        f"network.port_range.set = {PEER_PORT}-{PEER_PORT}\n"
        "network.port_random.set = no\n"
        "protocol.encryption.set = require,require_RC4,allow_incoming,try_outgoing\n"
        f"{discovery}"
        "network.http.ssl_verify_peer.set = 0\n"
        "network.http.ssl_verify_host.set = 0\n"
        "system.daemon.set = true\n"
        f"network.scgi.open_local = {socket_path}\n"
        f'load.start_verbose = "{torrent}"\n'
    )


def scgi_request(body: bytes) -> bytes:
    """An SCGI request (netstring of headers, then the body) carrying an XML-RPC call."""
    headers = b"CONTENT_LENGTH\x00%d\x00SCGI\x001\x00" % len(body)
    return b"%d:%s,%s" % (len(headers), headers, body)


RTORRENT_FIELDS = ("d.bytes_done=", "d.size_bytes=", "d.completed_chunks=", "d.down.total=")


def rtorrent_progress(reply: bytes, size: int) -> Progress:
    """Progress of the ``size``-byte payload from the SCGI reply to ``d.multicall2 "" main``
    with ``RTORRENT_FIELDS``.

    Only a row of exactly ``size`` bytes counts: from a magnet link rtorrent first lists the
    metadata download, which reaches 100 % long before the payload does.
    """
    body = reply.split(b"\r\n\r\n", 1)[-1]
    try:
        rows = xmlrpc.client.loads(body.decode(errors="replace"))[0][0]
        done, received, pieces = max(
            row[:1] + row[3:4] + row[2:3] for row in rows if row[1] == size
        )
    except (xmlrpc.client.Error, ExpatError, ValueError, IndexError, TypeError):
        return Progress()
    return Progress(done / size if size else 0.0, int(received), int(pieces))


def _rtorrent_query(socket_path: Path, size: int) -> Progress:
    call = xmlrpc.client.dumps(("", "main", *RTORRENT_FIELDS), "d.multicall2")
    try:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5)
            sock.connect(str(socket_path))
            sock.sendall(scgi_request(call.encode()))
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
    except OSError:
        return Progress()
    return rtorrent_progress(b"".join(chunks), size)


def _transmission_start(
    lab: BtLab, host: str, directory: Path, bind: str, encryption: int, dht: bool = True
) -> subprocess.Popen[bytes]:
    """transmission-daemon in ``host`` with its config under ``directory``, RPC listening.

    ``TR_CURL_SSL_NO_VERIFY``: transmission's own switch to accept the lab tracker's
    self-signed HTTPS certificate (it has no setting for a CA file).
    """
    config = directory / "config"
    config.mkdir()
    settings = transmission_settings(directory, bind, encryption, dht)
    (config / "settings.json").write_text(settings)
    (config / "dht.bootstrap").write_text(dht_bootstrap(lab.router_ip, PEER_PORT))
    argv = ["env", "TR_CURL_SSL_NO_VERIFY=1", "transmission-daemon", "-f", "-g", str(config)]
    proc = lab.spawn(host, argv, f"{host}.log")
    lab.wait_listening(host, "tcp", "127.0.0.1", TRANSMISSION_RPC, proc, f"{host}.log")
    return proc


def _transmission_remote(lab: BtLab, host: str, *args: str) -> str:
    remote = ["transmission-remote", f"127.0.0.1:{TRANSMISSION_RPC}", *args]
    done = lab.run(host, remote, capture_output=True, text=True)
    return done.stdout + done.stderr


TRANSMISSION_FIELDS = ("percentDone", "downloadedEver", "pieces")
SESSION_ID_RE = re.compile(r"^X-Transmission-Session-Id:\s*(\S+)", re.I | re.M)


def _transmission_get(lab: BtLab, host: str) -> Progress:
    """``torrent-get`` over transmission's RPC with curl (the session-id handshake first)."""
    url = f"http://127.0.0.1:{TRANSMISSION_RPC}/transmission/rpc"
    head = lab.run(host, ["curl", "-s", "-m", "5", "-o", "/dev/null", "-D", "-", url],
                   capture_output=True, text=True).stdout  # fmt: skip
    session = SESSION_ID_RE.search(head)
    if session is None:
        return Progress()
    body = json.dumps({"method": "torrent-get", "arguments": {"fields": TRANSMISSION_FIELDS}})
    header = f"X-Transmission-Session-Id: {session.group(1)}"
    done = lab.run(host, ["curl", "-s", "-m", "5", "-H", header, "-d", body, url],
                   capture_output=True, text=True)  # fmt: skip
    return transmission_rpc_progress(done.stdout)


def start_transmission_seeder(
    lab: BtLab, host: str, bind: str, torrent: Path, directory: Path, timeout: float = 60
) -> None:
    """A public transmission-daemon seeding the payload in ``directory`` once it has checked it."""
    proc = _transmission_start(lab, host, directory, bind, encryption=1)
    _transmission_remote(lab, host, "-a", str(torrent), "-w", str(directory))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if transmission_progress(_transmission_remote(lab, host, "-t", "1", "-i")) >= 1.0:
            return
        if proc.poll() is not None:
            break
        time.sleep(POLL)
    raise LabError(f"the transmission seeder in {host} did not verify the payload in {timeout}s")


def run_daemon_client(
    lab: BtLab,
    client: str,
    torrent: Path | str,
    directory: Path,
    seconds: float,
    dht: bool = True,
) -> tuple[int, str, Progress]:
    """Start ``client`` in its namespace, add ``torrent``, poll until done; (exit, what it said,
    its last progress).

    Exit 0 means the client reported 100 %, 7 not complete in ``seconds``. ``dht`` off turns
    DHT, PEX and LSD off (the HTTPS-tracker-only row).
    """
    host = lab.green_host(client)
    deadline = time.monotonic() + seconds
    log = f"{host}.log"

    def curl(*args: str) -> str:
        done = lab.run(host, ["curl", "-s", "-m", "5", *args], capture_output=True, text=True)
        return done.stdout

    def listening(argv: list[str], port: int) -> subprocess.Popen[bytes]:
        proc = lab.spawn(host, argv, log)
        lab.wait_listening(host, "tcp", "127.0.0.1", port, proc, log)
        return proc

    if client == "transmission":

        def start() -> subprocess.Popen[bytes]:
            return _transmission_start(lab, host, directory, lab.green[client], 2, dht)

        def add() -> str:
            return _transmission_remote(lab, host, "-a", str(torrent), "-w", str(directory))

        def progress() -> Progress:
            return _transmission_get(lab, host)

    elif client == "qbittorrent":
        profile = directory / "qbt"
        api = f"http://127.0.0.1:{QBT_WEBUI}/api/v2"

        def start() -> subprocess.Popen[bytes]:
            config = profile / "qBittorrent" / "config"
            config.mkdir(parents=True)
            (config / "qBittorrent.conf").write_text(qbittorrent_conf(directory, dht))
            argv = ["qbittorrent-nox", f"--profile={profile}", f"--webui-port={QBT_WEBUI}"]
            return listening(argv, QBT_WEBUI)

        def add() -> str:
            what = (
                f"urls={torrent}" if str(torrent).startswith("magnet:") else f"torrents=@{torrent}"
            )
            return curl("-F", what, "-F", f"savepath={directory}", f"{api}/torrents/add")

        def progress() -> Progress:
            return qbittorrent_progress(curl(f"{api}/torrents/properties?hash={lab.info_hash}"))

    elif client == "rtorrent":
        sock = directory / "rpc.sock"

        def start() -> subprocess.Popen[bytes]:
            (directory / "session").mkdir()
            rc = directory / "rtorrent.rc"
            router = f"{lab.router_ip}:{PEER_PORT}"
            rc.write_text(rtorrent_rc(directory, torrent, sock, router, dht))
            return lab.spawn(host, ["rtorrent", "-n", "-o", f"import={rc}"], log)

        def add() -> str:
            return "loaded by load.start_verbose"

        def progress() -> Progress:
            return _rtorrent_query(sock, lab.payload_size)

    else:
        raise LabError(f"not a daemon client: {client}")
    return _drive(client, start, add, progress, deadline)


def _drive(
    client: str,
    start: Callable[[], subprocess.Popen[bytes]],
    add: Callable[[], str],
    progress: Callable[[], Progress],
    deadline: float,
) -> tuple[int, str, Progress]:
    """Start, add, poll until 100 % or ``deadline``; always stop the client.

    The progress kept is the furthest seen: a poll that fails (the client busy) reads as none.
    """
    proc = start()
    best = Progress()
    try:
        said = add().strip()
        while time.monotonic() < deadline:
            now = progress()
            best = max(best, now, key=lambda p: (p.fraction, p.pieces, p.received))
            if best.fraction >= 1.0:
                return 0, f"{client} 100% ({said[:120]})", best
            if proc.poll() is not None:
                return proc.returncode or 1, f"{client} exited at {best.fraction:.0%}", best
            time.sleep(POLL)
        return 7, f"{client} {best.fraction:.1%} when time ran out ({said[:120]})", best
    finally:
        stop_process(proc, STOP_WAIT)
