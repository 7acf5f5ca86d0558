"""The kernel sets ``--sets`` names: nft (libnftables) or ipset (iptables-legacy gateways)."""

from __future__ import annotations

from ..interfaces import IKernelSets
from .ipset import IpsetSets
from .nftsets import NftSets

SET_KINDS = ("nft", "ipset")


def open_sets(kind: str) -> IKernelSets:
    """The sets of ``kind``, opened; ``KernelSetsError`` (one line) when they cannot be."""
    if kind == "nft":
        return NftSets()
    if kind == "ipset":
        return IpsetSets()
    raise ValueError(f"unknown kernel sets {kind!r}")
