"""``twistd p2pwall`` options: every ftwall option with a long name, plus the new ones."""

from __future__ import annotations

import ipaddress

from twisted.python import usage

from .allow import parse_network
from .coerce import number as _number
from .events import DEBUG_CLASSES, EVENT_CLASSES, parse_classes
from .hooks import parse_command
from .kernel.backends import SET_KINDS
from .metrics import metrics_endpoint
from .networks import DEFAULT_GREEN
from .registry import REGISTRY
from .version import VersionOption

DEFAULT_CONTROL = "tcp:4120:interface=127.0.0.1"
# What --json-events writes unless --json-classes says: drops, clients, peers, control commands
# (accepted packets, U and T, are most of the traffic and only on request).
DEFAULT_JSON_CLASSES = "utcpx"
READERS = ("native", "netfilterqueue")
# queue: the daemon drops what it decides to; kernel: the kernel drops by p2pwall's sets.
ENFORCE_MODES = ("queue", "kernel")


def _classes_help(known: dict[str, str]) -> str:
    return "; ".join(f"{letter}={meaning}" for letter, meaning in known.items())


def _detector_rows(kind: str) -> list[list]:
    """The ``optFlags`` or ``optParameters`` rows every registered detector adds."""
    return [row for entry in REGISTRY for row in getattr(entry.detector, kind)]


# Debug classes: the core's, then each detector's own (``A`` turns on all of them).
ALL_DEBUG_CLASSES = {
    **DEBUG_CLASSES,
    **{letter: text for entry in REGISTRY for letter, text in entry.detector.debug_classes.items()},
}


class Options(VersionOption, usage.Options):
    synopsis = "[options]"
    longdesc = (
        "Block FastTrack (Kazaa, KazaaLite, iMesh, Grokster), WinMX and OpenNAP clients on the "
        "green network from reaching peers outside. Packets come from NFQUEUE rules; print them "
        "with p2pwall-rules. Run in the foreground with 'twistd -n p2pwall'."
    )

    optFlags = [
        ["accept-all", None, "Start in accept-all mode: every packet is accepted."],
        [
            "dry-run",
            None,
            "Decide, learn and lock as usual, but drop nothing and send no pong or probe: "
            "log and count what would be dropped.",
        ],
        [
            "fail-open",
            None,
            "When the kernel queue is full, accept packets instead of "
            "dropping them (NFQA_CFG_F_FAIL_OPEN).",
        ],
        *_detector_rows("opt_flags"),
    ]

    optParameters = [
        ["debug", "d", "", "Debug classes: " + _classes_help(ALL_DEBUG_CLASSES)],
        ["on-lock", None, None, "Command run when a client is locked (no shell; P2PWALL_* "
         "variables say who and why)."],
        ["on-release", None, None, "Command run when a client's lock ends."],
        ["probe-source", "a", None, "Address probes come from (default: the gateway's own "
         "address towards each client)."],
        ["buffer", "b", 4 * 1024 * 1024, "Netlink socket buffer in bytes (capped by the "
         "kernel's rmem_max).", _number(int, "buffer")],
        ["store-file", "f", None, "File keeping learned peers across restarts."],
        ["time-lock", "t", 120.0, "Seconds a client stays locked after trying a known peer; "
         "0 disables.", _number(float, "time-lock")],
        ["client-dir", "c", None, "Directory with an empty file per locked P2P client."],
        ["syslog-events", "l", "", "Event classes to syslog: " + _classes_help(EVENT_CLASSES)],
        ["stderr-events", "L", "", "Event classes to stderr (same letters as -l)."],
        ["json-events", None, None, "File getting the events as JSON, one object a line "
         "(reopened on SIGHUP)."],
        ["json-classes", None, DEFAULT_JSON_CLASSES, "Event classes to --json-events (same "
         "letters as -l; the debug classes of -d go there too)."],
        ["metrics", None, None, "Prometheus endpoint, e.g. 9120 or tcp:9120 (loopback unless "
         "interface= is given); off by default.", metrics_endpoint],
        ["queue", "q", 0, "NFQUEUE number to read.", _number(int, "queue")],
        ["max-queue-len", None, 4096, "Kernel queue length (packets held for a verdict).",
         _number(int, "max-queue-len")],
        ["failure-verdict", None, "accept", "Verdict when deciding a packet fails: accept|drop."],
        ["reader", None, "native", "Queue reader: native (whole packets, batch verdicts, "
         "--fail-open) or netfilterqueue (the NetfilterQueue package: packets cut at 4016 "
         "bytes, one verdict call per packet, no --fail-open)."],
        ["enforce", None, "queue", "queue (the daemon drops queued packets) or kernel (the "
         "kernel drops by p2pwall's nft sets, which the daemon fills: apply p2pwall-rules "
         "--enforce kernel)."],
        ["sets", None, "nft", "With --enforce kernel, where the sets are: "
         + " or ".join(SET_KINDS) + " (as p2pwall-rules --sets)."],
        ["control", None, DEFAULT_CONTROL, "Control port endpoint (tcp:..., unix:...)."],
        ["dump-dir", None, None, "Directory where 'dump-blocks FILE' and 'dump-dns-names FILE' "
         "write (off by default)."],
        ["max-peers", None, 1_000_000, "Most blocked peers kept; the oldest go first.",
         _number(int, "max-peers")],
        ["max-spoofs", None, 200, "Most forged pongs sent per second (a hello flood beyond "
         "it is dropped unanswered).", _number(int, "max-spoofs")],
        ["max-probes", None, 100, "Most probes sent per second (due probes beyond it wait for "
         "the next second).", _number(int, "max-probes")],
        ["max-clients", None, 65_536, "Most P2P clients tracked; the soonest to expire go "
         "first.", _number(int, "max-clients")],
        ["store-interval", None, 60.0, "Seconds between store-file writes.",
         _number(float, "store-interval")],
        ["store-max-age", None, 7 * 86400.0, "Seconds after which learned peers not seen "
         "are forgotten, in the running table (with or without -f) and in the store file; "
         "manual blocks stay.", _number(float, "store-max-age")],
        *_detector_rows("opt_parameters"),
    ]  # fmt: skip

    compData = usage.Completions(
        optActions={
            "store-file": usage.CompleteFiles(),
            "dns-patterns": usage.CompleteFiles(),
            "client-dir": usage.CompleteDirs(),
            "dump-dir": usage.CompleteDirs(),
            "json-events": usage.CompleteFiles(),
            "green-if": usage.CompleteNetInterfaces(),
            "failure-verdict": usage.CompleteList(["accept", "drop"]),
            "reader": usage.CompleteList(list(READERS)),
            "enforce": usage.CompleteList(list(ENFORCE_MODES)),
        }
    )

    def __init__(self) -> None:
        super().__init__()
        self["green"] = []
        self["green-if"] = []
        self["allow"] = []

    def opt_allow(self, cidr: str) -> None:
        """Allowed network (CIDR), repeatable: never locked, never blocked, never learned."""
        try:
            self["allow"].append(parse_network(cidr))
        except ValueError as error:
            raise usage.UsageError(f"--allow: {error}") from None

    def opt_green(self, cidr: str) -> None:
        """Green network (CIDR), repeatable; default: the private ranges, unless --green-if."""
        try:
            self["green"].append(ipaddress.ip_network(cidr, strict=False))
        except ValueError as error:
            raise usage.UsageError(f"--green: {error}") from None

    def opt_green_if(self, name: str) -> None:
        """Green interface, repeatable: its networks are green, re-read while running."""
        # With --green-if, the private ranges are no longer green by default (--green adds them);
        # link-local fe80::/10 stays green and makes no interface green.
        # The kernel's rules for a name (dev_valid_name): 1..15 bytes, no '/', ':' or space.
        bad = name in (".", "..") or any(c in "/:" or c.isspace() for c in name)
        if bad or not 0 < len(name.encode()) < 16:
            raise usage.UsageError(f"--green-if: not an interface name: {name!r}")
        self["green-if"].append(name)

    def postOptions(self) -> None:
        # Neither --green nor --green-if: the private ranges, and a warning at start.
        self["green-default"] = not self["green"] and not self["green-if"]
        if self["green-default"]:
            self["green"] = [ipaddress.ip_network(n) for n in DEFAULT_GREEN]
        try:
            self["debug-classes"] = parse_classes(self["debug"], ALL_DEBUG_CLASSES, "debug")
            self["syslog-classes"] = parse_classes(self["syslog-events"], EVENT_CLASSES, "event")
            self["stderr-classes"] = parse_classes(self["stderr-events"], EVENT_CLASSES, "event")
        except ValueError as error:
            raise usage.UsageError(str(error)) from None
        try:
            self["json-event-classes"] = parse_classes(self["json-classes"], EVENT_CLASSES, "event")
        except ValueError as error:
            raise usage.UsageError(f"--json-classes: {error}") from None
        if self["probe-source"] is not None:
            try:
                self["probe-source"] = ipaddress.ip_address(self["probe-source"])
            except ValueError as error:
                raise usage.UsageError(f"--probe-source: {error}") from None
        for option in ("on-lock", "on-release"):
            if self[option] is not None:
                try:
                    self[option] = parse_command(self[option], f"--{option}")
                except ValueError as error:
                    raise usage.UsageError(str(error)) from None
        if self["failure-verdict"] not in ("accept", "drop"):
            raise usage.UsageError("--failure-verdict must be 'accept' or 'drop'")
        if self["enforce"] not in ENFORCE_MODES:
            raise usage.UsageError(f"--enforce must be one of {', '.join(ENFORCE_MODES)}")
        if self["sets"] not in SET_KINDS:
            raise usage.UsageError(f"--sets must be one of {', '.join(SET_KINDS)}")
        if self["enforce"] == "kernel" and not self["time-lock"]:
            raise usage.UsageError(
                "--enforce kernel needs a time lock (-t 1 or more): the kernel's lock sets "
                "time out after it"
            )
        if self["enforce"] == "kernel" and self["dry-run"]:
            raise usage.UsageError(
                "--dry-run needs --enforce queue: the kernel's sets would drop what a dry run "
                "only logs"
            )
        if self["reader"] not in READERS:
            raise usage.UsageError(f"--reader must be one of {', '.join(READERS)}")
        if self["fail-open"] and self["reader"] != "native":
            raise usage.UsageError(
                "--fail-open needs --reader native: NetfilterQueue cannot set the queue's "
                "fail-open flag"
            )
        self._check_range("time-lock", 0, 86400 * 365)
        self._check_range("queue", 0, 65535)
        self._check_range("buffer", 4096, 1 << 30)
        self._check_range("max-queue-len", 1, 1 << 20)
        self._check_range("max-peers", 10, 1 << 26)
        self._check_range("max-clients", 10, 1 << 24)
        self._check_range("max-spoofs", 1, 100_000)
        self._check_range("max-probes", 1, 100_000)
        self._check_range("store-interval", 1, 86400)
        self._check_range("store-max-age", 1, 86400 * 3650)

    def _check_range(self, name: str, low: float, high: float) -> None:
        if not low <= self[name] <= high:
            raise usage.UsageError(f"--{name} must be between {low} and {high}, got {self[name]}")
