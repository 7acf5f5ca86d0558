"""The seam between ``p2pwall-rules``' core and each protocol's queue rules.

A fragment says what its detector needs queued, as rule bodies without interface matches: the
core adds ``-i GREEN`` (nft ``iifname GREENS``) to what comes from green and ``-o GREEN`` /
``iifname != GREENS oifname GREENS`` (to the gateway: ``iifname != { GREENS, "lo" }``, after
``-i GREEN -j RETURN`` guards in iptables) to what comes from outside. So no fragment can
queue an "answer" that came in on a green interface, and the order that matters stays the
core's: green flow starts first, then each fragment's green rules, then the guards, then what
is queued only from outside.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from zope.interface import Attribute, Interface

# The two hooks the rules queue from, as fragments name them (iptables: chains p2pwall-fwd and
# p2pwall-in; nft: base chains forward and input).
FORWARD = "forward"
INPUT = "input"

Rule = TypeVar("Rule", list[str], str)


@dataclass(frozen=True)
class Rules(Generic[Rule]):
    """What one fragment queues: iptables rule bodies (argv after ``-A CHAIN``) or nft rule
    strings, by where they go."""

    # {FORWARD or INPUT: bodies} for packets in on a green interface.
    green: Mapping[str, Sequence[Rule]] = field(default_factory=dict)
    # Bodies for the first data packets of TCP connections a green host opened (iptables: the
    # core's early-data chain, jumped to only when some fragment has such rules; nft: rules
    # behind the core's early-data match).
    early: Sequence[Rule] = ()
    # {FORWARD or INPUT: bodies} for packets not in on a green interface (FORWARD: on their way
    # to one), always queued with bypass by the fragments (a stopped daemon stops no answer).
    outside: Mapping[str, Sequence[Rule]] = field(default_factory=dict)
    # iptables only: the fragment's own mangle chains ({name: rules}), every name in its
    # ``chains``.
    chains: Mapping[str, Sequence[Rule]] = field(default_factory=dict)


@dataclass(frozen=True)
class IptablesContext:
    """What the core hands an iptables fragment (argv pieces)."""

    ipv6: bool
    limit: tuple[str, ...]  # the jump to the per-source limit chain (which then queues)
    answer: tuple[str, ...]  # NFQUEUE with --queue-bypass, whatever --no-bypass says
    opened_by_sender: tuple[str, ...]  # the original direction (from green: green opened it)
    udp_start: tuple[str, ...]  # the first --udp-packets of flows the sender opened
    udp_reply_start: tuple[str, ...]  # the first --udp-packets in the reply direction
    reply: tuple[str, ...]  # ESTABLISHED, reply direction


@dataclass(frozen=True)
class NftContext:
    """What the core hands an nft fragment (statement text, never empty but for
    ``udp_reply_start`` under ``--udp-packets 0``)."""

    limit: str
    answer: str
    opened_by_sender: str
    udp_start: str
    udp_reply_start: str
    reply: str


class IRuleFragment(Interface):
    """One protocol's part of ``p2pwall-rules``. Its class is built with the set of its own
    flags the admin gave (``Fragment(frozenset({"no-http"}))``) and lists, as class
    attributes, what ``--delete`` and the options need before any instance exists."""

    name = Attribute("The protocol's name, as its registry entry has it.")
    flags = Attribute("Its p2pwall-rules flags as (name, help) pairs, each turning a part off.")
    chains = Attribute("The names of its own iptables mangle chains, applied or not.")

    def iptables(context):
        """``Rules`` of argv bodies for iptables (``context.ipv6`` for ip6tables)."""

    def nft(context):
        """``Rules`` of nft rule strings (``chains`` stays empty: nft has one table)."""


# nft loads at most 16 bytes of payload into one register: longer strings are compared in parts.
_NFT_PAYLOAD_BYTES = 16


def payload_starts(data: bytes) -> str:
    """An nft match for a transport payload that starts with ``data`` (nft has no string
    match: raw ``@ih`` payload, 16 bytes at a time)."""
    return " ".join(
        f"@ih,{8 * start},{8 * len(chunk)} 0x{chunk.hex()}"
        for start in range(0, len(data), _NFT_PAYLOAD_BYTES)
        for chunk in [data[start : start + _NFT_PAYLOAD_BYTES]]
    )


def words(*parts: str) -> str:
    """nft statements joined by spaces, empty ones (an unset match) left out."""
    return " ".join(part for part in parts if part)
