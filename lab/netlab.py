"""A throw-away network of Linux namespaces in which p2pwall can be tried for real.

Topology (all addresses in the benchmarking ranges, 198.18.0.0/15 and 2001:2::/48, so
nothing can leak to a real network)::

    rogue 198.18.1.10 ─┐                      ┌─ pub 198.19.255.2 ("the internet")
                       ├─ green0 (bridge) ─ gw ─ public0 198.19.255.1
    user  198.18.1.20 ─┘   198.18.1.1/24         peers 198.19.1.1..N, web 198.19.0.80,
                                                 dns 198.19.0.53 (all /32 on pub's eth0)

The lab is dual-stack: every host and service has an IPv6 twin (``v6``) whose /64 mirrors
its IPv4 /24: 198.18.C.D is 2001:2:0:C::D (the green LAN is 2001:2:0:1::/64) and 198.19.C.D
is 2001:2:0:1CCC::D (web 2001:2:0:1000::80, peers 2001:2:0:1001::1..N), the decimal digits
written as they are. ``gw`` routes between green and public without NAT, for both families:
it is where the daemon and its iptables/nft rules go. Bridged green-to-green traffic skips
iptables there (bridge-nf-call-* = 0) as on a real switch. Addresses skip duplicate address
detection and hosts take no router advertisements, so an address works as soon as it is
set and the daemon sees only the traffic a test makes (and neighbour discovery). Namespace
names are ``p2pw<6 hex>-<host>``, unique per run, so concurrent runs never collide.

    python -m lab.netlab up [--peers N] [--web] [--dns NAME=IP ...] [--ftpeers SECONDS]
    python -m lab.netlab status
    python -m lab.netlab down RUN_ID ... | --all
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import ipaddress
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from .ftwire import endpoint

HERE = Path(__file__).resolve().parent
FTCLIENT = HERE / "ftclient.py"
FTPEERS = HERE / "ftpeers.py"

LAB_NET = ipaddress.ip_network("198.18.0.0/15")
PUBLIC_NET = ipaddress.ip_network("198.19.0.0/16")
# RFC 5180's IPv6 benchmarking prefix; 2001:2:0:1000::/52 holds the twins of 198.19.0.0/16.
LAB_NET6 = ipaddress.ip_network("2001:2::/48")
PUBLIC_NET6 = ipaddress.ip_network("2001:2:0:1000::/52")
GREEN_NET6 = ipaddress.ip_network("2001:2:0:1::/64")
GREEN_SIDE6 = ipaddress.ip_network("2001:2::/52")  # the twins of 198.18.0.0/16
# Every namespace: IPv6 on, no duplicate address detection (an address works at once), no
# router advertisements taken (the lab's routes are static).
IPV6_SYSCTLS = tuple(
    f"net.ipv6.conf.{conf}.{key}=0"
    for conf in ("all", "default")
    for key in ("disable_ipv6", "accept_dad", "accept_ra")
)
NODAD = "nodad"
GREEN_PREFIX = 24
GW_GREEN = "198.18.1.1"
GREEN_HOSTS = {"rogue": "198.18.1.10", "user": "198.18.1.20"}
GW_PUBLIC = "198.19.255.1"
PUB_LINK = "198.19.255.2"
WEB_ADDR = "198.19.0.80"
DNS_ADDR = "198.19.0.53"
PEER_PORT = 1214
MAX_PEERS = 254
HOSTS = ("gw", "pub", *GREEN_HOSTS)
RUN_ID_RE = re.compile(r"[0-9a-f]{6}")
NS_RE = re.compile(r"p2pw([0-9a-f]{6})-(\w+)")
HOSTNAME_RE = re.compile(r"(?=.{1,253}$)([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?\.?)+", re.I)
STOP_WAIT = 3.0


class LabError(RuntimeError):
    """The lab could not be built or used; the message says what to do."""


def _host_nets(ip: str) -> list[str]:
    """A public host's addresses on pub: an IPv4 /32 and its twin, or an IPv6 /128 alone."""
    return [f"{ip}/128"] if ":" in ip else [f"{ip}/32", f"{v6(ip)}/128"]


def peer_address(index: int) -> str:
    """The ``index``-th (0-based) simulated peer: 198.19.1.1, 198.19.1.2, ... (their IPv6
    twins, 2001:2:0:1001::1, ..., are ``v6`` of these)."""
    if not 0 <= index < MAX_PEERS:
        raise ValueError(f"peer index out of range 0..{MAX_PEERS - 1}: {index}")
    return f"198.19.1.{index + 1}"


def v6(ip: str) -> str:
    """The IPv6 twin of a lab IPv4 address: 198.18.C.D is 2001:2:0:C::D, 198.19.C.D is
    2001:2:0:1CCC::D (C on three digits), the decimal digits kept as they are, so a twin
    reads like its original."""
    _, b, c, d = check_lab_addr(ip, LAB_NET).split(".")
    subnet = c if b == "18" else f"1{int(c):03d}"
    return str(ipaddress.IPv6Address(f"2001:2:0:{subnet}::{d}"))


def check_lab_addr(
    ip: str,
    net: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None,
) -> str:
    """Refuse any address outside the lab's ranges (``net``, by default 198.18.0.0/15 for an
    IPv4 address and 2001:2::/48 for an IPv6 one): nothing may leak out."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        raise LabError(f"not an IP address: {ip!r}") from None
    if net is None:
        net = LAB_NET if addr.version == 4 else LAB_NET6
    if addr not in net:
        raise LabError(f"{ip} is outside {net}: the lab only uses that range")
    return ip


def workdir_for(run_id: str) -> Path:
    return Path(tempfile.gettempdir()) / f"p2pw{run_id}-lab"


def _netns_list() -> set[str]:
    out = subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True, timeout=30, check=False
    ).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def _pid_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def stop_process(proc: subprocess.Popen[bytes], wait: float = STOP_WAIT) -> None:
    """SIGTERM, then SIGKILL if ``proc`` has not exited within ``wait`` seconds."""
    proc.terminate()
    try:
        proc.wait(wait)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(wait)


def await_listener(
    run: Callable[..., subprocess.CompletedProcess[Any]],
    host: str,
    proto: str,
    where: Sequence[str],
    proc: subprocess.Popen[bytes],
    log: tuple[str, Callable[[], str]],
    timeout: float,
) -> None:
    """Block until ``ss`` in ``host`` lists a listening ``proto`` socket matching ``where`` (an
    ``ss`` filter); fail early, with the end of ``log`` (its name and a reader), if ``proc``
    died."""
    flag = {"tcp": "-Hltn", "udp": "-Hlun"}[proto]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if run(host, ["ss", flag, *where], capture_output=True).stdout.strip():
            return
        if proc.poll() is not None:
            name, read = log
            raise LabError(f"{name} exited ({proc.returncode}): {read()[-2000:]}")
        time.sleep(0.05)
    raise LabError(f"nothing listens on {proto} {' '.join(where)} in {host} after {timeout}s")


class Lab:
    """Builds the namespaces, runs things in them, and always cleans up after itself.

    Use as a context manager, or call ``setup()``/``teardown()``. Teardown runs at
    exit and on SIGTERM/SIGINT too, so an interrupted test leaves nothing behind.
    """

    green_if = "green0"
    public_if = "public0"

    def __init__(
        self,
        peers: int = 40,
        run_id: str | None = None,
        extra_addrs: Iterable[str] = (),
    ) -> None:
        if not 0 <= peers <= MAX_PEERS:
            raise LabError(f"peers must be 0..{MAX_PEERS}")
        self.run_id = run_id or secrets.token_hex(3)
        if not RUN_ID_RE.fullmatch(self.run_id):
            raise LabError(f"run id must be 6 lower-case hex digits: {self.run_id!r}")
        self.prefix = f"p2pw{self.run_id}-"
        self.peer_addrs = [peer_address(i) for i in range(peers)]
        self.workdir = workdir_for(self.run_id)
        # IPv4 addresses also get their IPv6 twin on pub; IPv6 ones stand alone.
        self.public_addrs: list[str] = [*self.peer_addrs, WEB_ADDR, DNS_ADDR]
        for ip in extra_addrs:
            self._public_addr_ok(ip)
            self.public_addrs.append(ip)
        self.procs: list[subprocess.Popen[bytes]] = []
        self.services: dict[str, subprocess.Popen[bytes]] = {}
        self._old_handlers: dict[int, Any] = {}
        self._down = False

    # -- naming ---------------------------------------------------------------

    def ns(self, host: str) -> str:
        """The namespace of ``host`` (``web`` and ``dns`` live in ``pub``)."""
        host = "pub" if host in ("web", "dns") else host
        if host not in HOSTS:
            raise LabError(f"unknown lab host {host!r}; hosts are {', '.join(HOSTS)}")
        return self.prefix + host

    @property
    def namespaces(self) -> list[str]:
        return [self.prefix + host for host in HOSTS]

    def addr(self, host: str, family: int = 4) -> str:
        """The address of ``host`` (``family`` 6: its IPv6 twin); ``gw`` is its green side,
        ``gw-public`` the other."""
        table = {
            **GREEN_HOSTS,
            "gw": GW_GREEN,
            "gw-public": GW_PUBLIC,
            "pub": PUB_LINK,
            "web": WEB_ADDR,
            "dns": DNS_ADDR,
        }
        if host not in table:
            raise LabError(f"no address for {host!r}; known: {', '.join(table)}")
        if family not in (4, 6):
            raise LabError(f"family is 4 or 6, not {family!r}")
        return table[host] if family == 4 else v6(table[host])

    @property
    def peers(self) -> list[tuple[str, int]]:
        return [(ip, PEER_PORT) for ip in self.peer_addrs]

    @property
    def peers6(self) -> list[tuple[str, int]]:
        """The IPv6 twins of ``peers``, served by the same ``start_peers``."""
        return [(v6(ip), port) for ip, port in self.peers]

    # -- building -------------------------------------------------------------

    def __enter__(self) -> Lab:
        return self.setup()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.teardown()

    def setup(self) -> Lab:
        """Create (or complete) the lab; safe to call again on a lab that is up."""
        if os.geteuid() != 0:
            raise LabError(
                "the lab needs root: network namespaces, veth pairs and a bridge are "
                "created with `ip`; run the lab (or its tests) as root"
            )
        for tool in ("ip", "sysctl"):
            if shutil.which(tool) is None:
                raise LabError(f"the lab needs `{tool}` (iproute2 / procps) on PATH")
        self._down = False
        self._arm_cleanup()
        try:
            self.workdir.mkdir(mode=0o700, exist_ok=True)
            self._build()
            self.save_state(detached=False)
        except BaseException:
            self.teardown()
            raise
        return self

    def _build(self) -> None:
        existing = _netns_list()
        for host in HOSTS:
            name = self.ns(host)
            if name not in existing:
                self._ip("netns", "add", name)
            # Before any interface exists, so new ones inherit them: IPv6 on, an address
            # usable at once (no duplicate address detection), no router advertisements.
            self._sysctl(host, *IPV6_SYSCTLS)
            self._ip("-n", name, "link", "set", "lo", "up")
        gw = self.ns("gw")
        self._sysctl(
            "gw",
            "net.ipv4.ip_forward=1",
            "net.ipv6.conf.all.forwarding=1",
            "net.bridge.bridge-nf-call-iptables=0",
            "net.bridge.bridge-nf-call-ip6tables=0",
            "net.bridge.bridge-nf-call-arptables=0",
        )
        if not self._has_link("gw", self.green_if):
            self._ip("-n", gw, "link", "add", self.green_if, "type", "bridge")
        self._addr("gw", GW_GREEN, GREEN_PREFIX, self.green_if)
        self._ip("-n", gw, "link", "set", self.green_if, "up")
        for host, ip in GREEN_HOSTS.items():
            port = f"g-{host}"
            self._veth(port, host)
            self._ip("-n", gw, "link", "set", port, "master", self.green_if, "up")
            self._addr(host, ip, GREEN_PREFIX, "eth0")
            self._ip("-n", self.ns(host), "link", "set", "eth0", "up")
            self._ip("-n", self.ns(host), "route", "replace", "default", "via", GW_GREEN)
            self._ip("-n", self.ns(host), "-6", "route", "replace", "default", "via", v6(GW_GREEN))
        pub = self.ns("pub")
        self._veth(self.public_if, "pub")
        self._addr("gw", GW_PUBLIC, 24, self.public_if)
        self._ip("-n", gw, "link", "set", self.public_if, "up")
        self._addr("pub", PUB_LINK, 24, "eth0")
        self._ip("-n", pub, "link", "set", "eth0", "up")
        self._ip("-n", gw, "route", "replace", str(PUBLIC_NET), "via", PUB_LINK)
        self._ip("-n", gw, "route", "replace", str(PUBLIC_NET6), "via", v6(PUB_LINK))
        self._ip("-n", pub, "route", "replace", "198.18.0.0/16", "via", GW_PUBLIC)
        self._ip("-n", pub, "route", "replace", str(GREEN_SIDE6), "via", v6(GW_PUBLIC))
        batch = "".join(f"addr replace {net} dev eth0 {NODAD}\n" for ip in self.public_addrs
                        for net in _host_nets(ip))  # fmt: skip
        self._ip("-n", pub, "-batch", "-", stdin=batch)

    def _addr(self, host: str, ip: str, prefix: int, dev: str) -> None:
        """Put ``ip``/``prefix`` and its IPv6 twin (a /64) on ``dev`` in ``host``."""
        for net in (f"{ip}/{prefix}", f"{v6(ip)}/64"):
            self._ip("-n", self.ns(host), "addr", "replace", net, "dev", dev, *NODAD.split())

    def _veth(self, gw_end: str, host: str) -> None:
        """A veth pair: ``gw_end`` in gw, ``eth0`` in ``host`` (kept if it exists already)."""
        if not self._has_link("gw", gw_end):
            self._ip("-n", self.ns("gw"), "link", "add", gw_end, "type", "veth", "peer", "name",
                     "eth0", "netns", self.ns(host))  # fmt: skip

    def add_public_addr(self, ip: str) -> None:
        """Give ``pub`` one more /32 (and its IPv6 twin), or one more IPv6 /128, e.g. a host a
        DNS record points at."""
        self._public_addr_ok(ip)
        for net in _host_nets(ip):
            self._ip("-n", self.ns("pub"), "addr", "replace", net, "dev", "eth0", *NODAD.split())
        if ip not in self.public_addrs:
            self.public_addrs.append(ip)
            self.save_state(detached=False)

    @staticmethod
    def _public_addr_ok(ip: str) -> None:
        link = ipaddress.ip_network(f"{PUB_LINK}/24", strict=False)
        if ":" in ip:
            link = ipaddress.ip_network(f"{v6(PUB_LINK)}/64", strict=False)
        check_lab_addr(ip, PUBLIC_NET6 if ":" in ip else PUBLIC_NET)
        if ipaddress.ip_address(ip) in link:
            raise LabError(f"{ip} is in the gw-pub link subnet")

    def _ip(self, *args: str, stdin: str | None = None) -> None:
        done = subprocess.run(
            ["ip", *args], input=stdin, capture_output=True, text=True, timeout=60, check=False
        )
        if done.returncode:
            raise LabError(f"`ip {' '.join(args)}` failed: {done.stderr.strip()}")

    def _sysctl(self, host: str, *settings: str) -> None:
        # -e: the bridge-nf keys exist only while br_netfilter is loaded.
        done = self.run(host, ["sysctl", "-q", "-e", "-w", *settings], capture_output=True)
        if done.returncode:
            raise LabError(f"sysctl in {host} failed: {done.stderr.decode().strip()}")

    def _has_link(self, host: str, name: str) -> bool:
        return (
            subprocess.run(
                ["ip", "-n", self.ns(host), "link", "show", "dev", name],
                capture_output=True,
                timeout=30,
                check=False,
            ).returncode
            == 0
        )

    # -- running things -------------------------------------------------------

    def run(self, host: str, argv: Sequence[str], **kw: Any) -> subprocess.CompletedProcess[Any]:
        """``subprocess.run`` inside ``host``'s namespace; 60 s timeout unless given."""
        kw.setdefault("timeout", 60)
        kw.setdefault("check", False)
        return subprocess.run(["ip", "netns", "exec", self.ns(host), *argv], **kw)

    def spawn(
        self, host: str, argv: Sequence[str], *, log: str | None = None, **kw: Any
    ) -> subprocess.Popen[bytes]:
        """Start a background process in ``host``; teardown stops it.

        ``log`` names a file in the lab's workdir that gets its stdout and stderr.
        """
        kw.setdefault("stdin", subprocess.DEVNULL)
        with contextlib.ExitStack() as stack:
            if log is not None:
                kw.setdefault("stdout", stack.enter_context(open(self.logpath(log), "ab")))
                kw.setdefault("stderr", subprocess.STDOUT)
            # Own session: a Ctrl-C on our terminal reaches us, and teardown, not it.
            proc = subprocess.Popen(
                ["ip", "netns", "exec", self.ns(host), *argv], start_new_session=True, **kw
            )
        self.procs.append(proc)
        self.save_state(detached=False)
        return proc

    def logpath(self, name: str) -> Path:
        if "/" in name or name.startswith("."):
            raise LabError(f"log names are plain file names: {name!r}")
        return self.workdir / name

    def read_log(self, name: str) -> str:
        path = self.logpath(name)
        return path.read_text(errors="replace") if path.exists() else ""

    def write_peers_file(self, name: str, peers: Iterable[tuple[str, int]]) -> Path:
        """Write ``ip:port`` (IPv6: ``[ip]:port``) lines to a workdir file for --peers-file."""
        path = self.logpath(name)
        path.write_text("".join(f"{endpoint(check_lab_addr(ip), port)}\n" for ip, port in peers))
        return path

    def wait_listening(
        self,
        host: str,
        proto: str,
        ip: str,
        port: int,
        proc: subprocess.Popen[bytes],
        log: str,
        timeout: float = 10.0,
    ) -> None:
        """Block until ``ip:port`` listens in ``host``; fail early if ``proc`` died."""
        where = ["src", endpoint(ip, port)]
        await_listener(self.run, host, proto, where, proc, (log, partial(self.read_log, log)),
                       timeout)  # fmt: skip

    def _restart(self, service: str) -> None:
        old = self.services.pop(service, None)
        if old is not None and old.poll() is None:
            stop_process(old)

    def start_web(self, directory: str | os.PathLike[str] | None = None) -> subprocess.Popen[bytes]:
        """``python -m http.server`` on 198.19.0.80:80 and another on its IPv6 twin: the
        "normal web" a locked client loses. Returns the IPv4 one."""
        root = Path(directory) if directory is not None else self.workdir / "www"
        if directory is None:
            root.mkdir(exist_ok=True)
            (root / "index.html").write_text("<html><body>p2pwall lab web</body></html>\n")
        for service, ip in (("web6", v6(WEB_ADDR)), ("web", WEB_ADDR)):
            self._restart(service)
            argv = [sys.executable, "-m", "http.server", "--bind", ip, "--directory", str(root)]
            proc = self.spawn("pub", [*argv, "80"], log=f"{service}.log")
            self.services[service] = proc
            self.wait_listening("pub", "tcp", ip, 80, proc, f"{service}.log")
        return proc

    def start_dns(
        self, records: Mapping[str, Sequence[str] | str], options: Sequence[str] = ()
    ) -> subprocess.Popen[bytes]:
        """dnsmasq on 198.19.0.53 and its IPv6 twin answering only ``records`` (name -> A
        and AAAA addresses), with ``options`` added to its command line.

        Addresses in 198.19.0.0/16 or 2001:2:0:1000::/52 are also put on ``pub``, so
        connections to them reach the public side (a listener there, or a RST) instead of
        vanishing.
        """
        self._restart("dns")
        argv = [
            "dnsmasq",
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            f"--listen-address={DNS_ADDR},{v6(DNS_ADDR)}",
            "--port=53",
            f"--pid-file={self.workdir / 'dnsmasq.pid'}",
            f"--log-facility={self.workdir / 'dnsmasq.log'}",
            "--log-queries",
            "--user=root",
            *options,
        ]
        for name, ips in records.items():
            if not HOSTNAME_RE.fullmatch(name) or "," in name:
                raise LabError(f"not a DNS name: {name!r}")
            for ip in [ips] if isinstance(ips, str) else ips:
                check_lab_addr(ip)
                public = ipaddress.ip_address(ip) in (PUBLIC_NET6 if ":" in ip else PUBLIC_NET)
                if public and ip not in self.public_addrs:
                    self.add_public_addr(ip)
                argv.append(f"--host-record={name.rstrip('.')},{ip}")
        proc = self.spawn("pub", argv, log="dnsmasq.out")
        self.services["dns"] = proc
        for ip in (DNS_ADDR, v6(DNS_ADDR)):
            self.wait_listening("pub", "udp", ip, 53, proc, "dnsmasq.out")
        return proc

    def start_peers(
        self,
        peers: Iterable[tuple[str, int]] | None = None,
        duration: float = 120.0,
        log: str = "ftpeers.log",
    ) -> subprocess.Popen[bytes]:
        """Run ``ftpeers.py`` in ``pub`` for ``peers`` (default: all of the lab's, IPv4 and
        IPv6)."""
        chosen = list(self.peers + self.peers6 if peers is None else peers)
        path = self.write_peers_file(f"{log}.peers", chosen)
        argv = [
            sys.executable,
            str(FTPEERS),
            "--peers-file",
            str(path),
            "--duration",
            str(duration),
        ]
        proc = self.spawn("pub", argv, log=log)
        deadline = time.monotonic() + 10
        while " ready " not in self.read_log(log):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise LabError(f"ftpeers did not start: {self.read_log(log)[-2000:]}")
            time.sleep(0.05)
        return proc

    # -- tearing down ---------------------------------------------------------

    def teardown(self) -> None:
        """Stop every process in the lab's namespaces, delete them, remove the workdir.

        Idempotent, and safe on a half-built lab.
        """
        if self._down:
            return
        self._down = True
        try:
            self._stop_processes()
            existing = _netns_list()
            for name in self.namespaces:
                if name in existing:
                    subprocess.run(["ip", "netns", "del", name], timeout=30, check=False)
            shutil.rmtree(self.workdir, ignore_errors=True)
        finally:
            self._disarm_cleanup()

    def _ns_pids(self) -> set[int]:
        existing = _netns_list()
        pids: set[int] = set()
        for name in self.namespaces:
            if name in existing:
                out = subprocess.run(
                    ["ip", "netns", "pids", name],
                    capture_output=True,
                    text=True,
                    timeout=30,
                    check=False,
                ).stdout
                pids.update(int(word) for word in out.split())
        return pids

    def _stop_processes(self) -> None:
        """TERM, then KILL, every process living in this run's namespaces.

        Anything in them was started into this run's lab (by ``spawn``, ``run`` or a
        test using the lab), so it is ours to stop; they are found by PID through
        their network namespace, which also rules out a recycled PID.
        """
        for sig in (signal.SIGTERM, signal.SIGKILL):
            pids = self._ns_pids()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + STOP_WAIT
            while time.monotonic() < deadline:
                for proc in self.procs:
                    proc.poll()
                if not any(_pid_alive(pid) for pid in pids):
                    break
                time.sleep(0.05)
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(STOP_WAIT)
        self.procs = [proc for proc in self.procs if proc.returncode is None]
        self.services.clear()

    def _arm_cleanup(self) -> None:
        atexit.register(self.teardown)
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGTERM, signal.SIGINT):
            if sig not in self._old_handlers:
                self._old_handlers[sig] = signal.signal(sig, self._on_signal)

    def _disarm_cleanup(self) -> None:
        atexit.unregister(self.teardown)
        if threading.current_thread() is not threading.main_thread():
            return
        for sig, old in self._old_handlers.items():
            if signal.getsignal(sig) == self._on_signal:
                signal.signal(sig, old)
        self._old_handlers.clear()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        old = self._old_handlers.get(signum)
        self.teardown()
        if callable(old):
            old(signum, frame)
        elif signum == signal.SIGINT:
            raise KeyboardInterrupt
        else:
            raise SystemExit(128 + signum)

    # -- state, for the CLI ---------------------------------------------------

    def save_state(self, *, detached: bool) -> None:
        """Record the run in its workdir so ``status``/``down`` find it from another process."""
        if not self.workdir.is_dir():
            return
        state = {
            "run_id": self.run_id,
            "owner": os.getpid(),
            "detached": detached,
            "peers": len(self.peer_addrs),
            "public_addrs": self.public_addrs,
            "pids": [proc.pid for proc in self.procs if proc.poll() is None],
        }
        tmp = self.workdir / "state.json.tmp"
        tmp.write_text(json.dumps(state, indent=2) + "\n")
        tmp.replace(self.workdir / "state.json")

    def detach(self) -> None:
        """Leave the lab up after this process exits (``netlab up``); ``down`` removes it."""
        self.save_state(detached=True)
        self._disarm_cleanup()

    @classmethod
    def attach(cls, run_id: str) -> Lab:
        """A handle on a lab another process built: its names are all teardown needs."""
        return cls(peers=0, run_id=run_id)


def lab_runs() -> dict[str, dict[str, Any]]:
    """Every lab run visible on this machine: from state files and namespace names."""
    runs: dict[str, dict[str, Any]] = {}
    for state_file in Path(tempfile.gettempdir()).glob("p2pw*-lab/state.json"):
        with contextlib.suppress(OSError, ValueError):
            state = json.loads(state_file.read_text())
            runs[state["run_id"]] = {**state, "namespaces": []}
    for name in sorted(_netns_list()):
        match = NS_RE.fullmatch(name)
        if match:
            runs.setdefault(match.group(1), {"run_id": match.group(1), "namespaces": []})
            runs[match.group(1)]["namespaces"].append(name)
    return runs


def _cli_up(args: argparse.Namespace) -> int:
    records: dict[str, list[str]] = {}
    for item in args.dns or []:
        name, sep, ip = item.partition("=")
        if not sep:
            raise LabError(f"--dns takes NAME=IP, got {item!r}")
        records.setdefault(name, []).append(ip)
    lab = Lab(peers=args.peers, run_id=args.run_id)
    try:
        lab.setup()
        if args.web:
            lab.start_web()
        if records:
            lab.start_dns(records)
        if args.ftpeers:
            lab.start_peers(duration=args.ftpeers)
    except BaseException:
        lab.teardown()
        raise
    lab.detach()
    print(f"lab {lab.run_id} is up; workdir {lab.workdir}")
    for host in HOSTS:
        print(f"  {host:6} {lab.ns(host):22} {lab.addr(host):14} {lab.addr(host, 6)}")
    print(f"  green interface in gw: {lab.green_if}; public: {lab.public_if}")
    print(f"  peers: {len(lab.peer_addrs)} ({', '.join(lab.peer_addrs[:3])}, ...) port {PEER_PORT}")
    print(f"         and their IPv6 twins ({', '.join(v6(ip) for ip in lab.peer_addrs[:2])}, ...)")
    print(f"  run something:  ip netns exec {lab.ns('rogue')} curl http://{WEB_ADDR}/")
    print(f"  remove it:      python -m lab.netlab down {lab.run_id}")
    return 0


def _cli_status(_: argparse.Namespace) -> int:
    runs = lab_runs()
    if not runs:
        print("no lab runs")
    for run_id, info in sorted(runs.items()):
        owner = info.get("owner")
        alive = owner is not None and _pid_alive(int(owner))
        how = (
            "detached" if info.get("detached") else f"owner {owner} {'alive' if alive else 'gone'}"
        )
        if owner is None:
            how = "no state file"
        pids = [pid for pid in info.get("pids", []) if _pid_alive(int(pid))]
        print(
            f"{run_id}: {how}; namespaces: {' '.join(info['namespaces']) or 'none'}; "
            f"processes: {' '.join(map(str, pids)) or 'none'}"
        )
    return 0


def _cli_down(args: argparse.Namespace) -> int:
    run_ids = sorted(lab_runs()) if args.all else args.run_ids
    if not run_ids:
        print("name the run ids to remove (see `status`), or pass --all", file=sys.stderr)
        return 2
    for run_id in run_ids:
        Lab.attach(run_id).teardown()
        print(f"lab {run_id} removed")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lab.netlab", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="build a lab and leave it running")
    up.add_argument("--peers", type=int, default=40, help="number of peer addresses in pub")
    up.add_argument("--run-id", help="6 hex digits; default random (re-running completes a lab)")
    up.add_argument("--web", action="store_true", help="start the web server on 198.19.0.80")
    up.add_argument("--dns", action="append", metavar="NAME=IP", help="serve an A or AAAA record")
    up.add_argument("--ftpeers", type=float, metavar="SECONDS", help="run ftpeers this long")
    up.set_defaults(func=_cli_up)
    status = sub.add_parser("status", help="list lab runs, their namespaces and processes")
    status.set_defaults(func=_cli_status)
    down = sub.add_parser("down", help="stop a lab's processes and delete its namespaces")
    down.add_argument("run_ids", nargs="*", metavar="RUN_ID")
    down.add_argument("--all", action="store_true", help="every lab run on this machine")
    down.set_defaults(func=_cli_down)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except LabError as err:
        print(f"netlab: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
