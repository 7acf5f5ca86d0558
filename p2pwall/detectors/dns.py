"""DNS auto-training: the addresses in answers for P2P names join the block list.

Why: WinMX finds its peer caches, and OpenNAP clients their servers, by DNS name. Reading the
answers that pass learns those servers' addresses without listing them in advance (ftwall v2 man
page, DNS AUTO-TRAINING; docs/protocols.md §4). The answer itself always goes on: the client's next
connection to a learned address is what the engine's generic rules drop.

A name trains when the ``-D`` patterns match it (regexes and .wsx host names, ``PatternSet``) or
it was banned with ``ban-dns-name``. From each question the CNAME chain is followed; when any name
on it trains, every A and AAAA address the answer gives for a name on that chain is learned.
Records owned by names off the chain are ignored, as resolvers ignore them.

Answers are read on the reactor thread (``dnswire``, bounded), so they are read only when
something can train or a DNS debug class is on, only when they came from outside (an answer from
a green interface or address was made by a green host), and only within a per-host byte budget:
one host's answers cannot take more than a small share of the daemon's time.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Mapping
from time import perf_counter_ns
from typing import Any

from twisted.logger import Logger
from zope.interface import implementer, provider

from .. import dnswire
from ..budget import TokenBuckets
from ..coerce import number
from ..interfaces import IDetector, IDetectorFactory, IEngine, IEventSink
from ..names import BannedNames
from ..origins import Origin
from ..packet import TCP, UDP, Hook, Packet, Verdict, addr_text
from ..tables import ANY_CLIENT, ANY_PORT
from .patterns import PatternSet, load_patterns

DNS_PORT = 53
BANNED = "ban-dns-name"
WSX = "wsx"
# Bytes of DNS messages a second that one green host's answers may have read (the budget key is
# the host an answer goes to; the gateway's own answers share one key). Reading costs at most
# ~0.5 µs a byte (hostile names of one-byte labels; a real answer ~0.05), so a flooding host
# takes at most ~2.5 % of the daemon's time once its burst is spent (bench/dns.py). A browser
# doing 100 lookups a second reads 10-30 KB/s; the burst, ten seconds' worth, covers a page
# load's lookups at once. All hosts together may have read ``_ALL_HOSTS`` times one host's
# rate, which bounds a host that makes its queries from many addresses.
BUDGET = 50_000
_BURST_SECONDS = 10
_ALL_HOSTS = 8
_GATEWAY = b""

_HOOKS = frozenset((Hook.FORWARD, Hook.INPUT))
# DNS-trained blocks drop, on every port, for every host (the answers come from the outside and
# the names from the admin), and lock nobody: a browser may well look up a P2P site.
DNS_ORIGIN = Origin("dns", any_port=True)
_TCP_LENGTH = struct.Struct("!H")

log = Logger()


def message_of(packet: Packet) -> bytes | bytearray | None:
    """The DNS message in a packet from port 53: the UDP payload, or a TCP segment holding one
    whole message after its 2-byte length (messages split over segments are not reassembled)."""
    payload = packet.payload
    if packet.proto == UDP:
        return payload
    if len(payload) > 2 and _TCP_LENGTH.unpack_from(payload)[0] == len(payload) - 2:
        return payload[2:]
    return None


def cname_chain(name: str, cnames: Mapping[str, str]) -> list[str]:
    """``name`` and the CNAME targets it leads to, in order; a loop ends the chain."""
    chain = [name]
    while (target := cnames.get(chain[-1])) is not None and target not in chain:
        chain.append(target)
    return chain


@provider(IDetectorFactory)
@implementer(IDetector)
class DnsDetector:
    """Trains the block list from DNS answers queued from FORWARD and INPUT.

    ``banned`` holds the ``ban-dns-name`` names, normalized (``normalize_name``); they match
    exactly and survive ``reload``, as learned blocks do. ``budget``: bytes of answers a second
    one host's answers may have read (see ``BUDGET``).
    """

    # Answers over UDP and TCP, forwarded to green hosts or coming in for the gateway.
    wants = frozenset((proto, hook) for proto in (UDP, TCP) for hook in _HOOKS)

    name = "dns"
    origins = (DNS_ORIGIN,)
    opt_flags: list[list[Any]] = []
    opt_parameters = [
        ["dns-patterns", "D", None, "DNS training file: regex patterns and .wsx paths."],
        ["dns-budget", None, BUDGET, "Bytes of DNS answers read per second for each green "
         "host (the rest pass unread, training nothing).", number(int, "dns-budget", 512, 1 << 30)],
    ]  # fmt: skip
    debug_classes = {"d": "DNS questions", "a": "DNS answers", "D": "all DNS packet information"}
    counters = (
        ("dns_answers", "dns_answers", "DNS answers given the DNS pass."),
        ("dns_malformed", "dns_malformed", "DNS answers that did not read as DNS."),
        ("dns_from_green", "dns_from_green", "DNS answers from a green host (not trained on)."),
        ("dns_over_budget", "dns_over_budget", "DNS answers passed unread over --dns-budget."),
        ("dns_reads", "dns_reads", "DNS answers read (parsed) to train or to debug."),
    )

    @classmethod
    def from_options(cls, options: Any) -> DnsDetector:
        """Banned names are wired even without ``-D``, so ``ban-dns-name`` works
        (p2pwall-rules queues DNS answers anyway); they are kept next to the store file."""
        store = options["store-file"]
        banned = BannedNames(f"{store}.names" if store else None)
        banned.load()
        return cls(options["dns-patterns"], banned, budget=options["dns-budget"])

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        banned: BannedNames | None = None,
        budget: float = BUDGET,
    ) -> None:
        self.path = path
        self.patterns = PatternSet()
        self.banned = banned if banned is not None else BannedNames()
        burst = budget * _BURST_SECONDS
        self._hosts = TokenBuckets(budget, burst)
        self._all = TokenBuckets(budget * _ALL_HOSTS, burst * _ALL_HOSTS, max_keys=1)

    def reload(self, engine: IEngine) -> list[str]:
        """(Re-)read the patterns file and block its .wsx literal IPs (on their listed port);
        return the problems, which are logged too. Without a file (no ``-D``), nothing.

        Learned blocks stay. A file that cannot be read at all keeps the patterns in use, so a
        file missing for a moment while it is edited does not turn training off.
        """
        if not self.path:
            return []
        loaded = load_patterns(self.path)
        problems = list(loaded.problems)
        if loaded.sources or not self.patterns.sources:
            self.patterns = loaded
        else:
            problems.append(f"{self.path}: kept the patterns loaded before")
        for problem in problems:
            log.warn("{problem}", problem=problem)
        patterns = self.patterns
        for address, port in patterns.ips:
            engine.learn(address.packed, port, ANY_CLIENT, DNS_ORIGIN.name, name=WSX)
        log.info(
            "DNS training from {path}: {patterns} patterns, {names} .wsx names, {ips} .wsx IPs",
            path=self.path,
            patterns=len(patterns.patterns),
            names=len(patterns.names),
            ips=len(patterns.ips),
        )
        return problems

    def match(self, name: str) -> str | None:
        """Why ``name`` trains: ``BANNED``, the matching pattern or ``WSX_HOST``; else None."""
        if name in self.banned:
            return BANNED
        return self.patterns.matches(name)

    def inspect(self, packet: Packet, hook: int, engine: IEngine) -> Verdict | None:
        """Accept every DNS answer from outside, training on it first.

        Returning ACCEPT keeps the generic rules away from the answer, so a DNS server is never
        taken for a P2P client. Only answers forwarded to a green host (or arriving for the
        gateway itself) from outside count: one that came in on a green interface, or from a
        green address, was made by a green host and teaches nothing. Anything else from port
        53, or anything that is not a DNS response, gets no such pass and goes on to the
        generic rules. The message is read only when something can train or a DNS debug class
        is on, and only while the receiving host's answers are within the budget; otherwise
        the header alone decides the pass.
        """
        if packet.sport != DNS_PORT or hook not in _HOOKS:
            return None
        if packet.indev in engine.green_ifindexes or packet.src in engine.green:
            engine.count("dns_from_green")
            return None
        if hook == Hook.FORWARD and packet.dst not in engine.green:
            return None  # answers come in to green hosts; outbound "answers" get no free pass
        message = message_of(packet)
        if message is None:
            return None
        try:
            header = dnswire.header(message)
            if not self._wanted(engine.events) or not self._within_budget(
                packet, hook, len(message), engine
            ):
                return self._passed(header, engine)
            started = perf_counter_ns()
            dns = dnswire.read(message)
            engine.count("dns_read_ns", perf_counter_ns() - started)
            engine.count("dns_reads")
        except dnswire.Malformed as error:
            engine.count("dns_malformed")
            engine.events.debug(
                "D",
                "malformed DNS message from {server}, {size} bytes: {error}",
                server=addr_text(packet.src),
                size=len(message),
                error=error,
            )
            return None
        verdict = self._passed(header, engine)
        if verdict is not None:
            _debug(dns, addr_text(packet.src), engine.events)
            if header.opcode == 0 and header.rcode == 0:
                self._train(dns, engine)
        return verdict

    def _wanted(self, events: IEventSink) -> bool:
        """Whether reading a message can teach or show anything."""
        patterns = self.patterns
        return bool(
            patterns.patterns
            or patterns.names
            or len(self.banned)
            or any(events.wants_debug(cls) for cls in self.debug_classes)
        )

    def _within_budget(self, packet: Packet, hook: int, size: int, engine: IEngine) -> bool:
        host = packet.dst if hook == Hook.FORWARD else _GATEWAY
        now = engine.clock.seconds()
        if self._hosts.charge(host, size, now) and self._all.charge(None, size, now):
            return True
        engine.count("dns_over_budget")
        engine.events.debug(
            "D",
            "DNS answer from {server} to {host} not read: over the budget",
            server=addr_text(packet.src),
            host=addr_text(host) if host else "the gateway",
        )
        return False

    @staticmethod
    def _passed(header: dnswire.Header, engine: IEngine) -> Verdict | None:
        """The pass for a response; a query from port 53 is no answer and gets none."""
        if not header.qr:
            return None
        engine.count("dns_answers")
        return Verdict.ACCEPT

    def _train(self, dns: dnswire.Message, engine: IEngine) -> None:
        cnames: dict[str, str] = {}
        addresses: dict[str, list[bytes]] = {}
        for rr in dns.answers:
            if rr.rclass != dnswire.IN or rr.cache_flush:
                continue
            if rr.rtype == dnswire.CNAME:
                cnames.setdefault(rr.owner, rr.data)
            elif rr.rtype in (dnswire.A, dnswire.AAAA):
                addresses.setdefault(rr.owner, []).append(rr.data)
        if not addresses:
            return
        for question in dns.questions:
            if question.qclass != dnswire.IN or question.unicast:
                continue
            chain = cname_chain(question.name, cnames)
            trained = next(((name, why) for name in chain if (why := self.match(name))), None)
            if trained is None:
                continue
            name, why = trained
            engine.events.debug("D", "{name} trains the block list ({why})", name=name, why=why)
            for owner in chain:
                for address in addresses.get(owner, ()):
                    engine.learn(address, ANY_PORT, ANY_CLIENT, DNS_ORIGIN.name, name=name)


def _debug(dns: dnswire.Message, server: str, events: IEventSink) -> None:
    """Debug classes ``d`` (questions), ``a`` (answer records) and ``D`` (whole messages)."""
    if events.wants_debug("D"):
        events.debug(
            "D", "DNS answer from {server}: {dns}", server=server, dns=dnswire.describe(dns)
        )
    if events.wants_debug("d"):
        for question in dns.questions:
            events.debug(
                "d",
                "DNS question {name} {qtype} answered by {server}, rcode {rcode}",
                name=question.name,
                qtype=dnswire.type_name(question.qtype),
                server=server,
                rcode=dns.header.rcode,
            )
    if events.wants_debug("a"):
        for rr in dns.answers:
            events.debug(
                "a",
                "DNS answer {name} {rtype} {data}",
                name=rr.owner,
                rtype=dnswire.type_name(rr.rtype),
                data=dnswire.data_text(rr),
            )
