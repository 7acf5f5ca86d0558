"""FastTrack's queue rules: the first data packets of streams that look like a FastTrack
download (the HTTP safety net) and UDP from green to the gateway (probe replies).

iptables string-matches the markers the daemon reads: ``X-Kazaa-*`` headers (in any case) or a
``GIVE`` request; a ``/.hash=`` path or a user agent alone teaches nothing (a web page can
produce both), so it is not queued either. nft has no string match: payload starting ``GET /.``
(the FastTrack paths ``/.hash=``, ``/.download/``...) or ``GIVE ``.
"""

from __future__ import annotations

from zope.interface import implementer

from ..detectors.dns import DNS_PORT
from . import INPUT, IptablesContext, IRuleFragment, NftContext, Rules, payload_starts, words

DOWNLOAD_MARKERS = (("X-Kazaa-", "--icase"), ("GIVE ",))
NFT_DOWNLOAD_STARTS = (b"GET /.", b"GIVE ")
# Probe replies go to the port the probe came from, the one the client said hello to: FastTrack
# peers listen on 80 or 1024 and up. The gateway's own services for green hosts (DNS, DHCP,
# NTP...) are not queued, so a stopped daemon under --no-bypass never stops them.
PROBE_PORTS = "80,1024:65535"
NFT_PROBE_PORTS = "{ 80, 1024-65535 }"


@implementer(IRuleFragment)
class FastTrackRules:
    name = "fasttrack"
    flags = (
        ("no-http", "Do not queue FastTrack download starts (no HTTP safety net)."),
        ("no-probes", "Do not queue UDP to the gateway (no FastTrack probe replies)."),
    )
    chains = ()

    def __init__(self, off: frozenset[str] = frozenset()) -> None:
        self.http = "no-http" not in off
        self.probes = "no-probes" not in off

    def iptables(self, context: IptablesContext) -> Rules[list[str]]:
        early = []
        if self.http:
            early = [["-m", "string", "--algo", "bm", "--string", *marker, *context.limit]
                     for marker in DOWNLOAD_MARKERS]  # fmt: skip
        inbound = []
        if self.probes:
            ports = ["-m", "multiport", "--dports", PROBE_PORTS]
            inbound.append(["-p", "udp", "!", "--sport", str(DNS_PORT), *ports,
                            *context.udp_start, *context.limit])  # fmt: skip
        return Rules(green={INPUT: inbound}, early=early)

    def nft(self, context: NftContext) -> Rules[str]:
        early = []
        if self.http:
            early = [words(payload_starts(start), context.limit) for start in NFT_DOWNLOAD_STARTS]
        inbound = []
        if self.probes:
            inbound.append(words(f"udp sport != {DNS_PORT} udp dport {NFT_PROBE_PORTS}",
                                 context.udp_start, context.limit))  # fmt: skip
        return Rules(green={INPUT: inbound}, early=early)
