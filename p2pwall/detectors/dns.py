"""DNS auto-training: the addresses in answers for P2P names join the block list.

Why: WinMX finds its peer caches, and OpenNAP clients their servers, by DNS name. Reading the
answers that pass learns those servers' addresses without listing them in advance (ftwall v2 man
page, DNS AUTO-TRAINING; protocols.md §4). The answer itself always goes on: the client's next
connection to a learned address is what the engine's generic rules drop.

A name trains when the ``-D`` patterns match it (regexes and .wsx host names, ``PatternSet``) or
it was banned with ``ban-dns-name``. From each question the CNAME chain is followed; when any name
on it trains, every A and AAAA address the answer gives for a name on that chain is learned.
Records owned by names off the chain are ignored, as resolvers ignore them.
"""

from __future__ import annotations

import ipaddress
import os
import struct
from collections.abc import Mapping
from typing import TYPE_CHECKING

from scapy.config import conf
from scapy.layers.dns import DNS, dnstypes
from scapy.packet import Raw
from twisted.logger import Logger
from zope.interface import implementer

from ..interfaces import IDetector, IEventSink
from ..names import BannedNames
from ..packet import UDP, Hook, Packet, Verdict, addr_text
from ..tables import ANY_CLIENT, ANY_PORT
from .patterns import PatternSet, load_patterns
from .wsx import normalize_name

if TYPE_CHECKING:
    from ..engine import Engine

DNS_PORT = 53
BANNED = "ban-dns-name"
WSX = "wsx"

_HOOKS = frozenset((Hook.FORWARD, Hook.INPUT))
_IN = 1
_A, _CNAME, _AAAA = 1, 5, 28
_TCP_LENGTH = struct.Struct("!H")
# Appended before parsing; see parse_message.
_END = b"\0end"
# Records read per section. Scapy's list fields stop at conf.max_list_count (100), which called
# real round-robin answers malformed (a 4 KB answer holds 250 A records). Parsing costs about
# 0.1 ms per record on the reactor thread, so an answer built to stall the daemon stays bounded.
MAX_RECORDS = 512

log = Logger()


def message_of(packet: Packet) -> bytes | None:
    """The DNS message in a packet from port 53: the UDP payload, or a TCP segment holding one
    whole message after its 2-byte length (messages split over segments are not reassembled)."""
    payload = packet.payload
    if packet.proto == UDP:
        return bytes(payload)
    if len(payload) > 2 and _TCP_LENGTH.unpack_from(payload)[0] == len(payload) - 2:
        return bytes(payload[2:])
    return None


def parse_message(message: bytes) -> DNS | None:
    """``message`` as read by scapy, or None unless scapy read all of it as DNS.

    Scapy reads leniently: at the end of the data it stops quietly, returning short names and
    records, and what it cannot read it keeps as ``Raw``. So a marker goes after the message: a
    whole message leaves it untouched as trailing payload, while reading past the end of a
    truncated one, or reading more records than it holds, eats into it. Each record must then
    be read to its exact length (an A record's RDLENGTH of 6 leaves 2 bytes over), and be a
    record at all, which keeps attribute errors out of the callers.
    """
    saved, conf.max_list_count = conf.max_list_count, MAX_RECORDS
    try:
        dns = DNS(message + _END)
    except Exception:  # bad input makes scapy raise struct.error, IndexError, its own errors...
        return None
    finally:
        conf.max_list_count = saved
    if not bytes(dns.payload).endswith(_END):
        return None
    for records in (dns.qd, dns.an, dns.ns, dns.ar):
        if any(isinstance(r, Raw) or r.payload for r in records):
            return None
    return dns


def name_text(name: bytes) -> str:
    """A name as scapy gives it, as text: lowercase, no trailing dot, and bytes outside printable
    ASCII written ``\\DDD`` (RFC 1035), so a hostile name cannot put spaces or line breaks into
    the logs or the store file."""
    return normalize_name(
        "".join(chr(b) if 0x20 < b < 0x7F and b != 0x5C else f"\\{b:03d}" for b in name)
    )


def cname_chain(name: str, cnames: Mapping[str, str]) -> list[str]:
    """``name`` and the CNAME targets it leads to, in order; a loop ends the chain."""
    chain = [name]
    while (target := cnames.get(chain[-1])) is not None and target not in chain:
        chain.append(target)
    return chain


@implementer(IDetector)
class DnsDetector:
    """Trains the block list from DNS answers queued from FORWARD and INPUT.

    ``banned`` holds the ``ban-dns-name`` names, normalized (``normalize_name``); they match
    exactly and survive ``reload``, as learned blocks do.
    """

    name = "dns"

    def __init__(
        self, path: str | os.PathLike[str] | None = None, banned: BannedNames | None = None
    ) -> None:
        self.path = path
        self.patterns = PatternSet()
        self.banned = banned if banned is not None else BannedNames()

    def reload(self, engine: Engine) -> list[str]:
        """(Re-)read the patterns file and block its .wsx literal IPs (on their listed port);
        return the problems, which are logged too.

        Learned blocks stay. A file that cannot be read at all keeps the patterns in use, so a
        file missing for a moment while it is edited does not turn training off.
        """
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
            engine.learn(address.packed, port, ANY_CLIENT, "dns", name=WSX)
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

    def inspect(self, packet: Packet, hook: int, engine: Engine) -> Verdict | None:
        """Accept every DNS answer, training on it first.

        Returning ACCEPT keeps the generic rules away from the answer, so a DNS server is never
        taken for a P2P client. Only answers forwarded to a green host (or arriving for the
        gateway itself) count; anything else from port 53, or anything that does not parse as a
        DNS response, gets no such pass and goes on to the generic rules.
        """
        if packet.sport != DNS_PORT or hook not in _HOOKS:
            return None
        if hook == Hook.FORWARD and packet.dst not in engine.green:
            return None  # answers come in to green hosts; outbound "answers" get no free pass
        message = message_of(packet)
        if message is None:
            return None
        dns = parse_message(message)
        if dns is None:
            engine.stats["dns_malformed"] += 1
            engine.events.debug(
                "D",
                "malformed DNS message from {server}, {size} bytes",
                server=addr_text(packet.src),
                size=len(message),
            )
            return None
        if not dns.qr:
            return None
        engine.stats["dns_answers"] += 1
        _debug(dns, addr_text(packet.src), engine.events)
        if dns.opcode == 0 and dns.rcode == 0:
            self._train(dns, engine)
        return Verdict.ACCEPT

    def _train(self, dns: DNS, engine: Engine) -> None:
        cnames: dict[str, str] = {}
        addresses: dict[str, list[bytes]] = {}
        for rr in dns.an:
            if rr.type not in (_A, _AAAA, _CNAME) or rr.rclass != _IN or rr.cacheflush:
                continue
            owner = name_text(rr.rrname)
            if rr.type == _CNAME:
                cnames.setdefault(owner, name_text(rr.rdata))
            else:
                addresses.setdefault(owner, []).append(ipaddress.ip_address(rr.rdata).packed)
        if not addresses:
            return
        for question in dns.qd:
            if question.qclass != _IN or question.unicastresponse:
                continue
            chain = cname_chain(name_text(question.qname), cnames)
            trained = next(((name, why) for name in chain if (why := self.match(name))), None)
            if trained is None:
                continue
            name, why = trained
            engine.events.debug("D", "{name} trains the block list ({why})", name=name, why=why)
            for owner in chain:
                for address in addresses.get(owner, ()):
                    engine.learn(address, ANY_PORT, ANY_CLIENT, "dns", name=name)


def _debug(dns: DNS, server: str, events: IEventSink) -> None:
    """Debug classes ``d`` (questions), ``a`` (answer records) and ``D`` (whole messages)."""
    if events.wants_debug("D"):
        events.debug("D", "DNS answer from {server}: {dns}", server=server, dns=repr(dns))
    if events.wants_debug("d"):
        for question in dns.qd:
            events.debug(
                "d",
                "DNS question {name} {qtype} answered by {server}, rcode {rcode}",
                name=name_text(question.qname),
                qtype=dnstypes.get(question.qtype, question.qtype),
                server=server,
                rcode=dns.rcode,
            )
    if events.wants_debug("a"):
        for rr in dns.an:
            events.debug(
                "a",
                "DNS answer {name} {rtype} {data}",
                name=name_text(rr.rrname),
                rtype=dnstypes.get(rr.type, rr.type),
                data=_rdata_text(rr),
            )


def _rdata_text(rr) -> str:
    """The data of the record types training reads; the ``D`` class shows all the others."""
    if rr.type == _CNAME:
        return name_text(rr.rdata)
    return rr.rdata if rr.type in (_A, _AAAA) else ""
