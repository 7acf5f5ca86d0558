"""The nft table that enforces in the kernel (``p2pwall-rules --enforce kernel``).

Its forward chain runs just before the queue rules (priority mangle - 10, before iptables'
mangle chains and p2pwall's own at mangle): a green host's new TCP connection or UDP flow to
a learned peer meets the set of that peer's shape (``elements.SHAPES``) and goes to its
action's chain, which drops it and, for a locking origin, (re)starts the sender's lock in the
dynamic ``locked`` set (``locked_flows`` too for a lock that covers UDP, BitTorrent's). A
locked client's new TCP connections, and new UDP flows (DNS excepted) where its lock covers
them, are dropped (but ``SAMPLE_RATE`` a second of the UDP, which goes on to the daemon), as
are new flows from outside to it (peers that know it from the swarm); with
``lock_established`` its established flows too. Allowed networks skip it all. The daemon
fills the sets (``nftsets``); they hold nothing of the admin's, and dropping is all they do.

A lock is bound to the MAC address that sent the evidence, as the daemon's own locks are
(``Engine.evidence``): on an Ethernet link the lock sets hold address and MAC, so a green host
that forges another's address locks only its own forgeries, never that host. The ``_ip``
sets hold bare addresses: locks on links without MACs (a VPN's tunnel, whose peers cannot
forge), and every lock the daemon holds (it checked the MAC against the neighbour table),
which is what traffic coming in is matched against.
"""

from __future__ import annotations

from .elements import ACTIONS, FAMILIES, SHAPES

CHAIN_PRIORITY = "mangle - 10"
LOCKED = "locked"
LOCKED_FLOWS = "locked_flows"
# The bare-address twin of each lock set.
IP = "_ip"
LOCK_SETS = (LOCKED, LOCKED_FLOWS)
ALLOWED = "allowed"
# A locked BitTorrent client's new UDP flows go on to the queue up to this many a second (the
# rest the kernel drops): the daemon still reads its DHT queries, which give its DHT port for
# the probe and restart its lock, as the queue's engine does before it drops them.
SAMPLED = "sampled"
SAMPLE_RATE = 10
# The most clients the dynamic lock sets hold (the daemon's --max-clients default).
LOCK_SET_SIZE = 65536
DNS_PORT = 53
_KEYS = {4: ("ip", "ipv4_addr"), 6: ("ip6", "ipv6_addr")}
_SHAPE_KEYS = {
    "peer_port_client": ("daddr", "port", "saddr"),
    "peer_port": ("daddr", "port"),
    "peer_client": ("daddr", "saddr"),
    "peer": ("daddr",),
}


def _key(family: int, parts: tuple[str, ...]) -> tuple[str, str]:
    """The match expression and the set type of one shape's key."""
    match, kind = _KEYS[family]
    exprs = {"daddr": f"{match} daddr", "saddr": f"{match} saddr", "port": "th dport"}
    kinds = {"daddr": kind, "saddr": kind, "port": "inet_service"}
    return " . ".join(exprs[p] for p in parts), " . ".join(kinds[p] for p in parts)


def declarations(lock_seconds: int) -> list[str]:
    """The sets and maps, for both address families."""
    lines = []
    for family in FAMILIES:
        kind = _KEYS[family][1]
        for name in LOCK_SETS:
            for suffix, key in (("", f"{kind} . ether_addr"), (IP, kind)):
                lines.append(f"  set {name}{suffix}{family} {{ type {key}; size {LOCK_SET_SIZE}; "
                             f"flags dynamic,timeout; timeout {lock_seconds}s; }}")  # fmt: skip
        lines.append(f"  set {ALLOWED}{family} {{ type {kind}; flags interval; }}")
        lines.append(f"  set {SAMPLED}{family} {{ type {kind}; size {LOCK_SET_SIZE}; "
                     "flags dynamic,timeout; timeout 60s; }")  # fmt: skip
        for shape in SHAPES.values():
            _, key_type = _key(family, _SHAPE_KEYS[shape])
            lines.append(f"  map {shape}{family} {{ type {key_type} : verdict; }}")
    return lines


def _sender(family: int, suffix: str) -> str:
    """The key a lock set of ``suffix`` ("" or ``IP``) has for the packet's sender."""
    match = _KEYS[family][0]
    return f"{match} saddr . ether saddr" if suffix == "" else f"{match} saddr"


# Which lock sets a packet's sender is looked up in: by address and MAC on Ethernet, by
# address alone elsewhere.
_LINKS = (("", "meta iiftype ether"), (IP, "meta iiftype != ether"))


def _update(set_name: str, family: int, only_members: bool = False) -> list[str]:
    """(Re)start the sender's lock in ``set_name``; ``only_members``: only if it is in it."""
    rules = []
    for suffix, link in _LINKS:
        key, name = _sender(family, suffix), f"{set_name}{suffix}{family}"
        member = f"{key} @{name} " if only_members else ""
        rules.append(f"meta nfproto ipv{family} {link} {member}update @{name} {{ {key} }}")
    return rules


def action_chain(action: str) -> list[str]:
    """The rules of one action's chain (``elements.ACTIONS``)."""
    rules = []
    if action.startswith("lock"):
        flows = action.startswith("lock_flows")
        for family in FAMILIES:
            rules += _update(LOCKED, family)
            # A client whose lock covers UDP keeps that, whatever peer it tries.
            rules += _update(LOCKED_FLOWS, family, only_members=not flows)
    if action.endswith("_udp_passes"):
        rules.append("meta l4proto udp accept")
    # The counters show an admin what the kernel dropped (``nft list table inet p2pwall``).
    return [*rules, "counter drop"]


def _locked_senders(family: int, tcp: str, udp: str, sample: bool = False) -> list[str]:
    """Drop what a locked sender sends: ``tcp``/``udp`` say which packets of each protocol.
    ``sample``: ``SAMPLE_RATE`` of the UDP a second per sender goes on to the queue."""
    rules = []
    match = _KEYS[family][0]
    over = (f"update @{SAMPLED}{family} {{ {match} saddr limit rate over {SAMPLE_RATE}/second }} "
            if sample else "")  # fmt: skip
    for suffix, link in _LINKS:
        only = f"{link} " if suffix else ""
        key = _sender(family, suffix)
        flows = f"{only}{key} @{LOCKED_FLOWS}{suffix}{family}"
        rules += [f"{only}{key} @{LOCKED}{suffix}{family} {tcp} counter drop",
                  f"{flows} {udp} {over}counter drop"]  # fmt: skip
    return rules


def chains(green: str, lock_established: bool) -> list[tuple[str, str | None, list[str]]]:
    """(name, hook or None, rules) of each chain; ``green`` the nft interface-name match."""
    enforce, new_from_green, to_green = [], [], []
    for family in FAMILIES:
        match = _KEYS[family][0]
        enforce += [f"{match} saddr @{ALLOWED}{family} accept",
                    f"{match} daddr @{ALLOWED}{family} accept"]  # fmt: skip
    enforce += [f"iifname {green} meta l4proto {{ tcp, udp }} jump from_green",
                f"iifname != {green} oifname {green} meta l4proto {{ tcp, udp }} "
                "jump to_green"]  # fmt: skip
    from_green = ["ct state new jump new_from_green"]
    for family in FAMILIES:
        for shape in SHAPES.values():
            expr, _ = _key(family, _SHAPE_KEYS[shape])
            new_from_green.append(f"{expr} vmap @{shape}{family}")
    for family in FAMILIES:
        match = _KEYS[family][0]
        new_from_green += _locked_senders(
            family, "meta l4proto tcp", f"udp dport != {DNS_PORT}", sample=True
        )
        # Peers that know a locked BitTorrent client connect to it; they get nowhere either.
        to_green.append(f"ct state new {match} daddr @{LOCKED_FLOWS}{IP}{family} counter drop")
        if lock_established:
            from_green += _locked_senders(
                family,
                f"ct state != new tcp dport != {DNS_PORT}",
                f"ct state != new udp dport != {DNS_PORT}",
            )
            to_green += [
                f"{match} daddr @{LOCKED}{IP}{family} tcp sport != {DNS_PORT} counter drop",
                f"{match} daddr @{LOCKED_FLOWS}{IP}{family} udp sport != {DNS_PORT} counter drop",
            ]
    return [
        ("enforce", "forward", enforce),
        ("from_green", None, from_green),
        ("new_from_green", None, new_from_green),
        ("to_green", None, to_green),
        *[(action, None, action_chain(action)) for action in ACTIONS],
    ]
