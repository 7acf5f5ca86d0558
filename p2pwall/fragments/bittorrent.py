"""BitTorrent's queue rules: what the detector learns from, and no more.

The core's green UDP flow starts already carry DHT queries, UDP tracker requests and uTP SYNs.
This adds:

- from green, in the first data packets of TCP connections the green host opened: an HTTP
  tracker announce (iptables: ``info_hash=`` anywhere in the packet; nft, which has no string
  match: payload starting ``GET /announce``), which also sets ``ANNOUNCE_MARK`` on the
  connection, and the plain handshake ``\\x13BitTorrent protocol`` at the start of the payload;
- from green, every later packet of a marked connection in the original direction (in on
  green in the reply direction, it would be a forged tracker reply): conntrack counts the
  packets the daemon drops, so without this the announce's third retransmission, past the
  early-data window, would reach the tracker unqueued (a tracker connection is a few packets);
- from green to the gateway: every UDP packet to ``PROBE_PORT``, the replies to the detector's
  KRPC pings (the pings carry the spoof mark and are not tracked, so the replies of one client
  are one flow that lives on while probes come more often than the conntrack timeout: limiting
  it to its first packets would stop queueing the fourth answer and release a running client);
- from outside, in the reply direction, always with bypass: the first ``--udp-packets`` of each
  UDP flow a green host opened (DHT responses with ``values``, UDP tracker announce replies),
  DNS's port left to the DNS fragment, and the first ``TRACKER_REPLY_PACKETS`` of connections
  marked as announces (the tracker's peer list).

A green host can make outside hosts answer it, but every flow it opens passes the per-source
limit first and only the first packets of each reply are queued.
"""

from __future__ import annotations

from zope.interface import implementer

from ..detectors.bittorrent import PROBE_PORT
from ..detectors.dns import DNS_PORT
from . import (
    FORWARD,
    INPUT,
    IptablesContext,
    IRuleFragment,
    NftContext,
    Rules,
    payload_starts,
    words,
)

# One conntrack mark bit of ours, set with OR and tested under its mask: the admin's marks in
# the other bits are kept. Bit 24 stays clear of the low bits policy routing, mwan3, Shorewall
# and kube-proxy use and of Tailscale's 0xff0000.
ANNOUNCE_MARK = 0x01000000
CHAIN_ANNOUNCE = "p2pwall-bt"
TRACKER_REPLY_PACKETS = 8  # SYN-ACK, an ACK, then the response's first segments
ANNOUNCE_STRING = "info_hash="
NFT_ANNOUNCE = b"GET /announce"
HANDSHAKE = b"\x13BitTorrent protocol"
# Where the handshake may start, counted (as the string match does) from the network header:
# after the smallest IP and TCP headers, up to after the largest (IPv6 without extension
# headers); the range ends where the whole handshake fits.
HANDSHAKE_OFFSETS = {False: (20 + 20, 60 + 60), True: (40 + 20, 40 + 60)}


@implementer(IRuleFragment)
class BitTorrentRules:
    name = "bittorrent"
    flags = (
        (
            "no-bittorrent",
            "Do not queue BitTorrent's tracker announces and replies, handshakes, UDP replies and "
            "probe replies.",
        ),
    )
    chains = (CHAIN_ANNOUNCE,)

    def __init__(self, off: frozenset[str] = frozenset()) -> None:
        self.on = "no-bittorrent" not in off

    def iptables(self, context: IptablesContext) -> Rules[list[str]]:
        if not self.on:
            return Rules()
        first, last = HANDSHAKE_OFFSETS[context.ipv6]
        handshake = "|13|" + HANDSHAKE[1:].decode()
        reply = [*context.reply, *context.answer]
        tracker = ["-m", "connbytes", "--connbytes", f"0:{TRACKER_REPLY_PACKETS}",
                   "--connbytes-dir", "reply", "--connbytes-mode", "packets"]  # fmt: skip
        mark = f"{ANNOUNCE_MARK:#x}"
        marked = ["-m", "connmark", "--mark", f"{mark}/{mark}"]
        return Rules(
            green={FORWARD: [["-p", "tcp", *marked, *context.opened_by_sender,
                              *context.limit]],
                   INPUT: [["-p", "udp", "!", "--sport", str(DNS_PORT), "--dport",
                            str(PROBE_PORT), *context.opened_by_sender, *context.limit]]},
            early=[
                ["-m", "string", "--algo", "bm", "--string", ANNOUNCE_STRING, "-j",
                 CHAIN_ANNOUNCE],
                ["-m", "string", "--algo", "bm", "--from", str(first), "--to",
                 str(last + len(HANDSHAKE)), "--hex-string", handshake, *context.limit],
            ],
            outside={FORWARD: [
                ["-p", "udp", "!", "--sport", str(DNS_PORT), *context.udp_reply_start, *reply],
                ["-p", "tcp", *marked, *tracker, *reply],
            ]},
            chains={CHAIN_ANNOUNCE: [["-j", "CONNMARK", "--or-mark", mark],
                                     [*context.limit]]},
        )  # fmt: skip

    def nft(self, context: NftContext) -> Rules[str]:
        if not self.on:
            return Rules()
        mark = f"{ANNOUNCE_MARK:#010x}"
        marked = f"meta l4proto tcp ct mark & {mark} == {mark}"
        return Rules(
            green={FORWARD: [words(marked, context.opened_by_sender, context.limit)],
                   INPUT: [words(f"udp sport != {DNS_PORT} udp dport {PROBE_PORT}",
                                 context.opened_by_sender, context.limit)]},
            early=[
                words(payload_starts(NFT_ANNOUNCE), f"ct mark set ct mark or {mark}",
                      context.limit),
                words(payload_starts(HANDSHAKE), context.limit),
            ],
            outside={FORWARD: [
                words(f"udp sport != {DNS_PORT}", context.reply, context.udp_reply_start,
                      context.answer),
                words(marked, context.reply,
                      f"ct reply packets <= {TRACKER_REPLY_PACKETS}", context.answer),
            ]},
        )  # fmt: skip
