"""The one ordered list of protocols p2pwall knows: each one's detector (what the daemon runs,
with its options, counters and debug classes) and its queue-rule fragment (what
``p2pwall-rules`` prints for it).

Adding a protocol is a detector module, its fragment module in ``p2pwall.fragments``, and one
line here. The order is the daemon's order of asking detectors and the order of the fragments'
rules within each chain.
"""

from __future__ import annotations

from dataclasses import dataclass

from .detectors.bittorrent import BitTorrentDetector
from .detectors.dns import DnsDetector
from .detectors.fasttrack import FastTrackDetector
from .fragments.bittorrent import BitTorrentRules
from .fragments.dns import DnsRules
from .fragments.fasttrack import FastTrackRules


@dataclass(frozen=True)
class Entry:
    name: str
    detector: type
    rules: type


REGISTRY: tuple[Entry, ...] = (
    Entry("fasttrack", FastTrackDetector, FastTrackRules),
    Entry("bittorrent", BitTorrentDetector, BitTorrentRules),
    Entry("dns", DnsDetector, DnsRules),
)
