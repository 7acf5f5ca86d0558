"""Kernel enforcement on iptables-legacy gateways: ipset sets and the iptables chains that drop
by them (``p2pwall-rules --enforce kernel --sets ipset``), doing what ``nftrules``' chains do.

Our chain ``p2pwall-kern`` is inserted first into mangle FORWARD (nft's table runs before
iptables' mangle chains, so this is where it stands there too), ahead of the queue rules. It
lets allowed networks through untouched and sends a green host's TCP and UDP to
``p2pwall-kgreen``, traffic to green to ``p2pwall-kto``. Chains are entered with ``-g``: an
action chain's ``RETURN`` (UDP to a block whose origin lets UDP pass) leaves p2pwall-kern
altogether, as nft's ``accept`` leaves its table, and the packet goes on to the queue rules.
Our chains never ``ACCEPT``: that would skip the queue rules and the admin's mangle rules.

Actions are one set per shape and action (6 × 4 per family), not one set per shape carrying
the action in the skbinfo extension: ``--map-set ... --map-mark`` writes the packet's mark,
which a UDP packet that passes would carry on (an admin's policy routing reads it). So that a
new flow that matches no block (nearly all) costs 4 look-ups, not 24, each shape also has a set
of every block of it whatever its action, which one rule tests first: measured in a namespace
(UDP packets through such rules in mangle OUTPUT, best of 7 runs of 200,000), 24 look-ups
added 3.1 µs a packet with iptables-legacy, the 4 of that rule 0.8 µs. It costs each block a
second element, which the daemon writes before the action's and removes after it.

ipset ports carry a protocol (``tcp:1214``): a block stands for both, the daemon writes both.
A block for one client on every port (``peer_client``) would want ``hash:net,net``, which
kernels need not have (``CONFIG_IP_SET_HASH_NETNET``; the lab's has not): it is a
``hash:ip,port,ip`` holding the port range 0-65535 of both protocols instead, which the kernel
expands (about 4.5 MB per IPv4 block; only the control port's ``block PEER for CLIENT`` makes
them).

MAC-bound locks would want ``hash:ip,mac``, as rare, so the kernel does not lock by itself here:
a lock from the packet path would lock the source address of a forgery. A locking block's chain
hands the daemon up to ``TRY_RATE`` of a sender's tries a second (a queue without bypass: while
no daemon reads it they are dropped), and drops the rest; the daemon locks the sender only when
its MAC owns the address, as in the queue's enforcement, and writes the lock into the sets. A
locked BitTorrent client's new UDP flows go on to the queue rules at the same rate per sender
(the daemon reads its DHT queries, as with nft sets); the rest are dropped.
"""

from __future__ import annotations

from ..networks import IPV6_SOURCE_BITS
from .elements import ACTIONS, SHAPES
from .nftrules import ALLOWED, DNS_PORT, LOCK_SET_SIZE, LOCKED, LOCKED_FLOWS, SAMPLE_RATE

# What a sender's tries at locking peers, and a locked sender's new UDP flows, pass to the
# daemon a second (the rest the kernel drops).
TRY_RATE = SAMPLE_RATE

PREFIX = "p2pwall-"
# Chain names hold at most 28 characters, set names 31: short codes for shapes and actions.
SHAPE_CODES = {"peer_port_client": "ppc", "peer_port": "pp", "peer_client": "pc", "peer": "p"}
ACTION_CODES = {
    "block": "block",
    "block_udp_passes": "block-up",
    "lock": "lock",
    "lock_udp_passes": "lock-up",
    "lock_flows": "flows",
    "lock_flows_udp_passes": "flows-up",
}
SET_TYPES = {
    "peer_port_client": "hash:ip,port,ip",
    "peer_port": "hash:ip,port",
    "peer_client": "hash:ip,port,ip",
    "peer": "hash:ip",
}
# Which of the packet's fields each dimension is looked up by.
DIMENSIONS = {
    "peer_port_client": "dst,dst,src",
    "peer_port": "dst,dst",
    "peer_client": "dst,dst,src",
    "peer": "dst",
}
# The most elements a block set holds: two per block with a port (one per protocol), 1 << 24
# lets the daemon's --max-peers (1,000,000) live in one set many times over.
BLOCK_SET_SIZE = 1 << 24
IPSET_FAMILIES = {4: "inet", 6: "inet6"}
CHAIN_KERNEL = "p2pwall-kern"
CHAIN_GREEN = "p2pwall-kgreen"
CHAIN_NEW = "p2pwall-knew"
CHAIN_TO_GREEN = "p2pwall-kto"
CHAIN_LOCKED = "p2pwall-klocked"


def block_set(shape: str, action: str, family: int) -> str:
    return f"{PREFIX}{SHAPE_CODES[shape]}-{ACTION_CODES[action]}{family}"


def lock_set(name: str, family: int) -> str:
    """``name``: ``nftrules.LOCKED`` or ``LOCKED_FLOWS``."""
    return f"{PREFIX}{name}{family}"


def allowed_set(family: int) -> str:
    return f"{PREFIX}{ALLOWED}{family}"


def shape_set(shape: str, family: int) -> str:
    """The set of every block of ``shape``, whatever its action."""
    return f"{PREFIX}{SHAPE_CODES[shape]}{family}"


def action_chain_name(action: str) -> str:
    return f"{PREFIX}k{ACTION_CODES[action]}"


def sets(family: int, lock_seconds: int) -> list[tuple[str, str, list[str]]]:
    """(name, type, create options) of every set of one family."""
    base = ["family", IPSET_FAMILIES[family]]
    lock = [*base, "timeout", str(lock_seconds), "maxelem", str(LOCK_SET_SIZE)]
    found = [(lock_set(name, family), "hash:ip", lock) for name in (LOCKED, LOCKED_FLOWS)]
    found.append((allowed_set(family), "hash:net", base))
    blocks = [*base, "maxelem", str(BLOCK_SET_SIZE)]
    for shape in SHAPES.values():
        found.append((shape_set(shape, family), SET_TYPES[shape], blocks))
        found += [
            (block_set(shape, action, family), SET_TYPES[shape], blocks) for action in ACTIONS
        ]
    return found


def set_names(family: int) -> list[str]:
    return [name for name, _, _ in sets(family, 1)]


def chain_names() -> list[str]:
    return [CHAIN_KERNEL, CHAIN_GREEN, CHAIN_NEW, CHAIN_LOCKED, CHAIN_TO_GREEN,
            *[action_chain_name(action) for action in ACTIONS]]  # fmt: skip


def _match(name: str, dimensions: str, negate: bool = False) -> list[str]:
    return ["-m", "set", *(["!"] if negate else []), "--match-set", name, dimensions]


def _per_sender(limit: str, name: str, family: int) -> list[str]:
    """``limit`` (``--hashlimit-upto`` or ``-above``) ``TRY_RATE`` a second for each sender."""
    mask = ["--hashlimit-srcmask", str(IPV6_SOURCE_BITS)] if family == 6 else []
    name = f"{PREFIX}{name}{family}"
    return ["-m", "hashlimit", limit, f"{TRY_RATE}/sec", "--hashlimit-burst", str(TRY_RATE),
            "--hashlimit-mode", "srcip", *mask, "--hashlimit-name", name]  # fmt: skip


def action_rules(action: str, family: int, queue: int) -> list[list[str]]:
    """The rules of one action's chain: ``nftrules.action_chain``'s, but a lock comes from the
    daemon, which checks the sender's MAC: its tries go to ``queue``, sampled."""
    rules = []
    if action.endswith("_udp_passes"):
        # The queue rules hand the daemon UDP flow starts anyway: it locks from those.
        rules.append(["-p", "udp", "-j", "RETURN"])
    if action.startswith("lock"):
        rules.append([*_per_sender("--hashlimit-upto", "try", family),
                      "-j", "NFQUEUE", "--queue-num", str(queue)])  # fmt: skip
    return [*rules, ["-j", "DROP"]]


def chains(
    green_ifs: tuple[str, ...], family: int, queue: int, lock_established: bool
) -> dict[str, list[list[str]]]:
    """The rules (what follows ``-A CHAIN``) of each of our chains for one family."""
    allowed = allowed_set(family)
    locked, flows = lock_set(LOCKED, family), lock_set(LOCKED_FLOWS, family)
    dns = str(DNS_PORT)
    kernel = [[*_match(allowed, "src"), "-j", "RETURN"], [*_match(allowed, "dst"), "-j", "RETURN"]]
    kernel += [["-i", green, "-p", proto, "-g", CHAIN_GREEN]
               for green in green_ifs for proto in ("tcp", "udp")]  # fmt: skip
    kernel += [["-o", green, "-p", proto, "-g", CHAIN_TO_GREEN]
               for green in green_ifs for proto in ("tcp", "udp")]  # fmt: skip
    new = ["-m", "conntrack", "--ctstate", "NEW"]
    from_green = [[*new, "-g", CHAIN_NEW]]
    # A flow to no learned peer goes straight to the lock checks (4 look-ups, not 24).
    unknown = []
    for shape in SHAPES.values():
        unknown += _match(shape_set(shape, family), DIMENSIONS[shape], negate=True)
    new_from_green = [[*unknown, "-g", CHAIN_LOCKED]]
    new_from_green += [
        [*_match(block_set(shape, action, family), DIMENSIONS[shape]),
         "-g", action_chain_name(action)]
        for shape in SHAPES.values()
        for action in ACTIONS
    ]  # fmt: skip
    new_from_green.append(["-g", CHAIN_LOCKED])
    locked_senders = [
        ["-p", "tcp", *_match(locked, "src"), "-j", "DROP"],
        ["-p", "udp", "!", "--dport", dns, *_match(flows, "src"),
         *_per_sender("--hashlimit-above", "flows", family), "-j", "DROP"],
    ]  # fmt: skip
    # Peers that know a locked BitTorrent client connect to it; they get nowhere either.
    to_green = [[*new, *_match(flows, "dst"), "-j", "DROP"]]
    if lock_established:
        from_green += [
            ["-p", "tcp", "!", "--dport", dns, *_match(locked, "src"), "-j", "DROP"],
            ["-p", "udp", "!", "--dport", dns, *_match(flows, "src"), "-j", "DROP"],
        ]
        to_green += [
            ["-p", "tcp", "!", "--sport", dns, *_match(locked, "dst"), "-j", "DROP"],
            ["-p", "udp", "!", "--sport", dns, *_match(flows, "dst"), "-j", "DROP"],
        ]
    found = {CHAIN_KERNEL: kernel, CHAIN_GREEN: from_green, CHAIN_NEW: new_from_green,
             CHAIN_LOCKED: locked_senders, CHAIN_TO_GREEN: to_green}  # fmt: skip
    for action in ACTIONS:
        found[action_chain_name(action)] = action_rules(action, family, queue)
    return found


def family_of_command(command: str) -> int:
    """The address family of an iptables command (``ip6tables``, ``ip6tables-legacy``: 6)."""
    return 6 if command.startswith("ip6") else 4
