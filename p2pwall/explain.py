"""``explain ADDR``: why a host is locked, and every block that covers an address.

One ``key=value`` line per fact, so a person reads it and a script splits it: the address
(green, the gateway's, or outside; allowed or not), a green host's lock with the evidence of its
first lock and of its latest renewal (the packet, when), its probes, then every block whose peer
is the address or that is scoped to it as a client (origin, port, the host that revealed it,
first and last seen). Times are ISO 8601 UTC. Blocks are found in a snapshot of the table, in
a worker thread (``blocks_lines``): a million blocks take a scan.
"""

from __future__ import annotations

from collections.abc import Collection

from .engine import Engine
from .packet import addr_text, endpoint_text, proto_name
from .store import Snapshot
from .tables import ANY_CLIENT, Block, CorroboratedBlock, Evidence
from .timefmt import iso, iso_or_dash


def address_line(engine: Engine, addr: bytes) -> str:
    """Where ``addr`` is, and whether an allowed network covers it."""
    if addr in engine.green:
        where = "green"
    elif addr in engine.local:
        where = "gateway"
    else:
        where = "outside"
    allowed = ",".join(str(network) for network in engine.allowed.covering(addr)) or "no"
    return f"address {addr_text(addr)} {where} allowed={allowed}"


def client_lines(engine: Engine, addr: bytes) -> tuple[str, list[str]]:
    """The lock state in a few words, and the lines about ``addr``'s lock (none if it has
    none)."""
    client = engine.clients.get(addr)
    if client is None:
        return "not locked", []
    now = engine.clock.seconds()
    state = "locked" if client.until > now else "expired"
    lines = [
        f"lock {state} until={iso(client.until)} left={max(0.0, client.until - now):.0f}"
        f" since={iso(client.since)}"
    ]
    for word, evidence in (("identified", client.identified), ("renewed", client.renewed)):
        if evidence is not None:
            lines.append(f"{word} {evidence_text(addr, evidence)}")
    lines.append(
        f"probes sent={client.probes_sent} answered={client.probes_answered}"
        f" last={iso_or_dash(client.last_probe)}"
    )
    return f"{state} until {iso(client.until)}", lines


def evidence_text(addr: bytes, evidence: Evidence) -> str:
    when, protocol, reason, proto, sport, peer, port = evidence
    text = f'at={iso(when)} protocol={protocol} reason="{reason}"'
    if peer:
        packet = f"{proto_name(proto)} {endpoint_text(addr, sport)} -> {endpoint_text(peer, port)}"
        text += f' packet="{packet}"'
    return text


def blocks_lines(snapshot: Snapshot, addr: bytes, revealed: Collection[str]) -> list[str]:
    """One line per block of ``addr`` as a peer or as the client it is scoped to; blocks of
    the ``revealed`` origins (learned from green hosts' traffic) name who revealed them. Safe
    in a thread: it reads only the snapshot's blocks."""
    lines = []
    keys, blocks = snapshot
    for (peer, port, client), block in zip(keys, blocks, strict=True):
        if peer == addr or client == addr:
            lines.append(block_line(peer, port, client, block, block.origin in revealed))
    return lines


def block_line(peer: bytes, port: int, client: bytes, block: Block, revealed: bool) -> str:
    scope = addr_text(client) if client != ANY_CLIENT else "*"
    line = f"block {endpoint_text(peer, port)} client={scope} origin={block.origin}"
    if revealed:
        line += f" revealed-by={revealers(client, block)}"
    if block.name:
        line += f" name={block.name}"
    return f"{line} first-seen={iso(block.first)} last-seen={iso(block.seen)}"


def revealers(client: bytes, block: Block) -> str:
    """Who revealed a learned block: its client, the two hosts of a block for every host, or
    ``unknown`` for a block for every host read from the store file (which keeps no
    revealers)."""
    if client != ANY_CLIENT:
        return addr_text(client)
    if isinstance(block, CorroboratedBlock):
        return ",".join(addr_text(host) for host in block.by)
    return "unknown"
