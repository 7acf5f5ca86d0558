"""Daemon-style BitTorrent leechers for the lab: transmission-daemon, qbittorrent-nox, rtorrent.

Each is started in its green namespace with a configuration that requires encryption, given the
torrent through its own control interface, and polled for progress until complete or the time
limit; then stopped. The configuration renderers and progress parsers are pure, for unit tests.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
import xmlrpc.client
from collections.abc import Callable
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


def transmission_settings(directory: Path, bind: str, encryption: int = 2) -> str:
    """settings.json: encryption required (2; a seeder uses 1, preferred), DHT/PEX/LPD/uTP on,
    RPC on loopback only."""
    check_lab_addr(bind)
    if encryption not in (0, 1, 2):
        raise LabError(f"transmission encryption is 0, 1 or 2: {encryption}")
    settings = {
        "encryption": encryption,
        "dht-enabled": True,
        "pex-enabled": True,
        "lpd-enabled": True,
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


def qbittorrent_conf(directory: Path) -> str:
    """qBittorrent.conf: encryption required (1), DHT/PEX/LSD on, no port mapping, no GeoIP."""
    return (
        "[LegalNotice]\nAccepted=true\n\n"
        "[BitTorrent]\n"
        "Session\\Encryption=1\n"
        "Session\\DHTEnabled=true\n"
        "Session\\PeXEnabled=true\n"
        "Session\\LSDEnabled=true\n"
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


def qbittorrent_progress(info: str) -> float:
    """Fraction done from ``/api/v2/torrents/info`` (a JSON list); 0 if empty or not JSON."""
    try:
        torrents = json.loads(info)
    except ValueError:
        return 0.0
    if not isinstance(torrents, list) or not torrents or not isinstance(torrents[0], dict):
        return 0.0
    return float(torrents[0].get("progress", 0.0))


def rtorrent_rc(directory: Path, torrent: Path | str, socket_path: Path, router: str) -> str:
    """rtorrent.rc: RC4 required both ways, DHT booted off the lab router, SCGI on a socket."""
    check_lab_addr(router.rsplit(":", 1)[0])
    return (
        f"directory.default.set = {directory}\n"
        f"session.path.set = {directory / 'session'}\n"
        f"network.port_range.set = {PEER_PORT}-{PEER_PORT}\n"
        "network.port_random.set = no\n"
        "protocol.encryption.set = require,require_RC4,allow_incoming,try_outgoing\n"
        "dht.mode.set = auto\n"
        "protocol.pex.set = yes\n"
        f'schedule2 = dht_boot,1,0,"dht.add_node={router}"\n'
        "system.daemon.set = true\n"
        f"network.scgi.open_local = {socket_path}\n"
        f'load.start_verbose = "{torrent}"\n'
    )


def scgi_request(body: bytes) -> bytes:
    """An SCGI request (netstring of headers, then the body) carrying an XML-RPC call."""
    headers = b"CONTENT_LENGTH\x00%d\x00SCGI\x001\x00" % len(body)
    return b"%d:%s,%s" % (len(headers), headers, body)


def rtorrent_progress(reply: bytes, size: int) -> float:
    """Fraction of the ``size``-byte payload done, from the SCGI reply to ``d.multicall2 ""
    main d.bytes_done= d.size_bytes=``.

    Only a row of exactly ``size`` bytes counts: from a magnet link rtorrent first lists the
    metadata download, which reaches 100 % long before the payload does.
    """
    body = reply.split(b"\r\n\r\n", 1)[-1]
    try:
        rows = xmlrpc.client.loads(body.decode(errors="replace"))[0][0]
        done = [row[0] for row in rows if row[1] == size]
    except (xmlrpc.client.Error, ExpatError, ValueError, IndexError, TypeError):
        return 0.0
    return max(done) / size if done and size else 0.0


def _rtorrent_query(socket_path: Path, size: int) -> float:
    call = xmlrpc.client.dumps(("", "main", "d.bytes_done=", "d.size_bytes="), "d.multicall2")
    try:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5)
            sock.connect(str(socket_path))
            sock.sendall(scgi_request(call.encode()))
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
    except OSError:
        return 0.0
    return rtorrent_progress(b"".join(chunks), size)


def _transmission_start(
    lab: BtLab, host: str, directory: Path, bind: str, encryption: int
) -> subprocess.Popen[bytes]:
    """transmission-daemon in ``host`` with its config under ``directory``, RPC listening."""
    config = directory / "config"
    config.mkdir()
    (config / "settings.json").write_text(transmission_settings(directory, bind, encryption))
    (config / "dht.bootstrap").write_text(dht_bootstrap(lab.router_ip, PEER_PORT))
    proc = lab.spawn(host, ["transmission-daemon", "-f", "-g", str(config)], f"{host}.log")
    lab.wait_listening(host, "tcp", "127.0.0.1", TRANSMISSION_RPC, proc, f"{host}.log")
    return proc


def _transmission_remote(lab: BtLab, host: str, *args: str) -> str:
    remote = ["transmission-remote", f"127.0.0.1:{TRANSMISSION_RPC}", *args]
    done = lab.run(host, remote, capture_output=True, text=True)
    return done.stdout + done.stderr


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
    lab: BtLab, client: str, torrent: Path | str, directory: Path, seconds: int
) -> tuple[int, str]:
    """Start ``client`` in its namespace, add ``torrent``, poll until done; (exit, what it said).

    Exit 0 means the client reported 100 %, 7 not complete in ``seconds``.
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
            return _transmission_start(lab, host, directory, lab.green[client], encryption=2)

        def add() -> str:
            return _transmission_remote(lab, host, "-a", str(torrent), "-w", str(directory))

        def progress() -> float:
            return transmission_progress(_transmission_remote(lab, host, "-t", "1", "-i"))

    elif client == "qbittorrent":
        profile = directory / "qbt"
        api = f"http://127.0.0.1:{QBT_WEBUI}/api/v2"

        def start() -> subprocess.Popen[bytes]:
            config = profile / "qBittorrent" / "config"
            config.mkdir(parents=True)
            (config / "qBittorrent.conf").write_text(qbittorrent_conf(directory))
            argv = ["qbittorrent-nox", f"--profile={profile}", f"--webui-port={QBT_WEBUI}"]
            return listening(argv, QBT_WEBUI)

        def add() -> str:
            what = (
                f"urls={torrent}" if str(torrent).startswith("magnet:") else f"torrents=@{torrent}"
            )
            return curl("-F", what, "-F", f"savepath={directory}", f"{api}/torrents/add")

        def progress() -> float:
            return qbittorrent_progress(curl(f"{api}/torrents/info"))

    elif client == "rtorrent":
        sock = directory / "rpc.sock"

        def start() -> subprocess.Popen[bytes]:
            (directory / "session").mkdir()
            rc = directory / "rtorrent.rc"
            rc.write_text(rtorrent_rc(directory, torrent, sock, f"{lab.router_ip}:{PEER_PORT}"))
            return lab.spawn(host, ["rtorrent", "-n", "-o", f"import={rc}"], log)

        def add() -> str:
            return "loaded by load.start_verbose"

        def progress() -> float:
            return _rtorrent_query(sock, lab.payload_size)

    else:
        raise LabError(f"not a daemon client: {client}")
    return _drive(client, start, add, progress, deadline)


def _drive(
    client: str,
    start: Callable[[], subprocess.Popen[bytes]],
    add: Callable[[], str],
    progress: Callable[[], float],
    deadline: float,
) -> tuple[int, str]:
    """Start, add, poll until 100 % or ``deadline``; always stop the client."""
    proc = start()
    try:
        said = add().strip()
        done = 0.0
        while time.monotonic() < deadline:
            done = progress()
            if done >= 1.0:
                return 0, f"{client} 100% ({said[:120]})"
            if proc.poll() is not None:
                return proc.returncode or 1, f"{client} exited at {done:.0%}"
            time.sleep(POLL)
        return 7, f"{client} {done:.1%} when time ran out ({said[:120]})"
    finally:
        stop_process(proc, STOP_WAIT)
