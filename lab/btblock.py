"""Blocking runs in the BitTorrent lab (issue 11, §4): the real daemon in ``gw``, an ordinary
user on the green side, one real client leeching, and everything the issue asks measured.

A run is one client and one source (``http``, ``udp``, ``magnet``, ``https``) in a swarm that is
already up (``BtLab.start_swarm``, ``start_services``). ``control_run`` has no daemon;
``blocked_run`` applies ``p2pwall-rules --green-if green0`` in ``gw`` and starts ``twistd -n
p2pwall`` there (``lab.gateway.Gateway``) with a short time lock, a capture on ``green0`` and the
JSON events; ``resume_run`` starts the daemon only once the client is transferring. Both take
an ``Enforcement``: the queue (the default), or the kernel's sets, with or without
``--lock-established``. Every run ends with the daemon stopped by PID and its rules removed.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from lab.btcapture import bytes_from, first_cleartext
from lab.btlab import (
    ECHO_PORT,
    PIECE_LENGTH,
    SEEDERS,
    SVC,
    USER_HOST,
    USER_IP,
    WEB_NAME,
    WEB_PORT,
    BtLab,
    LeechResult,
)
from lab.gateway import Gateway
from lab.netlab import LabError, stop_process

HERE = Path(__file__).resolve().parent
TIME_LOCK = 30
LEECH_SECONDS = 120
IDENTIFY_WITHIN = 2.0
MAX_RECEIVED = PIECE_LENGTH
SNAPLEN = 512
WATCH_EVERY = 3.0
WEB_URL = f"http://{SVC}:{WEB_PORT}/"
# Resume row: the client's port in gw is slowed to this rate, so that its download is still
# running (20 MiB at 1 Mbit/s take about 170 s) when the daemon starts after RESUME_AFTER bytes.
RESUME_RATE = "1mbit"
RESUME_AFTER = 4 * PIECE_LENGTH
RESUME_WAIT = 40.0


@dataclass(frozen=True)
class Enforcement:
    """Who drops: the daemon from the queue, or the kernel by p2pwall's sets (``kernel``),
    which with ``lock_established`` also stops a locked client's established flows."""

    kernel: bool = False
    lock_established: bool = False

    @property
    def label(self) -> str:
        if not self.kernel:
            return "queue"
        return "kernel, --lock-established" if self.lock_established else "kernel"

    def daemon_options(self) -> list[str]:
        return ["--enforce", "kernel"] if self.kernel else []

    def rule_options(self, time_lock: int) -> list[str]:
        if not self.kernel:
            return []
        established = ["--lock-established"] if self.lock_established else []
        return ["--enforce", "kernel", "--lock-time", str(time_lock), *established]


QUEUE = Enforcement()


@dataclass
class RunResult:
    """One row's measurements; ``None`` where a run of that kind measures nothing."""

    client: str
    source: str
    kind: str  # control, blocked, resume
    complete: bool
    received: int
    pieces: int
    seconds: float
    detail: str
    guard_rejects: int
    time_lock: int | None = None
    user_rounds: int = 0
    user_failures: dict[str, int] = field(default_factory=dict)
    user_identified: bool | None = None
    user_drops: int | None = None
    first_cleartext: float | None = None
    identified_at: float | None = None
    probes_sent: int | None = None
    probes_answered: int | None = None
    locked_at_end: bool | None = None
    lock_lapsed: bool | None = None
    web_back: float | None = None
    wire_in: int | None = None
    note: str = ""

    @property
    def identified_after(self) -> float | None:
        """Seconds from the first cleartext BitTorrent packet to the identification."""
        if self.identified_at is None or self.first_cleartext is None:
            return None
        return round(self.identified_at - self.first_cleartext, 3)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "identified_after": self.identified_after}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunResult:
        """The inverse of ``to_json`` (the derived ``identified_after`` is left out)."""
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})


# -- reading the daemon's answers -------------------------------------------------------------


@dataclass(frozen=True)
class Explained:
    """What ``explain ADDR`` says of a green host: locked now, probes sent and answered."""

    locked: bool = False
    probes_sent: int = 0
    probes_answered: int = 0


def parse_explain(reply: str) -> Explained:
    """The lock and probe lines of an ``explain`` reply (docs/control.md)."""
    locked = any(line.startswith("lock locked ") for line in reply.splitlines())
    probes = re.search(r"^probes sent=(\d+) answered=(\d+)", reply, re.M)
    if probes is None:
        return Explained(locked)
    return Explained(locked, int(probes.group(1)), int(probes.group(2)))


def read_events(text: str) -> list[dict[str, Any]]:
    """The JSON events file's objects (a line that is not JSON, e.g. cut short, is skipped)."""
    events = []
    for line in text.splitlines():
        with contextlib.suppress(ValueError):
            event = json.loads(line)
            if isinstance(event, dict):
                events.append(event)
    return events


def identified_at(events: list[dict[str, Any]], client: str) -> float | None:
    """Epoch time of the daemon's first "client ... identified" event for ``client``."""
    for event in events:
        if (
            event.get("class") == "c"
            and event.get("client") == client
            and " identified" in str(event.get("message", ""))
        ):
            return float(event["epoch"])
    return None


def touched(events: list[dict[str, Any]], host: str) -> tuple[bool, int]:
    """Whether the daemon ever named ``host`` a client (class ``c``), and how many of its
    packets it dropped (classes ``t``/``u``)."""
    named = any(e.get("class") == "c" and e.get("client") == host for e in events)
    drops = sum(1 for e in events if e.get("class") in ("t", "u") and e.get("src_addr") == host)
    return named, drops


def lapsed(events: list[dict[str, Any]], client: str) -> bool:
    """Whether ``client``'s lock lapsed while it still ran: a ``cleared`` event followed by a
    later event naming it (the lock that ends after the client quits is followed by none)."""
    mine = [e for e in events if e.get("class") == "c" and e.get("client") == client]
    return any(" cleared" in str(e.get("message", "")) for e in mine[:-1])


def user_failures(report: dict[str, Any]) -> dict[str, int]:
    """Failed checks by kind from ``btuser.py load``'s report."""
    return {kind: int(report[kind]["failed"]) for kind in ("web", "dns", "udp") if kind in report}


# -- pieces of a run --------------------------------------------------------------------------


def user_load_argv(seconds: float, report: Path) -> list[str]:
    """``btuser.py load`` against the lab's web, DNS and UDP echo on ``svc``."""
    return [
        sys.executable,
        str(HERE / "btuser.py"),
        "load",
        "--web",
        WEB_URL,
        "--dns",
        SVC,
        "--name",
        WEB_NAME,
        "--expect",
        SVC,
        "--echo",
        f"{SVC}:{ECHO_PORT}",
        "--seconds",
        str(seconds),
        "--report",
        str(report),
    ]


def tcpdump_argv(path: Path, interface: str = "green0", snaplen: int = SNAPLEN) -> list[str]:
    """tcpdump on the gateway's green side, packet-buffered, staying root to write ``path``."""
    return ["tcpdump", "-i", interface, "-n", "-U", "-s", str(snaplen), "-Z", "root",
            "-w", str(path), "ip"]  # fmt: skip


class Watch(threading.Thread):
    """Asks the daemon ``explain CLIENT`` every few seconds and keeps the last answer."""

    def __init__(self, gateway: Gateway, client: str) -> None:
        super().__init__(daemon=True)
        self.gateway, self.client = gateway, client
        self.last = Explained()
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(WATCH_EVERY):
            self.sample()

    def sample(self) -> None:
        reply = self.gateway.ctl("explain", self.client).stdout
        if reply.rstrip().splitlines()[-1:] and reply.rstrip().splitlines()[-1].startswith("OK"):
            self.last = parse_explain(reply)

    def finish(self) -> Explained:
        self.stopped.set()
        self.join(WATCH_EVERY + 15)
        self.sample()
        return self.last


class Run:
    """The shared scaffolding of one row: numbered files, the user load, a capture."""

    def __init__(self, lab: BtLab, client: str, seconds: float) -> None:
        self.lab, self.client, self.seconds = lab, client, seconds
        lab.runs += 1
        self.tag = f"{lab.green_host(client)}-r{lab.runs}"
        self.user_report = lab.workdir / f"{self.tag}-user.json"
        self.user: subprocess.Popen[bytes] | None = None

    def path(self, suffix: str) -> Path:
        return self.lab.workdir / f"{self.tag}-{suffix}"

    def start_user(self) -> None:
        argv = user_load_argv(self.seconds, self.user_report)
        self.user = self.lab.spawn(USER_HOST, argv, f"{self.tag}-user.log")

    def user_result(self) -> dict[str, Any]:
        """End the user load (SIGTERM makes it write its report; it is bounded anyway) and read
        its report."""
        if self.user is None:
            return {}
        stop_process(self.user, 15)
        if not self.user_report.exists():
            raise LabError(f"no user report: {self.lab.read_log(f'{self.tag}-user.log')[-500:]}")
        return json.loads(self.user_report.read_text())

    @contextlib.contextmanager
    def capture(self) -> Iterator[Path]:
        """tcpdump on gw's green0 for the block; the pcap's path."""
        pcap, log = self.path("green0.pcap"), f"{self.tag}-tcpdump.log"
        proc = self.lab.spawn("gw", tcpdump_argv(pcap), log)
        deadline = time.monotonic() + 15
        while "listening on" not in self.lab.read_log(log):
            if proc.poll() is not None or time.monotonic() > deadline:
                stop_process(proc)
                raise LabError(f"tcpdump did not start: {self.lab.read_log(log)[-500:]}")
            time.sleep(0.05)
        try:
            yield pcap
        finally:
            stop_process(proc)

    def web_back(self, limit: float) -> float | None:
        """Seconds until the client's host fetches the web page again; None past ``limit``."""
        host = self.lab.green_host(self.client)
        start = time.monotonic()
        while time.monotonic() - start <= limit:
            curl = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", "1", WEB_URL]
            done = self.lab.run(host, curl, capture_output=True, text=True)
            if done.stdout == "200":
                return round(time.monotonic() - start, 2)
            time.sleep(0.2)
        return None


def gateway_for(
    lab: BtLab, events: Path, time_lock: int, enforcement: Enforcement = QUEUE
) -> Gateway:
    """The real daemon's gateway for ``lab``: ``--green-if green0``, a short lock, JSON events,
    the control port on its default (127.0.0.1:4120 in ``gw``)."""
    options = ["--green-if", lab.green_if, "-t", str(time_lock), "--json-events", str(events),
               "-L", "c", *enforcement.daemon_options()]  # fmt: skip
    return Gateway(lab, options, rules="iptables", rule_options=enforcement.rule_options(time_lock))


def _result(leech: LeechResult, source: str, kind: str, **extra: Any) -> RunResult:
    return RunResult(
        leech.client,
        source,
        kind,
        leech.complete,
        leech.received,
        leech.pieces,
        leech.seconds,
        leech.detail,
        leech.guard_rejects,
        **extra,
    )


def _user_fields(run: Run) -> dict[str, Any]:
    report = run.user_result()
    return {"user_rounds": int(report.get("rounds", 0)), "user_failures": user_failures(report)}


# -- the three kinds of run -------------------------------------------------------------------


def control_run(
    lab: BtLab, client: str, source: str, seconds: float = LEECH_SECONDS, dht: bool = True
) -> RunResult:
    """No daemon: the client should complete (the swarm works), the user should not fail."""
    run = Run(lab, client, seconds)
    run.start_user()
    leech = lab.leech(client, seconds, source, dht)
    return _result(leech, source, "control", **_user_fields(run))


def blocked_run(
    lab: BtLab,
    client: str,
    source: str,
    seconds: float = LEECH_SECONDS,
    time_lock: int = TIME_LOCK,
    dht: bool = True,
    enforcement: Enforcement = QUEUE,
) -> RunResult:
    """Daemon up before the client starts; everything of issue 11 §4 measured."""
    run = Run(lab, client, seconds)
    events = run.path("events.json")
    gateway = gateway_for(lab, events, time_lock, enforcement)
    ip = lab.green[client]
    watch = Watch(gateway, ip)
    try:
        gateway.install_rules()
        gateway.start()
        with run.capture() as pcap:
            run.start_user()
            watch.start()
            try:
                leech = lab.leech(client, seconds, source, dht)
            finally:
                last = watch.finish()
            back = run.web_back(time_lock * 1.5 + 10)
        user = _user_fields(run)
    finally:
        gateway.close()
    logged = read_events(events.read_text(errors="replace") if events.exists() else "")
    named, drops = touched(logged, USER_IP)
    data = pcap.read_bytes()
    return _result(
        leech,
        source,
        "blocked",
        time_lock=time_lock,
        **user,
        user_identified=named,
        user_drops=drops,
        first_cleartext=first_cleartext(data, ip),
        identified_at=identified_at(logged, ip),
        probes_sent=last.probes_sent,
        probes_answered=last.probes_answered,
        locked_at_end=last.locked,
        lock_lapsed=lapsed(logged, ip),
        web_back=back,
        wire_in=bytes_from(data, ip, SEEDERS),
    )


def tc_sent(lab: BtLab, device: str) -> int:
    """Bytes the qdisc on ``device`` in gw has sent (towards the green host)."""
    done = lab.run("gw", ["tc", "-s", "qdisc", "show", "dev", device], capture_output=True,
                   text=True)  # fmt: skip
    found = re.search(r"Sent (\d+) bytes", done.stdout)
    return int(found.group(1)) if found else 0


def resume_run(
    lab: BtLab,
    client: str,
    source: str = "http",
    seconds: float = LEECH_SECONDS,
    time_lock: int = TIME_LOCK,
    enforcement: Enforcement = QUEUE,
) -> RunResult:
    """The client starts first, slowed to ``RESUME_RATE``; the daemon starts once
    ``RESUME_AFTER`` bytes went to the client. Measured from the daemon's start: bytes on the
    wire to the client (tc counter, overhead included: an upper bound), identification."""
    run = Run(lab, client, seconds)
    events = run.path("events.json")
    gateway = gateway_for(lab, events, time_lock, enforcement)
    ip, port = lab.green[client], f"v-{lab.green_host(client)}"
    tc = ["tc", "qdisc", "replace", "dev", port, "root", "tbf", "rate", RESUME_RATE,
          "burst", "64kbit", "latency", "400ms"]  # fmt: skip
    if lab.run("gw", tc, capture_output=True).returncode:
        raise LabError(f"tc could not slow {port} in gw")
    started: dict[str, float] = {}
    stop = threading.Event()

    def start_daemon() -> None:
        deadline = time.monotonic() + RESUME_WAIT
        while tc_sent(lab, port) < RESUME_AFTER and time.monotonic() < deadline:
            if stop.wait(0.5):
                return
        started["sent"] = tc_sent(lab, port)
        gateway.install_rules()
        gateway.start()
        started["at"] = time.time()

    starter = threading.Thread(target=start_daemon, daemon=True)
    try:
        with run.capture() as pcap:
            run.start_user()
            starter.start()
            try:
                leech = lab.leech(client, seconds, source)
            finally:
                stop.set()
                starter.join(60)
            after = tc_sent(lab, port) - started.get("sent", 0)
            explained = parse_explain(gateway.ctl("explain", ip).stdout)
            back = run.web_back(time_lock * 1.5 + 10)
        user = _user_fields(run)
    finally:
        gateway.close()
        lab.run("gw", ["tc", "qdisc", "del", "dev", port, "root"], capture_output=True)
    if "at" not in started:
        return _result(leech, source, "resume", note="the daemon never started", **user)
    logged = read_events(events.read_text(errors="replace") if events.exists() else "")
    named, drops = touched(logged, USER_IP)
    data = pcap.read_bytes()
    return _result(
        leech,
        source,
        "resume",
        time_lock=time_lock,
        **user,
        user_identified=named,
        user_drops=drops,
        first_cleartext=first_cleartext(data, ip, started["at"]),
        identified_at=identified_at(logged, ip),
        probes_sent=explained.probes_sent,
        probes_answered=explained.probes_answered,
        locked_at_end=explained.locked,
        lock_lapsed=lapsed(logged, ip),
        web_back=back,
        wire_in=after,
        note=f"daemon started after {started['sent']} bytes to the client",
    )


# -- the verdict --------------------------------------------------------------------------------


def judge(result: RunResult) -> list[str]:
    """Why a row fails issue 11 §4 (empty: it passes).

    control: complete, user without failures. blocked and resume: 0 pieces and at most one
    piece received (resume: incomplete, and at most one piece's bytes on the wire to the client
    after the daemon started, whatever it had before), identified
    within 2 s of the first cleartext packet, user without failures and never named, locked
    with probes answered at the end and no lapse of the lock before, web back within the lock
    plus one probe interval (half the lock) plus 3 s of measuring slack.
    """
    why = []
    failures = sum(result.user_failures.values())
    if failures:
        why.append(f"user had {failures} failures")
    if result.kind == "control":
        if not result.complete:
            why.append("did not complete")
        return why
    resume = result.kind == "resume"
    received = result.wire_in if resume else result.received
    if result.complete or (result.pieces and not resume):
        why.append(f"{result.pieces} pieces completed")
    if received is None or received > MAX_RECEIVED:
        why.append(f"received {received} bytes")
    after = result.identified_after
    if result.identified_at is None:
        why.append("never identified")
    elif after is None or after > IDENTIFY_WITHIN:
        why.append(f"identified {after} s after its first cleartext packet")
    if result.user_identified:
        why.append("the user was identified")
    if not result.locked_at_end or not result.probes_answered:
        why.append(f"not kept locked by probes (answered {result.probes_answered})")
    if result.lock_lapsed:
        why.append("the lock lapsed while the client ran")
    lock = result.time_lock or 0
    if result.web_back is None or result.web_back > lock * 1.5 + 3:
        why.append(f"web back after {result.web_back} s")
    return why
