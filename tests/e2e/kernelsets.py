"""Reading p2pwall's kernel sets in the lab's gateway, as an admin would: the nft table with
``nft``, the chains of enforcement by ipset with ``iptables -L -v``."""

from __future__ import annotations

import json
from typing import Any

from lab import gateway
from lab.netlab import Lab
from p2pwall.kernel import ipsetrules

# What each chain of the nft table is among the chains of enforcement by ipset.
IPSET_CHAINS = {
    "enforce": ipsetrules.CHAIN_KERNEL,
    "from_green": ipsetrules.CHAIN_GREEN,
    "new_from_green": ipsetrules.CHAIN_NEW,
    "to_green": ipsetrules.CHAIN_TO_GREEN,
    **{action: ipsetrules.action_chain_name(action) for action in ipsetrules.ACTION_CODES},
}


# The daemon and the rules with kernel enforcement; the kernel's lock time must be the daemon's.
def kernel_options(time_lock: float, sets: str = "nft") -> tuple[list[str], list[str]]:
    """(daemon options, p2pwall-rules options) for ``--enforce kernel`` with ``sets``."""
    chosen = ["--sets", sets] if sets != "nft" else []
    return (["--enforce", "kernel", "-t", f"{time_lock:g}", *chosen],
            ["--enforce", "kernel", "--lock-time", str(int(time_lock)), *chosen])  # fmt: skip


def _nft_json(lab: Lab, *what: str) -> list[dict[str, Any]]:
    done = lab.run("gw", ["nft", "-j", "list", *what], capture_output=True, text=True)
    if done.returncode:
        raise AssertionError(f"nft list {' '.join(what)}: {done.stderr.strip()}")
    return json.loads(done.stdout)["nftables"]


def kernel_drops(lab: Lab, chain: str, sets: str = "nft") -> int:
    """Packets the counters of one chain of ``table inet p2pwall`` counted; with ``sets``
    "ipset", what the DROP rules of its twin among our iptables chains counted."""
    if sets == "ipset":
        return ipset_drops(lab, IPSET_CHAINS[chain])
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


def ipset_drops(lab: Lab, chain: str, commands: tuple[str, ...] = ("iptables", "ip6tables")) -> int:
    """Packets the DROP rules of one of our mangle chains dropped, both families
    (``iptables -L CHAIN -v -x -n``: packets first, then bytes and target)."""
    dropped = 0
    for command in commands:
        argv = [command, "-t", "mangle", "-L", chain, "-v", "-x", "-n"]
        # The commands the gateway's rules ran with (``Gateway`` runs them with its ENV).
        done = lab.run("gw", argv, capture_output=True, text=True, env=gateway.ENV)
        if done.returncode:
            raise AssertionError(f"{' '.join(argv)}: {done.stderr.strip()}")
        for line in done.stdout.splitlines()[2:]:
            fields = line.split()
            if len(fields) > 2 and fields[2] == "DROP":
                dropped += int(fields[0])
    return dropped
