"""``p2pwall-rules``: print the iptables or nftables rules that feed the daemon.

The core queues what every protocol needs from the green interfaces: the first packets of each
UDP flow a green host opens and TCP SYNs (known peers, time locks). Each protocol in
``p2pwall.registry`` adds its fragment (``p2pwall.fragments``): what its detector reads on
green, in the first data packets of TCP connections green opened, and from the outside (DNS
answers, BitTorrent replies). The core adds the interface matches, the guards that keep what
came in on green out of the "from outside" rules, the order, and the chains' life cycle.

The rules queue from the mangle table (nft: a table of our own at priority mangle), where a
packet the daemon accepts goes on to the admin's filter rules: p2pwall only ever takes traffic
away. Everything a green host can have queued passes a per-source rate limit first.
"""

from __future__ import annotations

import re
import shlex
import sys
from dataclasses import dataclass, field

from twisted.python import usage

from ..fragments import FORWARD, INPUT, IptablesContext, NftContext, Rules, words
from ..kernel import ipsetrules, nftrules
from ..kernel.backends import SET_KINDS
from ..kernel.elements import FAMILIES
from ..networks import IPV6_SOURCE_BITS
from ..registry import REGISTRY
from ..spoof import SPOOF_MARK
from ..version import VersionOption

CHAIN_FORWARD = "p2pwall-fwd"
CHAIN_INPUT = "p2pwall-in"
# The first data packets of TCP connections a green host opened, one connbytes test for every
# fragment's string matches (the name is from when only FastTrack downloads went there).
CHAIN_DOWNLOAD = "p2pwall-dl"
CHAIN_LIMIT = "p2pwall-lim"
CHAIN_RAW = "p2pwall-raw"
NFT_CHAIN_LIMIT = "limited"
TABLE = "mangle"
# Our chains and the built-in chain each is hooked into (appended, after the admin's own
# mangle rules: an accepted packet skips nothing of theirs, e.g. a TCPMSS clamp on SYNs).
HOOKS = ((CHAIN_FORWARD, "FORWARD"), (CHAIN_INPUT, "INPUT"))
# Versions before the move to mangle hooked these into the filter table; removed on every run,
# so an upgrade leaves no jump that would let an accepted packet skip the admin's filter rules.
LEGACY_FILTER_CHAINS = (CHAIN_FORWARD, CHAIN_INPUT, CHAIN_DOWNLOAD)
NFT_TABLE = "p2pwall"
IFACE_NAME = re.compile(r"[A-Za-z0-9_.:@-]{1,15}")
EARLY_PACKETS = "0:4"
NFT_EARLY_PACKETS = "ct original packets < 5"
OPENED_BY_SENDER = ("-m", "conntrack", "--ctdir", "ORIGINAL")
NFT_OPENED_BY_SENDER = "ct direction original"
REPLY = ("-m", "conntrack", "--ctstate", "ESTABLISHED", "--ctdir", "REPLY")
NFT_REPLY = "ct state established ct direction reply"
HASHLIMIT_NAME = "p2pwall"
DEFAULT_PER_SOURCE_LIMIT = 1000
DEFAULT_LOCK_SECONDS = 120
ENFORCE_MODES = ("queue", "kernel")
MAX_PER_SOURCE_LIMIT = 100_000
UDP_FLOW_NOTE = """\
Only the first packets of each UDP flow a green host opens are queued (--udp-packets, default
3). A packet the daemon drops never confirms its conntrack entry, so UDP to a blocked peer stays
queued packet after packet; a flow the daemon accepts leaves the queue after its first packets,
so ordinary UDP (DNS, VoIP, games) runs at kernel speed. The daemon's forged pongs and probes
carry a mark that a raw-table rule exempts from conntrack, so they never open a flow that would
count the client's next hello as "reply" traffic. The price: a UDP flow accepted before its peer
became known is not re-examined; --udp-packets 0 queues every UDP packet. What is queued from
the outside (DNS answers, BitTorrent's DHT and tracker replies) is queued only when it does not
come in on a green interface, in the reply direction of a flow a green host or the gateway
opened, so neither the internet nor a green host can forge it to train the block list; it
always passes while no daemon reads the queue (the daemon never drops an answer)."""
FIREWALL_NOTE = """\
The rules hook into the mangle table (nft: table inet p2pwall at priority mangle), appended
after your own mangle rules; a packet the daemon accepts still meets every rule of your filter
table. Applying the printed commands twice changes nothing; --delete removes everything, also
what older versions put into the filter table. A green host's flow starts (UDP, SYNs, download
markers, tracker announces, probe replies) above --per-source-limit packets per second (burst:
twice that) are dropped before they reach the queue, so one host cannot take it from the
others. With --enforce kernel --sets ipset, the chain that drops by p2pwall's ipset sets
(p2pwall-kern) is inserted first into mangle FORWARD, where nft's table of kernel enforcement
runs too (before iptables' mangle chains); it only drops, never accepts. See
docs/deploying.md."""


def shell_words(argv: list[str]) -> str:
    """One command line; ``!`` stays bare (iptables' negation, not a shell word)."""
    return " ".join(word if word == "!" else shlex.quote(word) for word in argv)


def all_fragments() -> tuple[object, ...]:
    """Every registered protocol's fragment, nothing turned off."""
    return tuple(entry.rules() for entry in REGISTRY)


@dataclass(frozen=True)
class RuleSet:
    green_ifs: tuple[str, ...]
    queue: int = 0
    bypass: bool = True
    udp_packets: int = 3
    per_source_limit: int = DEFAULT_PER_SOURCE_LIMIT
    fragments: tuple[object, ...] = field(default_factory=all_fragments)
    # "kernel": the kernel drops by p2pwall's sets (``p2pwall.kernel``), SYNs are not queued.
    enforce: str = "queue"
    lock_seconds: int = DEFAULT_LOCK_SECONDS
    lock_established: bool = False
    # Where kernel enforcement's sets live: "nft" (a table of ours) or "ipset" (with iptables
    # chains of ours, for iptables-legacy gateways: ``p2pwall.kernel.ipsetrules``).
    sets: str = "nft"

    @property
    def kernel(self) -> bool:
        return self.enforce == "kernel"

    @property
    def ipset(self) -> bool:
        return self.kernel and self.sets == "ipset"

    def _target(self, bypass: bool) -> list[str]:
        target = ["-j", "NFQUEUE", "--queue-num", str(self.queue)]
        return target + ["--queue-bypass"] if bypass else target

    def _udp_packets(self, direction: str) -> tuple[str, ...]:
        """Only the first packets of each UDP flow (see ``UDP_FLOW_NOTE``); () queues them all."""
        if not self.udp_packets:
            return ()
        return ("-m", "connbytes", "--connbytes", f"0:{self.udp_packets}", "--connbytes-dir",
                direction, "--connbytes-mode", "packets")  # fmt: skip

    def fragment_chains(self) -> tuple[str, ...]:
        """Every fragment chain, of each registered protocol whether turned off or not: applying
        flushes them all and ``--delete`` removes them all, whatever options either was given."""
        classes = [entry.rules for entry in REGISTRY] + [type(part) for part in self.fragments]
        return tuple(dict.fromkeys(chain for cls in classes for chain in cls.chains))

    def iptables_context(self, ipv6: bool) -> IptablesContext:
        """What the fragments build their iptables rules from."""
        return IptablesContext(
            ipv6=ipv6,
            limit=("-j", CHAIN_LIMIT),
            answer=tuple(self._target(bypass=True)),
            opened_by_sender=OPENED_BY_SENDER,
            # Only flows a green host opened: a packet in on green in the reply direction (such
            # as a resolver's "answer" a green host routes back into its own query) is no flow
            # start.
            udp_start=(*self._udp_packets("original"), *OPENED_BY_SENDER),
            udp_reply_start=self._udp_packets("reply"),
            reply=REPLY,
        )

    def iptables_chains(self, ipv6: bool = False) -> dict[str, list[list[str]]]:
        """The rules (what follows ``-A CHAIN``) of each of our mangle chains."""
        limit = CHAIN_LIMIT
        context = self.iptables_context(ipv6)
        udp_start = context.udp_start
        parts = [fragment.iptables(context) for fragment in self.fragments]
        early = [rule for part in parts for rule in part.early]
        forward, inbound = [], []
        for green in self.green_ifs:
            forward.append(["-i", green, "-p", "udp", *udp_start, "-j", limit])
            if not self.kernel:
                forward.append(["-i", green, "-p", "tcp", "--syn", "-j", limit])
            if early:
                # One connbytes test per data packet, then the fragments' string matches in
                # their own chain: bulk data costs one match here, not one per marker.
                connbytes = ["-m", "connbytes", "--connbytes", EARLY_PACKETS, "--connbytes-dir",
                             "original", "--connbytes-mode", "packets"]  # fmt: skip
                forward.append(["-i", green, "-p", "tcp", "!", "--syn", *connbytes,
                                *OPENED_BY_SENDER, "-j", CHAIN_DOWNLOAD])  # fmt: skip
            forward += [["-i", green, *rule] for rule in _hooked(parts, "green", FORWARD)]
            inbound += [["-i", green, *rule] for rule in _hooked(parts, "green", INPUT)]
        # Below the guards, nothing that came in on a green interface (or, on INPUT, from the
        # gateway itself): what is queued from outside counts only from the outside.
        outside = _hooked(parts, "outside", FORWARD)
        if outside:
            forward += [["-i", green, "-j", "RETURN"] for green in self.green_ifs]
            forward += [["-o", green, *rule] for green in self.green_ifs for rule in outside]
        outside = _hooked(parts, "outside", INPUT)
        if outside:
            inbound += [["-i", name, "-j", "RETURN"] for name in self._green_and_lo()]
            inbound += [list(rule) for rule in outside]
        limited = []
        if self.per_source_limit:
            rate = self.per_source_limit
            mask = ["--hashlimit-srcmask", str(IPV6_SOURCE_BITS)] if ipv6 else []
            limited.append(["-m", "hashlimit", "--hashlimit-above", f"{rate}/sec",
                            "--hashlimit-burst", str(2 * rate), "--hashlimit-mode", "srcip",
                            *mask, "--hashlimit-name", HASHLIMIT_NAME, "-j", "DROP"])  # fmt: skip
        limited.append(self._target(self.bypass))
        own = self.fragment_chains()
        for part in parts:
            if undeclared := set(part.chains) - set(own):
                raise ValueError(f"a fragment fills chains it does not declare: {undeclared}")
        chains = {CHAIN_LIMIT: limited, CHAIN_DOWNLOAD: [list(rule) for rule in early]}
        chains |= {name: [list(rule) for part in parts for rule in part.chains.get(name, ())]
                   for name in own}  # fmt: skip
        return chains | {CHAIN_FORWARD: forward, CHAIN_INPUT: inbound}

    def _green_and_lo(self) -> list[str]:
        return list(dict.fromkeys([*self.green_ifs, "lo"]))

    def iptables(self, command: str = "iptables") -> list[str]:
        """Shell lines that create or refill our chains and hook them in once (``sh -e``)."""
        mangle, raw = [command, "-t", TABLE], [command, "-t", "raw"]
        chains = self.iptables_chains(ipv6=ipsetrules.family_of_command(command) == 6)
        if self.ipset:
            chains |= self.ipset_chains(command)
        lines = [_new_or_flush(mangle, chain) for chain in chains]
        lines.append(_new_or_flush(raw, CHAIN_RAW))
        if self.ipset:
            # Our chains are empty now: a set whose options changed (--lock-time) is free to
            # be made anew.
            family = ipsetrules.family_of_command(command)
            lines += [_ipset_create(*spec) for spec in ipsetrules.sets(family, self.lock_seconds)]
        for chain, rules in chains.items():
            lines += [shell_words([*mangle, "-A", chain, *rule]) for rule in rules]
        lines.append(shell_words([*raw, "-A", CHAIN_RAW, "-m", "mark", "--mark", hex(SPOOF_MARK),
                                  "-j", "CT", "--notrack"]))  # fmt: skip
        lines += [_hook(mangle, builtin, ["-A", builtin], chain) for chain, builtin in HOOKS]
        if self.ipset:
            # First in FORWARD: where nft's table stands (priority mangle - 10), before the
            # queue rules and the admin's mangle rules.
            kernel_hook = ["-I", "FORWARD", "1"]
            lines.append(_hook(mangle, "FORWARD", kernel_hook, ipsetrules.CHAIN_KERNEL))
        else:
            # Sets of another kind, or none: an earlier run's ipset enforcement goes.
            lines += _remove_ipset_enforcement(command)
        lines.append(_hook(raw, "OUTPUT", ["-I", "OUTPUT", "1"], CHAIN_RAW))
        return lines + _remove_legacy(command)

    def ipset_chains(self, command: str) -> dict[str, list[list[str]]]:
        """The chains of kernel enforcement by ipset for ``command``'s family."""
        family = ipsetrules.family_of_command(command)
        return ipsetrules.chains(self.green_ifs, family, self.queue, self.lock_established)

    def iptables_delete(self, command: str = "iptables") -> list[str]:
        """Shell lines that remove every jump (however many) and chain of ours, old or new."""
        mangle, raw = [command, "-t", TABLE], [command, "-t", "raw"]
        lines = [_unhook(mangle, builtin, chain) for chain, builtin in HOOKS]
        lines.append(_unhook(raw, "OUTPUT", CHAIN_RAW))
        # Kernel enforcement by ipset goes too, whatever options either run was given.
        lines.append(_unhook(mangle, "FORWARD", ipsetrules.CHAIN_KERNEL))
        chains = (CHAIN_FORWARD, CHAIN_INPUT, CHAIN_DOWNLOAD, *self.fragment_chains(), CHAIN_LIMIT,
                  *ipsetrules.chain_names())  # fmt: skip
        ours = [*[(mangle, chain) for chain in chains], (raw, CHAIN_RAW)]
        lines += [_quietly([*table, "-F", chain]) for table, chain in ours]
        lines += [_quietly([*table, "-X", chain]) for table, chain in ours]
        return lines + _remove_legacy(command)

    def nft_context(self) -> NftContext:
        """What the fragments build their nft rules from."""
        packets = self.udp_packets
        return NftContext(
            limit=f"jump {NFT_CHAIN_LIMIT}",
            answer=_nft_queue(self.queue, bypass=True),
            opened_by_sender=NFT_OPENED_BY_SENDER,
            udp_start=words(
                f"ct original packets <= {packets}" if packets else "", NFT_OPENED_BY_SENDER
            ),
            udp_reply_start=f"ct reply packets <= {packets}" if packets else "",
            reply=NFT_REPLY,
        )

    def nft(self) -> str:
        """An ``nft -f`` script for one ``inet`` table (IPv4 and IPv6 together), replaced whole
        in one transaction: applying it twice leaves the same table."""
        greens = _nft_names(self.green_ifs)
        green = f"iifname {greens}"
        context = self.nft_context()
        limit = context.limit
        parts = [fragment.nft(context) for fragment in self.fragments]
        early = f"{green} tcp flags & (syn | ack) == ack {NFT_EARLY_PACKETS} {NFT_OPENED_BY_SENDER}"
        syn = [] if self.kernel else [f"{green} tcp flags & (syn | ack) == syn {limit}"]
        forward = [
            f"{green} meta l4proto udp {context.udp_start} {limit}",
            *syn,
            *[f"{early} {rule}" for part in parts for rule in part.early],
            *[f"{green} {rule}" for rule in _hooked(parts, "green", FORWARD)],
            *[f"iifname != {greens} oifname {greens} {rule}"
              for rule in _hooked(parts, "outside", FORWARD)],
        ]  # fmt: skip
        inbound = [
            *[f"{green} {rule}" for rule in _hooked(parts, "green", INPUT)],
            *[f"iifname != {_nft_names(self._green_and_lo())} {rule}"
              for rule in _hooked(parts, "outside", INPUT)],
        ]  # fmt: skip
        limited = []
        sets = []
        if self.per_source_limit:
            rate = f"limit rate over {self.per_source_limit}/second burst " \
                   f"{2 * self.per_source_limit} packets"  # fmt: skip
            mask = ":".join(["ffff"] * (IPV6_SOURCE_BITS // 16)) + "::"
            for name, kind, key in (("sources4", "ipv4_addr", "ip saddr"),
                                    ("sources6", "ipv6_addr", f"ip6 saddr & {mask}")):  # fmt: skip
                sets.append(f"  set {name} {{ type {kind}; size 65535; flags dynamic,timeout; "
                            "timeout 60s; }")  # fmt: skip
                limited.append(f"update @{name} {{ {key} {rate} }} counter drop")
        limited.append(_nft_queue(self.queue, self.bypass))
        kernel_sets, kernel_chains = self.kernel_parts() if self.kernel else ([], [])
        return _nft_table(
            [*sets, *kernel_sets],
            [
                (NFT_CHAIN_LIMIT, None, None, limited),
                ("forward", "forward", "mangle", forward),
                ("input", "input", "mangle", inbound),
                ("spoofed", "output", "raw", [f"meta mark {hex(SPOOF_MARK)} notrack"]),
                *kernel_chains,
            ],
        )

    def kernel_parts(self) -> tuple[list[str], list[tuple[str, str | None, str | None, list[str]]]]:
        """The sets and chains of kernel enforcement (``p2pwall.kernel.nftrules``)."""
        chains = nftrules.chains(_nft_names(self.green_ifs), self.lock_established)
        return nftrules.declarations(self.lock_seconds), [
            (name, hook, nftrules.CHAIN_PRIORITY if hook else None, rules)
            for name, hook, rules in chains
        ]

    def kernel_nft(self) -> str:
        """The kernel-enforcement table alone, next to iptables queue rules."""
        return _nft_table(*self.kernel_parts())

    @staticmethod
    def nft_delete() -> str:
        return f"table inet {NFT_TABLE}\ndelete table inet {NFT_TABLE}\n"


def _nft_table(sets: list[str], chains: list[tuple[str, str | None, str | None, list[str]]]) -> str:
    """Our ``inet`` table, replaced whole in one transaction (applying twice changes nothing)."""
    lines = [f"table inet {NFT_TABLE}", f"delete table inet {NFT_TABLE}",
             f"table inet {NFT_TABLE} {{", *sets]  # fmt: skip
    for name, hook, priority, rules in chains:
        lines.append(f"  chain {name} {{")
        if hook:
            lines.append(f"    type filter hook {hook} priority {priority}; policy accept;")
        lines += [f"    {rule}" for rule in rules]
        lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _hooked(parts: list[Rules], where: str, hook: str) -> list:
    """The fragments' rules (``Rules.green`` or ``Rules.outside``) for one hook, in order."""
    return [rule for part in parts for rule in getattr(part, where).get(hook, ())]


def _quietly(argv: list[str]) -> str:
    """A command whose failure (nothing to remove) is fine."""
    return f"{shell_words(argv)} 2>/dev/null || true"


def _new_or_flush(table: list[str], chain: str) -> str:
    create, flush = shell_words([*table, "-N", chain]), shell_words([*table, "-F", chain])
    return f"{create} 2>/dev/null || {flush}"


def _hook(table: list[str], builtin: str, add: list[str], chain: str) -> str:
    """Jump to ``chain`` unless a jump is there already."""
    check = shell_words([*table, "-C", builtin, "-j", chain])
    return f"{check} 2>/dev/null || {shell_words([*table, *add, '-j', chain])}"


def _unhook(table: list[str], builtin: str, chain: str) -> str:
    """Remove every jump to ``chain`` (older, non-idempotent versions could add several)."""
    return f"while {shell_words([*table, '-D', builtin, '-j', chain])} 2>/dev/null; do :; done"


def _ipset_create(name: str, kind: str, options: list[str]) -> str:
    """Create a set unless it is there with these options; there with others, made anew."""
    create = shell_words(["ipset", "create", name, kind, *options])
    return f"{shell_words(['ipset', 'create', '-exist', name, kind, *options])} 2>/dev/null || " \
           f"{{ {_quietly(['ipset', 'destroy', name])}; {create}; }}"  # fmt: skip


def _remove_ipset_enforcement(command: str) -> list[str]:
    """Quietly remove the chains of kernel enforcement by ipset, if any, when applying other
    rules (their sets go once both families' chains are gone: ``destroy_ipsets``)."""
    mangle = [command, "-t", TABLE]
    lines = [_unhook(mangle, "FORWARD", ipsetrules.CHAIN_KERNEL)]
    lines += [_quietly([*mangle, "-F", chain]) for chain in ipsetrules.chain_names()]
    return lines + [_quietly([*mangle, "-X", chain]) for chain in ipsetrules.chain_names()]


def destroy_ipsets() -> str:
    """Quietly destroy the sets of kernel enforcement by ipset (there may be none, or no
    ipset at all)."""
    names = " ".join(name for family in FAMILIES for name in ipsetrules.set_names(family))
    return f'for set in {names}; do ipset destroy "$set" 2>/dev/null || true; done'


def _remove_legacy(command: str) -> list[str]:
    filter_table = [command, "-t", "filter"]
    lines = [_unhook(filter_table, builtin, chain) for chain, builtin in HOOKS]
    lines += [_quietly([*filter_table, "-F", chain]) for chain in LEGACY_FILTER_CHAINS]
    return lines + [_quietly([*filter_table, "-X", chain]) for chain in LEGACY_FILTER_CHAINS]


def _nft_names(names: list[str] | tuple[str, ...]) -> str:
    quoted = [f'"{name}"' for name in names]
    return quoted[0] if len(quoted) == 1 else "{ " + ", ".join(quoted) + " }"


def _nft_queue(queue: int, bypass: bool) -> str:
    return f"queue num {queue}" + (" bypass" if bypass else "")


def per_second(text: str) -> int:
    """``--per-source-limit``: ``N`` or ``N/s`` packets per second; 0 disables."""
    number = text[:-2] if text.endswith("/s") else text
    if not number.isdigit() or not 0 <= int(number) <= MAX_PER_SOURCE_LIMIT:
        raise ValueError(f"--per-source-limit: want N or N/s, N from 0 to {MAX_PER_SOURCE_LIMIT}, "
                         f"not {text!r}")  # fmt: skip
    return int(number)


class Options(VersionOption, usage.Options):
    program = "p2pwall-rules"

    synopsis = "--green-if IFACE [--green-if IFACE...] [options]"
    longdesc = (
        "Print the firewall rules that queue packets to p2pwall (as shell commands for sh -e).\n\n"
        + FIREWALL_NOTE
        + "\n\n"
        + UDP_FLOW_NOTE
    )
    optParameters = [
        ["queue", "q", 0, "NFQUEUE number (the daemon's --queue).", int],
        ["format", "F", "iptables", "iptables (iptables + ip6tables commands) or nft."],
        ["udp-packets", None, 3, "Queue this many first packets of each UDP flow (0: all).", int],
        [
            "per-source-limit",
            None,
            str(DEFAULT_PER_SOURCE_LIMIT),
            "Drop a green source's flow starts above N/s (burst 2N); 0: no limit.",
        ],  # fmt: skip
        ["enforce", None, "queue", "queue (the daemon drops queued packets) or kernel (the "
         "kernel drops by p2pwall's nft sets, which the daemon fills; SYNs are not queued)."],
        ["lock-time", None, DEFAULT_LOCK_SECONDS, "With --enforce kernel: seconds a lock "
         "the kernel (re)starts lasts; the daemon's -t.", int],
        ["sets", None, None, "With --enforce kernel: nft (a table of p2pwall's, the default) "
         "or ipset (ipset sets and iptables chains, for iptables-legacy gateways; --format "
         "iptables only); the daemon's --sets."],
    ]  # fmt: skip
    optFlags = [
        ["no-bypass", None, "Drop instead of forwarding while no daemon reads the queue."],
        *[[name, None, text] for entry in REGISTRY for name, text in entry.rules.flags],
        [
            "lock-established",
            None,
            "With --enforce kernel: a locked client loses its "
            "established flows too (DNS excepted), not only new ones.",
        ],
        ["delete", None, "Print the commands that remove the rules instead."],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["green-if"] = []

    def opt_green_if(self, name: str) -> None:
        """A green (home) network interface; repeat it for several."""
        if not IFACE_NAME.fullmatch(name):
            raise usage.UsageError(f"--green-if: not an interface name: {name!r}")
        if name not in self["green-if"]:
            self["green-if"].append(name)

    opt_i = opt_green_if

    def postOptions(self) -> None:
        if not self["green-if"]:
            raise usage.UsageError("--green-if is required")
        if self["format"] not in ("iptables", "nft"):
            raise usage.UsageError("--format must be 'iptables' or 'nft'")
        if not 0 <= self["queue"] <= 65535:
            raise usage.UsageError("--queue must be between 0 and 65535")
        if not 0 <= self["udp-packets"] <= 1000:
            raise usage.UsageError("--udp-packets must be between 0 and 1000")
        try:
            self["per-source-limit"] = per_second(str(self["per-source-limit"]))
        except ValueError as error:
            raise usage.UsageError(str(error)) from None
        if self["enforce"] not in ENFORCE_MODES:
            raise usage.UsageError(f"--enforce must be one of {', '.join(ENFORCE_MODES)}")
        # The service passes the daemon's -t whatever the mode; 0 (no locks) is the queue's.
        low = 1 if self["enforce"] == "kernel" else 0
        if not low <= self["lock-time"] <= 86400 * 365:
            raise usage.UsageError(f"--lock-time must be between {low} and 31536000 seconds")
        if self["lock-established"] and self["enforce"] != "kernel":
            raise usage.UsageError("--lock-established needs --enforce kernel")
        if self["sets"] is not None and self["enforce"] != "kernel":
            raise usage.UsageError("--sets needs --enforce kernel")
        self["sets"] = self["sets"] or SET_KINDS[0]
        if self["sets"] not in SET_KINDS:
            raise usage.UsageError(f"--sets must be one of {', '.join(SET_KINDS)}")
        if self["sets"] == "ipset" and self["format"] == "nft":
            raise usage.UsageError(
                "--sets ipset goes with --format iptables (nft has its own sets)"
            )


def render(options: Options) -> str:
    rules = RuleSet(
        tuple(options["green-if"]),
        options["queue"],
        bypass=not options["no-bypass"],
        udp_packets=options["udp-packets"],
        per_source_limit=options["per-source-limit"],
        enforce=options["enforce"],
        lock_seconds=options["lock-time"],
        lock_established=options["lock-established"],
        sets=options["sets"],
        fragments=tuple(
            entry.rules(frozenset(name for name, _ in entry.rules.flags if options[name]))
            for entry in REGISTRY
        ),
    )
    if options["format"] == "nft":
        script = rules.nft_delete() if options["delete"] else rules.nft()
        return f"nft -f - <<'EOF'\n{script}EOF\n"
    lines = []
    for command in ("iptables", "ip6tables"):
        lines += rules.iptables_delete(command) if options["delete"] else rules.iptables(command)
    if options["delete"] or not rules.ipset:
        lines.append(destroy_ipsets())
    text = "\n".join(lines) + "\n"
    # With kernel enforcement by nft the sets live in an nft table next to the queue rules;
    # --delete removes it, and so does enforcement by ipset (quietly: there may be none, or no
    # nft at all).
    if options["delete"] or rules.ipset:
        text += _quietly(["nft", "delete", "table", "inet", NFT_TABLE]) + "\n"
    elif rules.kernel:
        text += f"nft -f - <<'EOF'\n{rules.kernel_nft()}EOF\n"
    return text


def main(argv: list[str] | None = None) -> int:
    options = Options()
    try:
        options.parseOptions(sys.argv[1:] if argv is None else argv)
    except usage.UsageError as error:
        print(f"p2pwall-rules: {error}\n{options}", file=sys.stderr)
        return 2
    sys.stdout.write(render(options))
    return 0
