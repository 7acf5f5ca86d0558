"""The policy: one decoded packet in, one verdict out, plus the actions it implies.

Pure: the clock is injected and every effect goes through a collaborator (spoofer, event sink,
client observers), so the whole of ftwall's behaviour runs under ``task.Clock`` in tests.

For each packet, the detectors that want its protocol and hook are asked in registry order
(``p2pwall.registry``); the first verdict wins. Then the generic rules apply to forwarded
traffic: UDP or a TCP SYN to a blocked peer is dropped (a peer of a locking origin also
(re)starts the sender's time lock), every TCP SYN from a locked client is dropped, and so is
every new UDP flow (DNS excepted) of a client locked for a protocol that runs over UDP.
Everything else is accepted. The engine names no protocol: origins (``origins.Origin``) and
probes (``IProbe``) come from the detectors, which act through ``IEngine`` alone.

Evidence is scoped to the host that gave it (``learn_from``): a peer one green host revealed is
blocked for that host only, becomes a block for every host only when a second host (another
address, another MAC) reveals the same endpoint on a port that is no well-known service, and a
packet whose MAC does not own its source address (``INeighbours``) teaches nothing and locks
nobody. So no green host can turn the daemon against the others.

Allowed networks (``AllowList``, ``--allow``) are outside all of this: a packet from or to one is
accepted untouched. In dry-run mode the engine decides, learns and locks as usual, counts and
logs the drops it would have made (``would drop``), but accepts every packet and sends no forged
pong or probe (those would change what clients do); accept-all mode, by contrast, decides
nothing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from .allow import AllowList
from .interfaces import (
    IClientObserver,
    IDetector,
    IEngine,
    IEventSink,
    INeighbours,
    IProbe,
    ISpoofer,
)
from .networks import GreenNetworks, Network
from .origins import FIRST_UNPRIVILEGED_PORT, MANUAL_NAME, Origin, Origins, Protocol
from .packet import (
    ACCEPT,
    DROP,
    FORWARD,
    TCP,
    TCP_ACK,
    TCP_SYN,
    UDP,
    Packet,
    Verdict,
    addr_text,
    endpoint_text,
    mac_text,
)
from .tables import ANY_CLIENT, BlockTable, Client, LockTable, Revealers

# Stats keys of the verdicts, by verdict and transport; dry-run drops are counted apart.
_VERDICT_KEYS = ("accept_udp", "accept_tcp", "drop_udp", "drop_tcp")
_DRY_RUN_KEYS = ("would_drop_udp", "would_drop_tcp")

_SYN_ACK = TCP_SYN | TCP_ACK
# The protocol named for a lock the kernel made by itself: it does not say which.
KERNEL_LOCK = "kernel"
# A lock that covers new UDP flows still lets the client resolve names.
DNS_PORT = 53
HOOK_NUMBERS = 256
# Most heap entries one tick looks at (expiries, probes, re-schedules): a few ms at most.
TICK_ACTIONS = 200


@implementer(IEngine)
class Engine:
    """ftwall's rules over the block and lock tables."""

    def __init__(
        self,
        clock: IReactorTime,
        blocks: BlockTable,
        clients: LockTable,
        green: GreenNetworks,
        detectors: Sequence[IDetector],
        spoofer: ISpoofer,
        events: IEventSink,
        accept_all: bool = False,
        max_spoofs: int = 200,
        neighbours: INeighbours | None = None,
        max_probes: int = 100,
        allowed: AllowList | None = None,
        dry_run: bool = False,
    ) -> None:
        """``neighbours``: checks a packet's MAC against its source address (``None``: no
        check, for tests that do not care); ``max_probes``: probes sent per second at most;
        ``allowed``: networks never locked or blocked; ``dry_run``: drop nothing, say what
        would have been dropped."""
        self.clock = clock
        self.blocks = blocks
        self.clients = clients
        self.green = green
        # The gateway's own addresses (``localaddrs``), kept fresh by a timer in service.py.
        self.local: frozenset[bytes] = frozenset()
        # Indexes of the green interfaces (``--green-if``), kept fresh by service.py: a DNS
        # answer that comes in on one of them was sent by a green host and teaches nothing.
        self.green_ifindexes: frozenset[int] = frozenset()
        self.detectors = tuple(detectors)
        self.origins = Origins(origin for d in self.detectors for origin in d.origins)
        # protocol -> hook -> the detectors that want those packets, in order: two look-ups
        # per packet (about 20 ns), however many detectors there are. Every hook number a
        # queue message can carry (one byte) has its entry.
        self._dispatch = {
            proto: [
                tuple((d.name, d.inspect) for d in self.detectors if (proto, hook) in d.wants)
                for hook in range(HOOK_NUMBERS)
            ]
            for proto in (UDP, TCP)
        }
        self.spoofer = spoofer
        self.events = events
        self.accept_all = accept_all
        self.dry_run = dry_run
        self.allowed = allowed if allowed is not None else AllowList()
        self.max_spoofs = max_spoofs
        self._spoof_second = -1.0
        self._spoofs_this_second = 0
        self.neighbours = neighbours
        self.revealers = Revealers(blocks.cap)
        self.max_probes = max_probes
        self._probe_second = -1.0
        self._probes_this_second = 0
        self.observers: list[IClientObserver] = []
        self.stats: Counter[str] = Counter()
        # Verdicts (the ``stats`` key) by reason: detector names, "blocked peer (origin)", "time
        # lock", "allowed"... a bounded set. Accepts by no rule are not counted here.
        self.reasons: Counter[tuple[str, str]] = Counter()
        clients.on_evict = self._evicted

    @property
    def packets(self) -> int:
        """Packets decided so far (derived, so the hot path counts once per packet)."""
        stats = self.stats
        return sum(stats[key] for key in _VERDICT_KEYS + _DRY_RUN_KEYS)

    def verdict(self, packet: Packet, hook: int) -> Verdict:
        """Decide one packet's fate; the hot path."""
        if self.accept_all:
            self.stats["accept_all"] += 1
            return ACCEPT
        allowed = self.allowed.lookup
        if allowed is not None and (packet.src in allowed or packet.dst in allowed):
            return self._count(packet, ACCEPT, "allowed")
        for name, inspect in self._dispatch[packet.proto][hook]:
            verdict = inspect(packet, hook, self)
            if verdict is not None:
                return self._count(packet, verdict, name)
        udp = packet.proto == UDP
        if hook == FORWARD and (udp or packet.flags & _SYN_ACK == TCP_SYN):
            now = self.clock.seconds()
            block = self.blocks.match(packet.dst, packet.dport, packet.src, now)
            if block is not None:
                origins = self.origins
                origin = origins.locking.get(block.origin)
                if origin is not None:
                    self.lock(packet.src, origin.lock_reason, packet, origin.protocol)
                if udp and block.origin in origins.udp_passes:
                    return self._count(packet, ACCEPT, f"blocked peer ({block.origin}), UDP passes")
                return self._count(packet, DROP, f"blocked peer ({block.origin})")
            client = self.clients.get(packet.src)
            if (
                client is not None
                and client.until > now
                and (not udp or (client.locks_udp and packet.dport != DNS_PORT))
            ):
                return self._count(packet, DROP, "time lock")
        return self._count(packet, ACCEPT, "")

    def _count(self, packet: Packet, verdict: Verdict, reason: str) -> Verdict:
        udp = packet.proto == UDP
        if verdict is DROP:
            if self.dry_run:
                key = "would_drop_udp" if udp else "would_drop_tcp"
                self.stats[key] += 1
                self.reasons[key, reason] += 1
                self.events.packet("u" if udp else "t", packet, reason, verdict="would drop")
                return ACCEPT
            key = "drop_udp" if udp else "drop_tcp"
            self.stats[key] += 1
            self.reasons[key, reason] += 1
            self.events.packet("u" if udp else "t", packet, reason)
            return verdict
        key = "accept_udp" if udp else "accept_tcp"
        self.stats[key] += 1
        if reason:  # the common accept, by no rule, is the total less these: not counted twice
            self.reasons[key, reason] += 1
        cls = "U" if udp else "T"
        if self.events.wants(cls):
            self.events.packet(cls, packet, reason or "no rule")
        return verdict

    # Actions: what detectors and the control port use to change state.

    def learn(
        self,
        peer: bytes,
        port: int,
        client: bytes,
        origin: str,
        seen_from: bytes | None = None,
        name: str | None = None,
        by: tuple[bytes, bytes] | None = None,
    ) -> bool:
        """Block a peer learned from traffic; green addresses, the gateway's own and allowed
        ones are never blocked. ``by``: the two hosts that revealed a block for every host."""
        if peer in self.green or peer in self.local or peer in self.allowed:
            return False
        new = self.blocks.add(peer, port, client, origin, self.clock.seconds(), name, by)
        if new:
            self.stats["peers_learned"] += 1
            self.events.event(
                "p",
                "peer {peer} learned ({origin}{_name}){_from}",
                peer=endpoint_text(peer, port),
                origin=origin,
                _name=f": {name}" if name else "",
                _from=f" from client {addr_text(seen_from)}" if seen_from else "",
                # The same, structured, for JSON readers (``_`` fields are the text's pieces).
                peer_addr=addr_text(peer),
                peer_port=port or None,
                blocked_for=addr_text(client) if client else "every host",
                revealed_by=addr_text(seen_from) if seen_from else None,
                dns_name=name,
            )
        return new

    def count(self, key: str, n: int = 1) -> None:
        self.stats[key] += n

    def evidence(self, packet: Packet) -> bool:
        """Whether ``packet`` speaks for its source address: its MAC is the one the gateway's
        neighbour table holds for it. A forged packet is counted and teaches nothing."""
        if self.neighbours is None or self.neighbours.verified(packet.src, packet.mac):
            return True
        self.stats["forged_source"] += 1
        self.events.debug(
            "t",
            "packet from {src} with MAC {mac}, not the address's own: ignored as evidence",
            src=addr_text(packet.src),
            mac=mac_text(packet.mac) if packet.mac else "none",
        )
        return False

    def learn_from(
        self, packet: Packet, peer: bytes, port: int, origin: Origin, name: str | None = None
    ) -> bool:
        """Block ``peer:port`` for the host that sent ``packet``, which revealed it; for every
        host once a second host reveals it too (on a port that is no well-known service).

        Learned endpoints always carry their port: no host's word blocks a whole address, and
        only ports the origin may learn (``Origin.learnable``) are learned. False when nothing
        new was learned (a forged packet, no port, a green peer...)."""
        if not port or not origin.learnable(port) or not self.evidence(packet):
            return False
        client = packet.src
        new = self.learn(peer, port, client, origin.name, client, name)
        if port < FIRST_UNPRIVILEGED_PORT:
            return new
        first = self.revealers.corroborated(peer, port, client, packet.mac)
        if first is not None and self.learn(
            peer, port, ANY_CLIENT, origin.name, name=name, by=(first, client)
        ):
            self.events.event(
                "p",
                "peer {peer} blocked for every host: revealed by a second host, {revealed_by}",
                peer=endpoint_text(peer, port),
                revealed_by=addr_text(client),
                peer_addr=addr_text(peer),
                peer_port=port,
                origin=origin.name,
                blocked_for="every host",
            )
        return new

    def learn_for(self, client: bytes, peer: bytes, port: int, origin: Origin) -> bool:
        """Block ``peer:port`` for ``client`` alone: a peer named by a reply the client
        received from an untrusted host (a tracker, a DHT node). Never for every host, however
        many clients hear of it (one outside host can answer them all), and only on ports the
        origin may learn; the reply must come to a green client from outside (the caller's
        check)."""
        if not port or not origin.learnable(port) or client not in self.green:
            return False
        return self.learn(peer, port, client, origin.name, seen_from=client)

    def block(self, peer: bytes, port: int = 0, client: bytes = ANY_CLIENT) -> bool:
        """An admin's block: kept until unblocked, never evicted or aged out."""
        return self.blocks.add(peer, port, client, MANUAL_NAME, self.clock.seconds())

    def unblock(self, peer: bytes, port: int = 0, client: bytes = ANY_CLIENT) -> bool:
        return self.blocks.remove(peer, port, client)

    def lock(
        self,
        addr: bytes,
        reason: str,
        packet: Packet | None = None,
        protocol: Protocol | None = None,
    ) -> Client | None:
        """(Re)start a client's time lock; the first lock identifies it as a P2P client.

        ``packet``, the evidence, must come from ``addr`` itself (``evidence``); a lock from
        the control port or a timer passes none. The evidence is kept on the client for
        ``explain`` (the first and the latest); ``protocol`` is the P2P protocol it was seen
        speaking (``None``: the admin's lock), and says what the lock covers."""
        if packet is not None and not self.evidence(packet):
            return None
        now = self.clock.seconds()
        client, new = self.clients.lock(addr, now)
        if client is None:
            return None
        name = protocol.name if protocol is not None else "manual"
        if protocol is not None:
            client.protocols.add(name)
            client.locks_udp = client.locks_udp or protocol.locks_udp
        client.renewed = (
            (now, name, reason, packet.proto, packet.sport, packet.dst, packet.dport)
            if packet is not None
            else (now, name, reason, 0, 0, b"", 0)
        )
        if packet is not None and packet.mac is not None:
            client.mac = packet.mac
        if new:
            self._identified(client, reason, packet)
        return client

    def owns(self, addr: bytes, mac: bytes | None) -> bool:
        """Whether ``mac`` owns ``addr`` (``evidence`` for what has no packet: a lock the
        kernel bound to a MAC); counted when not."""
        if self.neighbours is None or self.neighbours.verified(addr, mac):
            return True
        self.stats["kernel_forged_locks"] += 1
        return False

    def kernel_locked(self, addr: bytes, until: float, udp: bool, mac: bytes | None) -> bool:
        """The kernel (re)locked ``addr`` until ``until`` by itself (``--enforce kernel``: it
        tried a learned peer, a packet the daemon never saw): mirror it, so probes and
        ``explain`` know. ``udp``: the kernel's lock covers its new UDP flows too; ``mac``:
        the MAC the lock is bound to, which the caller checked (``owns``). Whether it was
        mirrored."""
        now = self.clock.seconds()
        client, new = self.clients.extend(addr, until, now)
        if client is None:
            return False
        client.locks_udp = client.locks_udp or udp
        client.mac = mac or client.mac
        if new:
            reason = "tried a learned peer (locked by the kernel)"
            client.renewed = (now, KERNEL_LOCK, reason, 0, 0, b"", 0)
            self._identified(client, reason, None)
        return True

    def _identified(self, client: Client, reason: str, packet: Packet | None) -> None:
        """A green host's first lock: it is a P2P client."""
        client.identified = client.renewed
        self.stats["clients_locked"] += 1
        addr = client.addr
        mac = packet.mac if packet is not None else None
        self.events.event(
            "c",
            "client {client} identified: {reason}{_mac}",
            client=addr_text(addr),
            reason=reason,
            _mac=f" mac={mac_text(mac)}" if mac and self.events.wants("m") else "",
            # The same, structured, for JSON readers.
            protocol=client.renewed[1] if client.renewed else "manual",
            mac=mac_text(mac) if mac else None,
            peer=endpoint_text(packet.dst, packet.dport) if packet is not None else None,
        )
        self.events.debug(
            "t",
            "time lock on {client} for {seconds}s",
            client=addr_text(addr),
            seconds=self.clients.seconds,
        )
        for observer in self.observers:
            observer.client_locked(addr)

    def unlock(self, addr: bytes, reason: str = "unlocked from the control port") -> bool:
        """Release ``addr``'s lock now; False when it holds none."""
        client = self.clients.get(addr)
        if client is None:
            return False
        self.release(client, reason)
        return True

    def allow(self, network: Network) -> tuple[bool, int]:
        """Allow ``network`` (``AllowList``) and release the clients locked in it; whether it
        is new, and how many clients were released."""
        if not self.allowed.add(network):
            return False, 0
        released = [c for c in self.clients if c.addr in self.allowed]
        for client in released:
            self.release(client, "allowed")
        return True, len(released)

    def probe_with(self, addr: bytes, probe: IProbe) -> None:
        """Probe the locked client ``addr`` with ``probe`` from now on (nothing if it holds
        no lock)."""
        client = self.clients.get(addr)
        if client is not None:
            self.clients.set_probe(client, probe)

    def probe_of(self, addr: bytes, family: str) -> IProbe | None:
        """The probe ``addr`` gets for protocol ``family``, if it is a locked client with one."""
        client = self.clients.get(addr)
        return client.probes.get(family) if client is not None else None

    def is_locked_for(self, addr: bytes, protocol: str) -> bool:
        """Whether ``addr`` holds a running lock it got by speaking ``protocol`` (a name)."""
        client = self.clients.get(addr)
        return (
            client is not None
            and client.until > self.clock.seconds()
            and protocol in client.protocols
        )

    def probe_answered(self, packet: Packet, family: str) -> bool:
        """A probed client replied: its P2P client still runs, so its lock starts again.

        Only a reply from the client itself (``evidence``) that the family's probe accepts
        (``IProbe.answers``: the right port, the right transaction), before the next probe is
        due, counts.
        """
        addr = packet.src
        client = self.clients.get(addr)
        if client is None or client.last_probe is None:
            return False
        probe = client.probes.get(family)
        if probe is None or not probe.answers(packet):
            return False
        if self.clock.seconds() - client.last_probe > self.clients.seconds / 2:
            return False
        if self.lock(addr, "answered a probe", packet, probe.protocol) is None:
            return False
        client.probes_answered += 1
        self.stats["probes_answered"] += 1
        self.events.debug("p", "probe answered by {client}", client=addr_text(addr))
        return True

    def spoof(self, src: bytes | None, sport: int, dst: bytes, dport: int, payload: bytes) -> None:
        """Send a forged pong, at most ``max_spoofs`` a second: each costs a few µs (built
        with ``struct``, a route lookup, a raw send), and a flood of hellos must not take the
        daemon's time from everyone's packets. A hello over the budget is still dropped, only
        not answered."""
        second = self.clock.seconds() // 1
        if second != self._spoof_second:
            self._spoof_second, self._spoofs_this_second = second, 0
        if self._spoofs_this_second >= self.max_spoofs:
            self.stats["spoofs_skipped"] += 1
            return
        if self.dry_run:
            self.stats["would_spoof"] += 1
            return
        self._spoofs_this_second += 1
        self.stats["spoofs"] += 1
        self.spoofer.send_udp(src, sport, dst, dport, payload)

    def tick(self) -> None:
        """Send due probes and release expired locks; driven by a ``LoopingCall``.

        Bounded: ``TICK_ACTIONS`` entries per tick and ``max_probes`` probes a second, so a
        burst of hellos from thousands of (spoofed) sources is probed over time, never in one
        stalling tick."""
        now = self.clock.seconds()
        second = now // 1
        if second != self._probe_second:
            self._probe_second, self._probes_this_second = second, 0
        allowance = self.max_probes - self._probes_this_second
        for due in self.clients.due(now, probes=allowance, limit=TICK_ACTIONS):
            client = due.client
            if due.action == "probe":
                self._probes_this_second += 1
                self._probe(client)
            else:
                self.release(client, "time lock expired")

    def _probe(self, client: Client) -> None:
        """Send the client one probe per protocol it was seen speaking."""
        if self.dry_run:
            self.stats["would_probe"] += len(client.probes)
            return
        for family, probe in client.probes.items():
            client.probes_sent += 1
            self.stats["probes_sent"] += 1
            self.events.debug(
                "p",
                "{family} probe sent to {client}",
                family=family,
                client=endpoint_text(client.addr, probe.port),
            )
            self.spoofer.send_udp(None, probe.source_port, client.addr, probe.port, probe.payload())

    def release(self, client: Client, reason: str) -> None:
        """Forget a client's lock; tell the observers (client directory)."""
        self.clients.release(client.addr)
        self._evicted(client, reason)

    def _evicted(self, client: Client, reason: str = "evicted, client table full") -> None:
        client.ended = reason
        self.stats["clients_released"] += 1
        self.events.event(
            "c", "client {client} cleared: {reason}", client=addr_text(client.addr), reason=reason
        )
        self.events.debug("t", "time lock on {client} ended", client=addr_text(client.addr))
        for observer in self.observers:
            observer.client_released(client.addr)
