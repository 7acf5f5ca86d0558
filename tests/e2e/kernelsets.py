"""Reading p2pwall's nft table in the lab's gateway, as an admin would with ``nft``."""

from __future__ import annotations

import json
from typing import Any

from lab.netlab import Lab


# The daemon and the rules with kernel enforcement; the kernel's lock time must be the daemon's.
def kernel_options(time_lock: float) -> tuple[list[str], list[str]]:
    """(daemon options, p2pwall-rules options) for ``--enforce kernel``."""
    return (["--enforce", "kernel", "-t", f"{time_lock:g}"],
            ["--enforce", "kernel", "--lock-time", str(int(time_lock))])  # fmt: skip


def _nft_json(lab: Lab, *what: str) -> list[dict[str, Any]]:
    done = lab.run("gw", ["nft", "-j", "list", *what], capture_output=True, text=True)
    if done.returncode:
        raise AssertionError(f"nft list {' '.join(what)}: {done.stderr.strip()}")
    return json.loads(done.stdout)["nftables"]


def kernel_drops(lab: Lab, chain: str) -> int:
    """Packets the counters of one chain of ``table inet p2pwall`` counted."""
    return sum(
        expr["counter"]["packets"]
        for item in _nft_json(lab, "chain", "inet", "p2pwall", chain)
        if "rule" in item
        for expr in item["rule"]["expr"]
        if "counter" in expr
    )


def set_elements(lab: Lab, kind: str, name: str) -> list[Any]:
    """The elements of one set or map (``kind``) of ``table inet p2pwall``."""
    for item in _nft_json(lab, kind, "inet", "p2pwall", name):
        if kind in item:
            return item[kind].get("elem", [])
    return []
