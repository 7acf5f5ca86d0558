"""``p2pwall-rules``: print the iptables or nftables rules that feed the daemon.

Queue only what the daemon needs, from the green interface: UDP (hellos, follow-ups), TCP SYNs
(known peers, time locks), the first data packets of TCP connections that look like a FastTrack
download (iptables: string match; nft, which has none: payload starting ``GET /.`` -- the
FastTrack paths ``/.hash=``, ``/.download/``... -- or ``GIVE ``), DNS answers on
their way to green hosts or to the gateway, and UDP from green to the gateway (probe replies).
"""

from __future__ import annotations

import re
import shlex
import sys
from dataclasses import dataclass

from twisted.python import usage

from ..spoof import SPOOF_MARK

CHAIN_FORWARD = "p2pwall-fwd"
CHAIN_INPUT = "p2pwall-in"
CHAIN_DOWNLOAD = "p2pwall-dl"
CHAIN_RAW = "p2pwall-raw"
NFT_TABLE = "p2pwall"
DOWNLOAD_MARKERS = ("X-Kazaa-", "GET /.hash=", "GIVE ", "PeerEnabler/")
IFACE_NAME = re.compile(r"[A-Za-z0-9_.:@-]{1,15}")
EARLY_PACKETS = "0:4"
UDP_FLOW_NOTE = """\
Only the first packets of each UDP flow are queued (--udp-packets, default 3). A packet the
daemon drops never confirms its conntrack entry, so UDP to a blocked peer stays queued packet
after packet; a flow the daemon accepts leaves the queue after its first packets, so ordinary
UDP (DNS, VoIP, games) runs at kernel speed. The daemon's forged pongs and probes carry a mark
that a raw-table rule exempts from conntrack, so they never open a flow that would count the
client's next hello as "reply" traffic. The price: a UDP flow accepted before its peer became
known is not re-examined; --udp-packets 0 queues every UDP packet. DNS answers are queued only
on established flows (answers to queries that went out), so nobody outside can forge one to
train the block list."""


@dataclass(frozen=True)
class RuleSet:
    green_if: str
    queue: int = 0
    bypass: bool = True
    dns: bool = True
    http: bool = True
    probes: bool = True
    udp_packets: int = 3

    def _target(self) -> list[str]:
        target = ["-j", "NFQUEUE", "--queue-num", str(self.queue)]
        return target + ["--queue-bypass"] if self.bypass else target

    def _udp_flow_start(self) -> list[str]:
        """Only the first packets of each UDP flow (see ``UDP_FLOW_NOTE``); [] queues them all."""
        if not self.udp_packets:
            return []
        return ["-m", "connbytes", "--connbytes", f"0:{self.udp_packets}", "--connbytes-dir",
                "original", "--connbytes-mode", "packets"]  # fmt: skip

    def iptables(self, command: str = "iptables") -> list[list[str]]:
        """argv lists that create the chains, fill them and hook them in (idempotent after
        ``iptables_delete``)."""
        green, target = self.green_if, self._target()
        udp_start = self._udp_flow_start()
        forward = [
            ["-i", green, "-p", "udp", *udp_start, *target],
            ["-i", green, "-p", "tcp", "--syn", *target],
        ]
        downloads = []
        if self.http:
            # One connbytes test per data packet, then the markers in their own chain: bulk
            # data of an established connection costs one match here, not one per marker.
            early = ["-m", "connbytes", "--connbytes", EARLY_PACKETS, "--connbytes-dir",
                     "original", "--connbytes-mode", "packets"]  # fmt: skip
            forward.append(["-i", green, "-p", "tcp", "!", "--syn", *early, "-j", CHAIN_DOWNLOAD])
            downloads = [
                ["-m", "string", "--algo", "bm", "--string", marker, *target]
                for marker in DOWNLOAD_MARKERS
            ]
        answers = ["-m", "conntrack", "--ctstate", "ESTABLISHED"]
        if self.dns:
            forward.append(["-o", green, "-p", "udp", "--sport", "53", *answers, *target])
            forward.append(
                ["-o", green, "-p", "tcp", "--sport", "53", "!", "--syn", *answers, *target]
            )
        inbound = []
        if self.probes:
            inbound.append(["-i", green, "-p", "udp", *udp_start, *target])
        if self.dns:
            inbound.append(["!", "-i", green, "-p", "udp", "--sport", "53", *answers, *target])
        raw = [command, "-t", "raw"]
        argv = [[command, "-N", CHAIN_FORWARD], [command, "-N", CHAIN_INPUT],
                [command, "-N", CHAIN_DOWNLOAD], [*raw, "-N", CHAIN_RAW]]  # fmt: skip
        argv += [[command, "-A", CHAIN_DOWNLOAD, *rule] for rule in downloads]
        argv += [[command, "-A", CHAIN_FORWARD, *rule] for rule in forward]
        argv += [[command, "-A", CHAIN_INPUT, *rule] for rule in inbound]
        argv.append([*raw, "-A", CHAIN_RAW, "-m", "mark", "--mark", hex(SPOOF_MARK), "-j", "CT",
                     "--notrack"])  # fmt: skip
        argv += [
            [command, "-I", "FORWARD", "1", "-j", CHAIN_FORWARD],
            [command, "-I", "INPUT", "1", "-j", CHAIN_INPUT],
            [*raw, "-I", "OUTPUT", "1", "-j", CHAIN_RAW],
        ]
        return argv

    @staticmethod
    def iptables_delete(command: str = "iptables") -> list[list[str]]:
        raw = [command, "-t", "raw"]
        return [
            [command, "-D", "FORWARD", "-j", CHAIN_FORWARD],
            [command, "-D", "INPUT", "-j", CHAIN_INPUT],
            [*raw, "-D", "OUTPUT", "-j", CHAIN_RAW],
            [command, "-F", CHAIN_FORWARD],
            [command, "-X", CHAIN_FORWARD],
            [command, "-F", CHAIN_DOWNLOAD],
            [command, "-X", CHAIN_DOWNLOAD],
            [command, "-F", CHAIN_INPUT],
            [command, "-X", CHAIN_INPUT],
            [*raw, "-F", CHAIN_RAW],
            [*raw, "-X", CHAIN_RAW],
        ]

    def nft(self) -> str:
        """An ``nft -f`` script for one ``inet`` table (IPv4 and IPv6 together)."""
        green = f'iifname "{self.green_if}"'
        queue = f"queue num {self.queue}" + (" bypass" if self.bypass else "")
        udp = "meta l4proto udp" + (
            f" ct original packets <= {self.udp_packets}" if self.udp_packets else ""
        )
        forward = [
            f"{green} {udp} {queue}",
            f"{green} tcp flags & (syn | ack) == syn {queue}",
        ]
        if self.http:
            early = "ct original packets < 5"
            forward += [
                f"{green} tcp flags & (syn | ack) == ack {early} @ih,0,48 0x474554202f2e {queue}",
                f"{green} tcp flags & (syn | ack) == ack {early} @ih,0,40 0x4749564520 {queue}",
            ]
        if self.dns:
            forward += [
                f'oifname "{self.green_if}" udp sport 53 ct state established {queue}',
                f'oifname "{self.green_if}" tcp sport 53 tcp flags & syn == 0 '
                f"ct state established {queue}",
            ]
        inbound = []
        if self.probes:
            inbound.append(f"{green} {udp} {queue}")
        if self.dns:
            inbound.append(
                f'iifname != "{self.green_if}" udp sport 53 ct state established {queue}'
            )
        lines = [f"table inet {NFT_TABLE}", f"delete table inet {NFT_TABLE}",
                 f"table inet {NFT_TABLE} {{"]  # fmt: skip
        untracked = [f"meta mark {hex(SPOOF_MARK)} notrack"]
        for name, hook, priority, rules in (
            ("forward", "forward", "filter", forward),
            ("input", "input", "filter", inbound),
            ("spoofed", "output", "raw", untracked),
        ):
            lines.append(f"  chain {name} {{")
            lines.append(f"    type filter hook {hook} priority {priority}; policy accept;")
            lines += [f"    {rule}" for rule in rules]
            lines.append("  }")
        lines.append("}")
        return "\n".join(lines) + "\n"

    @staticmethod
    def nft_delete() -> str:
        return f"table inet {NFT_TABLE}\ndelete table inet {NFT_TABLE}\n"


class Options(usage.Options):
    synopsis = "--green-if IFACE [options]"
    longdesc = (
        "Print the firewall rules that queue packets to p2pwall (as shell commands).\n\n"
        + UDP_FLOW_NOTE
    )
    optParameters = [
        ["green-if", "i", None, "The green (home) network interface."],
        ["queue", "q", 0, "NFQUEUE number (the daemon's --queue).", int],
        ["format", "F", "iptables", "iptables (iptables + ip6tables commands) or nft."],
        ["udp-packets", None, 3, "Queue this many first packets of each UDP flow (0: all).", int],
    ]
    optFlags = [
        ["no-bypass", None, "Drop instead of forwarding while no daemon reads the queue."],
        ["no-dns", None, "Do not queue DNS answers (no DNS auto-training)."],
        ["no-http", None, "Do not queue FastTrack download starts (no HTTP safety net)."],
        ["no-probes", None, "Do not queue UDP to the gateway (no probe replies)."],
        ["delete", None, "Print the commands that remove the rules instead."],
    ]

    def postOptions(self) -> None:
        if not self["green-if"]:
            raise usage.UsageError("--green-if is required")
        if not IFACE_NAME.fullmatch(self["green-if"]):
            raise usage.UsageError(f"--green-if: not an interface name: {self['green-if']!r}")
        if self["format"] not in ("iptables", "nft"):
            raise usage.UsageError("--format must be 'iptables' or 'nft'")
        if not 0 <= self["queue"] <= 65535:
            raise usage.UsageError("--queue must be between 0 and 65535")
        if not 0 <= self["udp-packets"] <= 1000:
            raise usage.UsageError("--udp-packets must be between 0 and 1000")


def render(options: Options) -> str:
    rules = RuleSet(
        options["green-if"],
        options["queue"],
        bypass=not options["no-bypass"],
        dns=not options["no-dns"],
        http=not options["no-http"],
        probes=not options["no-probes"],
        udp_packets=options["udp-packets"],
    )
    if options["format"] == "nft":
        script = rules.nft_delete() if options["delete"] else rules.nft()
        return f"nft -f - <<'EOF'\n{script}EOF\n"
    lines = []
    for command in ("iptables", "ip6tables"):
        argv = rules.iptables_delete(command) if options["delete"] else rules.iptables(command)
        lines += [" ".join(word if word == "!" else shlex.quote(word) for word in words)
                  for words in argv]  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    options = Options()
    try:
        options.parseOptions(sys.argv[1:] if argv is None else argv)
    except usage.UsageError as error:
        print(f"p2pwall-rules: {error}\n{options}", file=sys.stderr)
        return 2
    sys.stdout.write(render(options))
    return 0
