"""A namespace lab with a real public BitTorrent swarm and real green leechers (issue 11, §3).

Topology (addresses only in 198.18.0.0/15; namespaces ``p2pb<6 hex>-<host>``)::

    green 198.18.1.10.. ─ green0 (bridge) ─ gw ─ public0 (bridge) ─ tracker 198.19.0.2:6969
    (a namespace per      198.18.1.1/24           198.19.0.1/16      seedlt  198.19.0.11:6881
     leecher, each with                                              seedar  198.19.0.13:6881
     an egress guard)                                                dhtr    198.19.0.21:6881
                                                                     dhtn    198.19.1.1..N:6881

``gw`` forwards without NAT and has no default route: nothing leaves the lab. Every green
namespace also gets an nft egress guard (loopback, 198.18.0.0/15 and multicast only; the rest is
rejected and counted), because real clients do try other addresses (rtorrent 0.9.8 misreads DHT
``values``). The payload is random data made at run time; leechers must require encryption.

    python -m lab.btlab control [--clients aria2,libtorrent] [--mib 20] [--seconds 120]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote_from_bytes

from lab.btclients import (
    Progress,
    aria2_progress,
    run_daemon_client,
    start_transmission_seeder,
)
from lab.netlab import LabError, await_listener, check_lab_addr
from p2pwall.bencode import encode

HERE = Path(__file__).resolve().parent
BTNODE = HERE / "btnode.py"
BTUSER = HERE / "btuser.py"
SYSTEM_PYTHON = "/usr/bin/python3"

GW_GREEN = "198.18.1.1"
GW_PUBLIC = "198.19.0.1"
GREEN_BASE = 10
TRACKER = "198.19.0.2"
TRACKER_PORT = 6969
SEED_LT = "198.19.0.11"
SEED_TRANSMISSION = "198.19.0.12"
SEED_ARIA2 = "198.19.0.13"
DHT_ROUTER = "198.19.0.21"
BT_PORT = 6881
HTTPS_PORT = 443
# The ordinary user's services (web, DNS, a UDP echo) on one public host.
SVC = "198.19.0.80"
WEB_PORT = 80
DNS_PORT = 53
ECHO_PORT = 7
WEB_NAME = "www.lab.test"
PUBLIC_HOSTS = {
    "tracker": TRACKER,
    "seedlt": SEED_LT,
    "seedtr": SEED_TRANSMISSION,
    "seedar": SEED_ARIA2,
    "dhtr": DHT_ROUTER,
    "svc": SVC,
}
SEEDERS = (SEED_LT, SEED_TRANSMISSION, SEED_ARIA2)
# The ordinary green user: browses, resolves, sends UDP; never runs a BitTorrent client.
USER_HOST = "user"
USER_IP = "198.18.1.30"
MAX_DHT_NODES = 64
PAYLOAD_NAME = "payload.bin"
PIECE_LENGTH = 256 * 1024
# Names clients have built in as DHT routers; each green host's /etc/netns hosts file maps
# them to the lab's router node, so no client ever looks them up outside.
ROUTER_NAMES = (
    "router.bittorrent.com",
    "router.utorrent.com",
    "dht.transmissionbt.com",
    "dht.libtorrent.org",
    "dht.aelitis.com",
)
GUARD_TABLE = "p2pbguard"
SOURCES = ("http", "udp", "all", "magnet", "https")
DAEMON_CLIENTS = ("transmission", "qbittorrent", "rtorrent")
CLIENTS = ("aria2", "libtorrent", *DAEMON_CLIENTS)
# Short names: a green host is ``g-<tag>`` and its veth in gw ``v-g-<tag>`` (15 characters max).
TAGS = {
    "aria2": "ar",
    "libtorrent": "lt",
    "transmission": "tr",
    "qbittorrent": "qb",
    "rtorrent": "rt",
}
# The program each client needs; libtorrent is the python3-libtorrent module instead.
PROGRAMS = {
    "aria2": "aria2c",
    "transmission": "transmission-daemon",
    "qbittorrent": "qbittorrent-nox",
    "rtorrent": "rtorrent",
}
RUN_ID_RE = re.compile(r"[0-9a-f]{6}")
STOP_WAIT = 3.0


# -- pure helpers: torrents, magnets, guard, client command lines ----------------------


@dataclass(frozen=True)
class Torrent:
    """A metainfo file's bytes and its info-hash (hex)."""

    data: bytes
    info_hash: str


def piece_hashes(path: Path, piece_length: int = PIECE_LENGTH) -> bytes:
    """The SHA-1 of each piece of ``path``, concatenated (the ``pieces`` key)."""
    out = bytearray()
    with path.open("rb") as handle:
        while chunk := handle.read(piece_length):
            out += hashlib.sha1(chunk).digest()
    return bytes(out)


def make_torrent(
    path: Path, tiers: Sequence[Sequence[str]], piece_length: int = PIECE_LENGTH
) -> Torrent:
    """A single-file torrent of ``path`` announcing to ``tiers`` (one list of URLs per tier).

    No tiers makes a trackerless torrent (DHT only). Same payload, same info dict, same hash,
    whatever the tiers: the HTTP-only and UDP-only copies are one swarm.
    """
    if piece_length <= 0 or piece_length & (piece_length - 1):
        raise LabError(f"piece length must be a power of two: {piece_length}")
    info = {
        "length": path.stat().st_size,
        "name": path.name,
        "piece length": piece_length,
        "pieces": piece_hashes(path, piece_length),
    }
    meta: dict[str, Any] = {"info": info}
    tiers = [list(tier) for tier in tiers if tier]
    if tiers:
        meta["announce"] = tiers[0][0]
        meta["announce-list"] = tiers
    return Torrent(encode(meta), hashlib.sha1(encode(info)).hexdigest())


def tracker_urls(ip: str = TRACKER, port: int = TRACKER_PORT) -> dict[str, str]:
    check_lab_addr(ip)
    return {"http": f"http://{ip}:{port}/announce", "udp": f"udp://{ip}:{port}/announce"}


def magnet(info_hash: str, name: str | None = None, trackers: Iterable[str] = ()) -> str:
    """A magnet link; without trackers it is the bare DHT-only form ``magnet:?xt=urn:btih:H``."""
    if not re.fullmatch(r"[0-9a-f]{40}", info_hash):
        raise LabError(f"info-hash must be 40 lower-case hex digits: {info_hash!r}")
    parts = [f"xt=urn:btih:{info_hash}"]
    if name:
        parts.append("dn=" + quote_from_bytes(name.encode(), safe=""))
    parts += ["tr=" + quote_from_bytes(url.encode(), safe="") for url in trackers]
    return "magnet:?" + "&".join(parts)


def guard_ruleset(table: str = GUARD_TABLE) -> str:
    """nft script for a green namespace: only loopback, the lab range and multicast may leave."""
    return (
        f"table inet {table} {{\n"
        "  chain out {\n"
        "    type filter hook output priority 0; policy accept;\n"
        '    oif "lo" accept\n'
        "    ip daddr 198.18.0.0/15 accept\n"
        "    ip daddr 224.0.0.0/4 accept\n"
        "    counter reject\n"
        "  }\n"
        "}\n"
    )


def guard_rejects(listing: str) -> int:
    """Packets the guard rejected, from ``nft list table inet p2pbguard``."""
    found = re.search(r"counter packets (\d+) bytes \d+ reject", listing)
    if found is None:
        raise LabError("no egress guard counter in the nft listing")
    return int(found.group(1))


def hosts_file(router: str = DHT_ROUTER) -> str:
    check_lab_addr(router)
    return "127.0.0.1 localhost\n" + "".join(f"{router} {name}\n" for name in ROUTER_NAMES)


def resolv_conf() -> str:
    """A resolver inside the lab that nobody runs: look-ups fail fast and stay in the lab."""
    return "nameserver 198.19.0.53\noptions timeout:1 attempts:1\n"


def aria2_leech_argv(
    torrent: Path | str, directory: Path, seconds: float, dht: bool = True
) -> list[str]:
    """aria2c as a green leecher: encryption required (ARC4), DHT/PEX/LPD on unless ``dht`` is
    off, IPv6 off, the lab tracker's self-signed HTTPS certificate accepted.

    ``torrent`` is a .torrent file or a magnet link.
    """
    on = "true" if dht else "false"
    return [
        "aria2c",
        f"--dir={directory}",
        "--bt-require-crypto=true",
        "--bt-min-crypto-level=arc4",
        f"--enable-dht={on}",
        f"--dht-entry-point={DHT_ROUTER}:{BT_PORT}",
        f"--dht-file-path={directory / 'dht.dat'}",
        f"--enable-peer-exchange={on}",
        f"--bt-enable-lpd={on}",
        "--check-certificate=false",
        "--disable-ipv6=true",
        "--seed-time=0",
        f"--stop={int(seconds)}",
        "--file-allocation=none",
        "--summary-interval=0",
        "--console-log-level=warn",
        f"--log={directory / 'aria2.log'}",
        "--log-level=info",
        str(torrent),
    ]


def aria2_seed_argv(torrent: Path, directory: Path, seconds: int) -> list[str]:
    """aria2c as a public seeder of the payload already in ``directory``."""
    return [
        "aria2c",
        f"--dir={directory}",
        "--check-integrity=true",
        "--seed-ratio=0.0",
        "--enable-dht=true",
        f"--dht-entry-point={DHT_ROUTER}:{BT_PORT}",
        f"--dht-file-path={directory / 'dht.dat'}",
        f"--dht-listen-port={BT_PORT}",
        f"--listen-port={BT_PORT}",
        "--bt-enable-lpd=false",
        "--disable-ipv6=true",
        f"--stop={seconds}",
        "--summary-interval=0",
        "--console-log-level=warn",
        str(torrent),
    ]


def btnode_argv(
    role: str,
    binds: Sequence[str],
    seconds: float,
    router: str | None = None,
    torrent: Path | str | None = None,
    directory: Path | None = None,
    dht: bool = True,
) -> list[str]:
    """The system Python running ``btnode.py`` in one of its roles (``dht`` off: no DHT, PEX)."""
    if role not in ("dht", "seed", "leech"):
        raise LabError(f"unknown btnode role {role!r}")
    if not binds:
        raise LabError("btnode needs at least one --bind")
    argv = [SYSTEM_PYTHON, str(BTNODE), role, "--seconds", str(seconds)]
    for bind in binds:
        check_lab_addr(bind.rsplit(":", 1)[0])
        argv += ["--bind", bind]
    if router:
        argv += ["--router", router]
    if role != "dht":
        if torrent is None or directory is None:
            raise LabError(f"btnode {role} needs a torrent and a directory")
        argv += ["--torrent", str(torrent), "--dir", str(directory)]
    return argv if dht else [*argv, "--no-dht"]


def opentracker_argv(whitelist: str, ip: str = TRACKER, port: int = TRACKER_PORT) -> list[str]:
    """opentracker on HTTP and UDP ``port``; Debian's build serves only whitelisted hashes."""
    check_lab_addr(ip)
    return [
        "opentracker",
        "-i",
        ip,
        "-p",
        str(port),
        "-P",
        str(port),
        "-w",
        whitelist,
        "-d",
        ".",
        "-u",
        "nobody",
    ]


def tls_front_argv(
    cert: Path, key: Path, seconds: float, ip: str = TRACKER, port: int = HTTPS_PORT
) -> list[str]:
    """socat terminating TLS on ``ip:port`` in front of opentracker's HTTP port (opentracker
    speaks no TLS), ending after ``seconds``."""
    check_lab_addr(ip)
    listen = f"OPENSSL-LISTEN:{port},bind={ip},reuseaddr,fork,cert={cert},key={key},verify=0"
    return ["timeout", str(int(seconds)), "socat", listen, f"TCP:{ip}:{TRACKER_PORT}"]


def self_signed_argv(cert: Path, key: Path, ip: str = TRACKER) -> list[str]:
    """openssl making a one-day self-signed certificate for ``ip`` (clients are told not to
    check it: the point of the HTTPS row is that the gateway sees only TLS)."""
    check_lab_addr(ip)
    return ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", f"/CN={ip}", "-addext", f"subjectAltName=IP:{ip}",
            "-keyout", str(key), "-out", str(cert)]  # fmt: skip


def dnsmasq_argv(workdir: Path, ip: str = SVC, name: str = WEB_NAME) -> list[str]:
    """dnsmasq on ``ip``:53 answering only ``name`` -> ``ip`` (the user's DNS)."""
    check_lab_addr(ip)
    return ["dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv",
            "--no-hosts", "--bind-interfaces", f"--listen-address={ip}", f"--port={DNS_PORT}",
            f"--pid-file={workdir / 'dnsmasq.pid'}", "--user=root",
            f"--host-record={name},{ip}"]  # fmt: skip


def dht_node_addrs(count: int) -> list[str]:
    if not 0 <= count <= MAX_DHT_NODES:
        raise LabError(f"DHT nodes must be 0..{MAX_DHT_NODES}: {count}")
    return [f"198.19.1.{i + 1}" for i in range(count)]


def parse_clients(text: str) -> list[str]:
    """A comma-separated client list, each one of CLIENTS, no repeats."""
    chosen = [word.strip() for word in text.split(",") if word.strip()]
    unknown = [name for name in chosen if name not in CLIENTS]
    if unknown or not chosen or len(set(chosen)) != len(chosen):
        raise LabError(f"clients must be distinct names from {', '.join(CLIENTS)}: {text!r}")
    return chosen


def client_missing(client: str) -> str | None:
    """Why ``client`` cannot run here (what to install), or None."""
    if client in PROGRAMS:
        program = PROGRAMS[client]
        return None if shutil.which(program) else f"{program} (scripts/install-bt-lab.sh)"
    if not _has_libtorrent():
        return "python3-libtorrent for /usr/bin/python3 (scripts/install-bt-lab.sh)"
    return None


def swarm_missing() -> str | None:
    """Why the swarm cannot be built here, or None."""
    if os.geteuid() != 0:
        return "needs root: the BitTorrent lab builds network namespaces"
    missing = [
        tool
        for tool in ("ip", "nft", "opentracker", "aria2c", "transmission-daemon")
        if shutil.which(tool) is None
    ]
    if missing:
        return f"needs {', '.join(missing)} (scripts/install-bt-lab.sh installs the clients)"
    if not _has_libtorrent():
        return "needs python3-libtorrent for /usr/bin/python3 (scripts/install-bt-lab.sh)"
    return None


def _has_libtorrent() -> bool:
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        return False
    done = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import libtorrent"], capture_output=True, timeout=30, check=False
    )
    return done.returncode == 0


# -- the lab ----------------------------------------------------------------------------------


@dataclass
class LeechResult:
    """What one green leecher did: complete and byte-exact, how long, what it says, and its own
    count of payload bytes received and pieces completed."""

    client: str
    complete: bool
    seconds: float
    detail: str
    guard_rejects: int
    received: int = 0
    pieces: int = 0


class BtLab:
    """Builds the swarm's namespaces, runs the swarm and leechers, and always tears down.

    ``green_if``, ``run``, ``spawn`` and ``read_log`` are what ``lab.gateway.Gateway`` uses, so
    the real daemon runs in this lab's ``gw`` as in the FastTrack lab.
    """

    router_ip = DHT_ROUTER
    green_if = "green0"

    def __init__(
        self,
        clients: Sequence[str] = CLIENTS,
        dht_nodes: int = 16,
        mib: float = 20,
        run_id: str | None = None,
    ) -> None:
        self.clients = parse_clients(",".join(clients))
        self.dht_addrs = dht_node_addrs(dht_nodes)
        if not 0 < mib <= 256:
            raise LabError(f"payload size must be in (0, 256] MiB: {mib}")
        self.payload_size = int(mib * 1024 * 1024)
        self.run_id = run_id or secrets.token_hex(3)
        if not RUN_ID_RE.fullmatch(self.run_id):
            raise LabError(f"run id must be 6 lower-case hex digits: {self.run_id!r}")
        self.prefix = f"p2pb{self.run_id}-"
        self.workdir = Path(tempfile.gettempdir()) / f"p2pb{self.run_id}-lab"
        self.green = {name: f"198.18.1.{GREEN_BASE + i}" for i, name in enumerate(self.clients)}
        self.procs: list[subprocess.Popen[bytes]] = []
        self.runs = 0
        self.torrents: dict[str, Path] = {}
        self.info_hash = ""
        self._old_term: Any = None
        self._down = True

    # -- naming -------------------------------------------------------------------------------

    def ns(self, host: str) -> str:
        return self.prefix + host

    @staticmethod
    def green_host(client: str) -> str:
        """The host (namespace suffix) of ``client``'s green machine."""
        return f"g-{TAGS[client]}"

    @property
    def hosts(self) -> list[str]:
        return [
            "gw",
            *PUBLIC_HOSTS,
            *(["dhtn"] if self.dht_addrs else []),
            *(self.green_host(name) for name in self.clients),
            USER_HOST,
        ]

    @property
    def green_hosts(self) -> dict[str, str]:
        """Every green host (the leechers' and the user's) and its address."""
        return {
            **{self.green_host(name): ip for name, ip in self.green.items()},
            USER_HOST: USER_IP,
        }

    # -- building -----------------------------------------------------------------------------

    def __enter__(self) -> BtLab:
        return self.setup()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.teardown()

    def setup(self) -> BtLab:
        reason = swarm_missing()
        if reason:
            raise LabError(reason)
        self._down = False
        # Until teardown, SIGTERM raises SystemExit, so ``with`` still tears the lab down.
        self._old_term = signal.signal(signal.SIGTERM, _exit_on_term)
        try:
            self.workdir.mkdir(mode=0o700)
            self._build()
        except BaseException:
            self.teardown()
            raise
        return self

    def _build(self) -> None:
        for host in self.hosts:
            self._ip("netns", "add", self.ns(host))
            self._sysctl(
                host, "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"
            )
            self._ip("-n", self.ns(host), "link", "set", "lo", "up")
        gw = self.ns("gw")
        # Bridged green-to-green frames stay off iptables, as on a real switch (-e: the keys
        # exist only while br_netfilter is loaded).
        self._sysctl("gw", "-e", "net.ipv4.ip_forward=1", "net.bridge.bridge-nf-call-iptables=0",
                     "net.bridge.bridge-nf-call-ip6tables=0",
                     "net.bridge.bridge-nf-call-arptables=0")  # fmt: skip
        for bridge, addr in (("green0", f"{GW_GREEN}/24"), ("public0", f"{GW_PUBLIC}/16")):
            self._ip("-n", gw, "link", "add", bridge, "type", "bridge")
            self._ip("-n", gw, "addr", "add", addr, "dev", bridge)
            self._ip("-n", gw, "link", "set", bridge, "up")
        public = {**PUBLIC_HOSTS, **({"dhtn": self.dht_addrs[0]} if self.dht_addrs else {})}
        for host, ip in public.items():
            self._attach(host, "public0", f"{ip}/16", GW_PUBLIC, "198.18.0.0/15")
        for extra in self.dht_addrs[1:]:
            self._ip("-n", self.ns("dhtn"), "addr", "add", f"{extra}/16", "dev", "eth0")
        for host, ip in self.green_hosts.items():
            self._attach(host, "green0", f"{ip}/24", GW_GREEN, "default")
            self._guard(host)
            etc = Path("/etc/netns") / self.ns(host)
            etc.mkdir(parents=True, exist_ok=True)
            (etc / "hosts").write_text(hosts_file())
            (etc / "resolv.conf").write_text(resolv_conf())

    def _attach(self, host: str, bridge: str, cidr: str, via: str, dest: str) -> None:
        """A veth from ``host`` (eth0) to ``bridge`` in gw, with one route through gw."""
        port = f"v-{host}"
        self._ip(
            "link",
            "add",
            port,
            "netns",
            self.ns("gw"),
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            self.ns(host),
        )
        self._ip("-n", self.ns("gw"), "link", "set", port, "master", bridge, "up")
        self._ip("-n", self.ns(host), "addr", "add", cidr, "dev", "eth0")
        self._ip("-n", self.ns(host), "link", "set", "eth0", "up")
        self._ip("-n", self.ns(host), "route", "add", dest, "via", via)

    def _guard(self, host: str) -> None:
        done = self.run(
            host, ["nft", "-f", "-"], input=guard_ruleset().encode(), capture_output=True
        )
        if done.returncode:
            raise LabError(f"egress guard in {host}: {done.stderr.decode().strip()}")

    def guard_rejects(self, host: str) -> int:
        done = self.run(host, ["nft", "list", "table", "inet", GUARD_TABLE], capture_output=True)
        return guard_rejects(done.stdout.decode())

    def _ip(self, *args: str) -> None:
        done = subprocess.run(
            ["ip", *args], capture_output=True, text=True, timeout=30, check=False
        )
        if done.returncode:
            raise LabError(f"`ip {' '.join(args)}` failed: {done.stderr.strip()}")

    def _sysctl(self, host: str, *settings: str) -> None:
        done = self.run(host, ["sysctl", "-q", "-w", *settings], capture_output=True)
        if done.returncode:
            raise LabError(f"sysctl in {host}: {done.stderr.decode().strip()}")

    # -- running ------------------------------------------------------------------------------

    def run(self, host: str, argv: Sequence[str], **kw: Any) -> subprocess.CompletedProcess[Any]:
        """``subprocess.run`` in ``host``'s namespace; 60 s unless told."""
        kw.setdefault("timeout", 60)
        kw.setdefault("check", False)
        return subprocess.run(["ip", "netns", "exec", self.ns(host), *argv], **kw)

    def spawn(
        self,
        host: str,
        argv: Sequence[str],
        log: str,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        """A background process in ``host`` (teardown stops it), output to ``log`` in workdir."""
        with open(self.workdir / log, "ab") as out:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", self.ns(host), *argv],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=env,
                start_new_session=True,
            )
        self.procs.append(proc)
        return proc

    def read_log(self, name: str) -> str:
        """A log file of the workdir ('' before it exists)."""
        path = self.workdir / name
        return path.read_text(errors="replace") if path.exists() else ""

    def wait_listening(
        self,
        host: str,
        proto: str,
        ip: str,
        port: int,
        proc: subprocess.Popen[bytes],
        log: str,
        timeout: float = 15.0,
    ) -> None:
        # By port: aria2 listens on the wildcard address, the others on ``ip``.
        read = partial((self.workdir / log).read_text, errors="replace")
        await_listener(self.run, host, proto, [f"sport = :{port}"], proc, (log, read), timeout)

    def start_swarm(self, lifetime: int = 900, settle: float = 5.0) -> None:
        """Payload, torrents, tracker, DHT, seeders (libtorrent, aria2, transmission-daemon).

        Each process ends by itself after ``lifetime`` seconds (transmission is stopped by
        teardown).
        """
        payload = self.workdir / PAYLOAD_NAME
        with payload.open("wb") as handle:
            left = self.payload_size
            while left:
                chunk = min(left, 1 << 20)
                handle.write(os.urandom(chunk))
                left -= chunk
        urls = tracker_urls()
        for name, tiers in {
            "all": [[urls["http"]], [urls["udp"]]],
            "http": [[urls["http"]]],
            "udp": [[urls["udp"]]],
        }.items():
            torrent = make_torrent(payload, tiers)
            path = self.workdir / f"{name}.torrent"
            path.write_bytes(torrent.data)
            self.torrents[name] = path
            self.info_hash = torrent.info_hash
        trackdir = self.workdir / "tracker"
        trackdir.mkdir()
        (trackdir / "whitelist.txt").write_text(self.info_hash + "\n")
        tracker = self.spawn(
            "tracker", opentracker_argv("whitelist.txt"), "tracker.log", cwd=trackdir
        )
        self.wait_listening("tracker", "tcp", TRACKER, TRACKER_PORT, tracker, "tracker.log")
        self.wait_listening("tracker", "udp", TRACKER, TRACKER_PORT, tracker, "tracker.log")
        router = f"{DHT_ROUTER}:{BT_PORT}"
        proc = self.spawn("dhtr", btnode_argv("dht", [router], lifetime), "dhtr.log")
        self.wait_listening("dhtr", "udp", DHT_ROUTER, BT_PORT, proc, "dhtr.log")
        if self.dht_addrs:
            binds = [f"{ip}:{BT_PORT}" for ip in self.dht_addrs]
            proc = self.spawn("dhtn", btnode_argv("dht", binds, lifetime, router), "dhtn.log")
            self.wait_listening("dhtn", "udp", self.dht_addrs[-1], BT_PORT, proc, "dhtn.log")
        for host, ip in (("seedlt", SEED_LT), ("seedar", SEED_ARIA2)):
            directory = self.workdir / host
            directory.mkdir()
            os.link(payload, directory / PAYLOAD_NAME)
            if host == "seedlt":
                argv = btnode_argv(
                    "seed", [f"{ip}:{BT_PORT}"], lifetime, router, self.torrents["all"], directory
                )
            else:
                argv = aria2_seed_argv(self.torrents["http"], directory, lifetime)
            proc = self.spawn(host, argv, f"{host}.log")
            self.wait_listening(host, "tcp", ip, BT_PORT, proc, f"{host}.log")
        directory = self.workdir / "seedtr"
        directory.mkdir()
        os.link(payload, directory / PAYLOAD_NAME)
        start_transmission_seeder(
            self, "seedtr", SEED_TRANSMISSION, self.torrents["all"], directory
        )
        time.sleep(settle)

    def start_services(self) -> None:
        """The ordinary user's internet on ``svc``: a web server, dnsmasq, a UDP echo."""
        www = self.workdir / "www"
        www.mkdir(exist_ok=True)
        (www / "index.html").write_text("<html><body>lab web</body></html>\n")
        web = [sys.executable, "-m", "http.server", "--bind", SVC, "--directory", str(www)]
        proc = self.spawn("svc", [*web, str(WEB_PORT)], "web.log")
        self.wait_listening("svc", "tcp", SVC, WEB_PORT, proc, "web.log")
        proc = self.spawn("svc", dnsmasq_argv(self.workdir), "dnsmasq.log")
        self.wait_listening("svc", "udp", SVC, DNS_PORT, proc, "dnsmasq.log")
        echo = [sys.executable, str(BTUSER), "echo", "--bind", f"{SVC}:{ECHO_PORT}"]
        proc = self.spawn("svc", [*echo, "--seconds", "3600"], "echo.log")
        self.wait_listening("svc", "udp", SVC, ECHO_PORT, proc, "echo.log")

    def start_https_tracker(self, lifetime: int = 900) -> None:
        """opentracker behind a TLS terminator on ``TRACKER:443``, and an HTTPS-only torrent
        (``source="https"``): with DHT off too, nothing of the client's is cleartext."""
        if shutil.which("socat") is None or shutil.which("openssl") is None:
            raise LabError("the HTTPS tracker needs socat and openssl (apt-get install socat)")
        cert, key = self.workdir / "tracker.crt", self.workdir / "tracker.key"
        made = subprocess.run(self_signed_argv(cert, key), capture_output=True, text=True,
                              timeout=60, check=False)  # fmt: skip
        if made.returncode:
            raise LabError(f"openssl could not make the tracker certificate: {made.stderr}")
        proc = self.spawn("tracker", tls_front_argv(cert, key, lifetime), "tls.log")
        self.wait_listening("tracker", "tcp", TRACKER, HTTPS_PORT, proc, "tls.log")
        url = f"https://{TRACKER}:{HTTPS_PORT}/announce"
        path = self.workdir / "https.torrent"
        path.write_bytes(make_torrent(self.workdir / PAYLOAD_NAME, [[url]]).data)
        self.torrents["https"] = path

    def leech(
        self, client: str, seconds: float = 120, source: str = "http", dht: bool = True
    ) -> LeechResult:
        """Run ``client`` in its green namespace until done or ``seconds``; check every byte.

        ``source``: the torrent announcing to ``http``, ``udp``, ``all`` or (after
        ``start_https_tracker``) ``https`` trackers, or ``magnet``, the bare DHT-only link.
        ``dht`` off: no DHT, PEX or LSD. Every run starts from an empty directory.
        """
        if source not in SOURCES:
            raise LabError(f"source must be one of {', '.join(SOURCES)}: {source!r}")
        if client not in self.green:
            raise LabError(f"{client} is not a client of this lab: {', '.join(self.green)}")
        if source != "magnet" and source not in self.torrents:
            raise LabError(f"no {source} torrent in this lab (start_swarm, start_https_tracker)")
        host = self.green_host(client)
        self.runs += 1
        directory = self.workdir / f"{host}-{self.runs}"
        directory.mkdir()
        torrent = magnet(self.info_hash) if source == "magnet" else self.torrents[source]
        start = time.monotonic()
        if client in DAEMON_CLIENTS:
            code, output, progress = run_daemon_client(
                self, client, torrent, directory, seconds, dht
            )
        elif client == "aria2":
            argv = aria2_leech_argv(torrent, directory, seconds, dht)
            code, output = self._run_leecher(host, argv, seconds)
            progress = self._aria2_progress(directory)
        else:
            bind = [f"{self.green[client]}:{BT_PORT}"]
            router = f"{DHT_ROUTER}:{BT_PORT}"
            argv = btnode_argv("leech", bind, seconds, router, torrent, directory, dht)
            code, output = self._run_leecher(host, argv, seconds)
            progress = btnode_progress(output)
        elapsed = time.monotonic() - start
        got = directory / PAYLOAD_NAME
        exact = got.exists() and _same_file(got, self.workdir / PAYLOAD_NAME)
        tail = output.strip().splitlines()[-1:] or [""]
        return LeechResult(
            client,
            code == 0 and exact,
            round(elapsed, 2),
            f"exit {code}, bytes {'exact' if exact else 'differ'}: {tail[0][:300]}",
            self.guard_rejects(host),
            progress.received,
            progress.pieces,
        )

    def _aria2_progress(self, directory: Path) -> Progress:
        """aria2's control file, or (it removes it when done) the whole payload, or nothing."""
        control = directory / f"{PAYLOAD_NAME}.aria2"
        if control.exists():
            return aria2_progress(control.read_bytes())
        if (directory / PAYLOAD_NAME).exists():
            pieces = -(-self.payload_size // PIECE_LENGTH)
            return Progress(1.0, self.payload_size, pieces)
        return Progress()

    def _run_leecher(self, host: str, argv: list[str], seconds: float) -> tuple[int, str]:
        """A leecher that ends itself after ``seconds``, under ``timeout`` in case it does not."""
        limit = int(seconds) + 10
        try:
            done = self.run(host, ["timeout", "-k", "5", str(limit), *argv], capture_output=True,
                            timeout=limit + 20)  # fmt: skip
            return done.returncode, (done.stdout + done.stderr).decode(errors="replace")
        except subprocess.TimeoutExpired:
            return -1, "no exit in time"

    # -- teardown -----------------------------------------------------------------------------

    def teardown(self) -> None:
        """Stop our processes (by PID, through our namespaces), delete namespaces and files."""
        if self._down:
            return
        self._down = True
        for sig in (signal.SIGTERM, signal.SIGKILL):
            pids = self._ns_pids()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + STOP_WAIT
            while pids and time.monotonic() < deadline and self._ns_pids():
                time.sleep(0.05)
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(STOP_WAIT)
        for host in self.hosts:
            subprocess.run(
                ["ip", "netns", "del", self.ns(host)], capture_output=True, timeout=30, check=False
            )
            shutil.rmtree(Path("/etc/netns") / self.ns(host), ignore_errors=True)
        shutil.rmtree(self.workdir, ignore_errors=True)
        if self._old_term is not None:
            signal.signal(signal.SIGTERM, self._old_term)
            self._old_term = None

    def _ns_pids(self) -> set[int]:
        pids: set[int] = set()
        for host in self.hosts:
            out = subprocess.run(
                ["ip", "netns", "pids", self.ns(host)],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            ).stdout
            pids.update(int(word) for word in out.split())
        pids.update(p.pid for p in self.procs if p.poll() is None)
        return pids


def btnode_progress(output: str) -> Progress:
    """Progress from ``btnode.py leech``'s JSON report (its last line); nothing without one."""
    for line in reversed(output.strip().splitlines()):
        try:
            report = json.loads(line)
            wanted = int(report["wanted"])
            done = int(report["bytes"])
            return Progress(done / wanted if wanted else 0.0, int(report["received"]),
                            int(report["pieces"]))  # fmt: skip
        except (ValueError, KeyError, TypeError):
            continue
    return Progress()


def _same_file(a: Path, b: Path) -> bool:
    if a.stat().st_size != b.stat().st_size:
        return False
    digests = []
    for path in (a, b):
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
        digests.append(digest.digest())
    return digests[0] == digests[1]


def _exit_on_term(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def control(clients: Sequence[str], mib: float, seconds: int, source: str) -> list[LeechResult]:
    """The control run: each client downloads from the swarm, no p2pwall anywhere."""
    with BtLab(clients, mib=mib) as lab:
        lab.start_swarm()
        return [lab.leech(client, seconds, source) for client in lab.clients]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.btlab", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("control", help="every client downloads once, no daemon")
    run.add_argument("--clients", default=",".join(CLIENTS))
    run.add_argument("--mib", type=float, default=20.0)
    run.add_argument("--seconds", type=int, default=120)
    run.add_argument("--source", choices=SOURCES, default="http")
    args = parser.parse_args(argv)
    try:
        clients = parse_clients(args.clients)
        for client in clients:
            reason = client_missing(client)
            if reason:
                raise LabError(f"{client} is not installed: needs {reason}")
        results = control(clients, args.mib, args.seconds, args.source)
    except LabError as exc:
        print(f"btlab: {exc}", file=sys.stderr)
        return 2
    for result in results:
        print(json.dumps(result.__dict__))
    return 0 if all(result.complete for result in results) else 1


if __name__ == "__main__":
    sys.exit(main())
