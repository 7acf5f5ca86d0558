"""The kernel's sets written through libnftables' JSON API (Debian's python3-nftables).

One ``json_cmd`` per batch: a transaction the kernel applies whole or not at all, never a
process per element. Element keys come from ``elements``; the set and chain names from
``nftrules``, which printed the table these sets live in.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from zope.interface import implementer

from ..errors import KernelSetsError
from ..interfaces import IKernelSets
from ..networks import Network
from .elements import FAMILIES, SHAPES, Element, Lock
from .nftrules import ALLOWED, IP, LOCK_SETS, LOCKED, LOCKED_FLOWS

TABLE = "p2pwall"
# Elements per ``add element`` command: libnftables parses one command's list in one go.
CHUNK = 50_000


def open_nftables() -> Any:
    """A libnftables context with JSON output; ``KernelSetsError`` when the binding or the
    library is missing."""
    try:
        import nftables
    except ImportError:
        raise KernelSetsError(
            "--enforce kernel needs libnftables' Python binding (apt install python3-nftables; "
            "scripts/install-deps.sh links it into the virtualenv)"
        ) from None
    try:
        context = nftables.Nftables()
    except OSError as error:
        raise KernelSetsError(f"cannot load libnftables: {error}") from None
    context.set_json_output(True)
    return context


def _value(key: tuple[str | int, ...]) -> Any:
    return key[0] if len(key) == 1 else {"concat": list(key)}


def _verdict(action: str) -> dict[str, Any]:
    return {"goto": {"target": action}}


@implementer(IKernelSets)
class NftSets:
    """p2pwall's sets in ``table inet p2pwall``."""

    name = "nft"

    def __init__(self, nft: Any = None, table: str = TABLE) -> None:
        """``nft``: a libnftables context (``open_nftables``); tests pass a fake."""
        self._nft = nft if nft is not None else open_nftables()
        self._table = {"family": "inet", "table": table}
        self.batches = 0

    def _ref(self, name: str) -> dict[str, str]:
        return {**self._table, "name": name}

    def _run(self, commands: list[dict[str, Any]]) -> Any:
        if not commands:
            return None
        rc, output, error = self._nft.json_cmd({"nftables": commands})
        self.batches += 1
        if rc != 0:
            first = " ".join(str(error).split())[:300] or f"error {rc}"
            raise KernelSetsError(f"nft: {first}")
        return output

    def _elements(self, op: str, name: str, elems: list[Any]) -> list[dict[str, Any]]:
        return [
            {op: {"element": {**self._ref(name), "elem": elems[at : at + CHUNK]}}}
            for at in range(0, len(elems), CHUNK)
        ]

    def check(self, lock_seconds: float) -> None:
        for family in FAMILIES:
            for name in (f"{n}{suffix}{family}" for n in LOCK_SETS for suffix in ("", IP)):
                try:
                    output = self._run([{"list": {"set": self._ref(name)}}])
                except KernelSetsError:
                    raise KernelSetsError(
                        f"no set {name} in table inet {self._table['table']}: apply "
                        "'p2pwall-rules --enforce kernel' (of this version) before starting "
                        "with --enforce kernel"
                    ) from None
                timeout = next(
                    (item["set"].get("timeout") for item in output["nftables"] if "set" in item),
                    None,
                )
                if timeout != math.ceil(lock_seconds):
                    raise KernelSetsError(
                        f"the kernel's lock set times out after {timeout} s, the daemon's time "
                        f"lock is {lock_seconds:g} s: give p2pwall-rules --lock-time the "
                        "daemon's -t"
                    )

    def load(self, blocks: Iterable[tuple[Element, str]], allowed: Sequence[Network]) -> int:
        by_set: dict[str, list[Any]] = {
            f"{shape}{family}": [] for family in FAMILIES for shape in SHAPES.values()
        }
        count = 0
        for item, action in blocks:
            by_set[item.set_name].append([_value(item.key), _verdict(action)])
            count += 1
        commands = [{"flush": {"map": self._ref(name)}} for name in by_set]
        for name, elems in by_set.items():
            commands += self._elements("add", name, elems)
        self._run(commands + self._allowed(allowed))
        return count

    def _allowed(self, networks: Sequence[Network]) -> list[dict[str, Any]]:
        commands = []
        for family in FAMILIES:
            name = f"{ALLOWED}{family}"
            prefixes = [
                {"prefix": {"addr": str(n.network_address), "len": n.prefixlen}}
                for n in networks
                if n.version == family
            ]
            commands.append({"flush": {"set": self._ref(name)}})
            if prefixes:
                commands += self._elements("add", name, prefixes)
        return commands

    def set_allowed(self, networks: Sequence[Network]) -> None:
        self._run(self._allowed(networks))

    def apply(
        self,
        add: Sequence[tuple[Element, str]],
        replace: Sequence[tuple[Element, str]],
        remove: Sequence[Element],
        locks: Sequence[Lock],
        unlocks: Sequence[tuple[int, str]],
    ) -> None:
        commands: list[dict[str, Any]] = []
        for item, action in add:
            commands.append(self._one("add", item.set_name, [_value(item.key), _verdict(action)]))
        for item, action in replace:
            commands.append(self._one("delete", item.set_name, _value(item.key)))
            commands.append(self._one("add", item.set_name, [_value(item.key), _verdict(action)]))
        for item in remove:
            commands.append(self._one("delete", item.set_name, _value(item.key)))
        for lock in locks:
            seconds = max(1, math.ceil(lock.seconds))
            for name in [LOCKED, LOCKED_FLOWS] if lock.flows else [LOCKED]:
                keys = [(f"{name}{IP}{lock.family}", lock.addr)]
                if lock.mac is not None:
                    keys.append((f"{name}{lock.family}", {"concat": [lock.addr, lock.mac]}))
                for set_name, key in keys:
                    # Add, delete, add: an element's timeout is set only when it is added.
                    commands += self._reset(set_name, key)
                    commands.append(
                        self._one("add", set_name, {"elem": {"val": key, "timeout": seconds}})
                    )
        if unlocks:
            commands += self._unlocks(unlocks)
        self._run(commands)

    def _unlocks(self, unlocks: Sequence[tuple[int, str]]) -> list[dict[str, Any]]:
        """Remove the addresses from every lock set, whatever MAC a lock is bound to (the
        sets are read for those: an unlock is an admin's rare act)."""
        commands = []
        bound = {(lock.family, lock.addr): lock.mac for lock in self._listed() if lock.mac}
        for family, addr in unlocks:
            for name in LOCK_SETS:
                commands += self._reset(f"{name}{IP}{family}", addr)
                mac = bound.get((family, addr))
                if mac is not None:
                    commands += self._reset(f"{name}{family}", {"concat": [addr, mac]})
        return commands

    def _one(self, op: str, name: str, elem: Any) -> dict[str, Any]:
        return {op: {"element": {**self._ref(name), "elem": [elem]}}}

    def _reset(self, name: str, key: Any) -> list[dict[str, Any]]:
        """Remove ``key`` from a lock set whether it is there or not (deleting an absent
        element would fail the whole batch)."""
        return [self._one("add", name, key), self._one("delete", name, key)]

    def _listed(self) -> list[Lock]:
        """Every element of every lock set, as it is."""
        found = []
        for family in FAMILIES:
            for name in LOCK_SETS:
                for suffix in ("", IP):
                    set_name = f"{name}{suffix}{family}"
                    output = self._run([{"list": {"set": self._ref(set_name)}}])
                    for item in output["nftables"]:
                        for elem in item.get("set", {}).get("elem", ()):
                            found.append(_lock(elem, family, name == LOCKED_FLOWS))
        return [lock for lock in found if lock is not None]

    def locks(self) -> list[Lock]:
        """Each (address, MAC) pair's lock, with the most seconds left in any of its sets;
        ``flows`` when one of them is a flows set."""
        merged: dict[tuple[int, str, str | None], Lock] = {}
        for lock in self._listed():
            key = (lock.family, lock.addr, lock.mac)
            known = merged.get(key)
            if known is not None:
                lock = Lock(lock.addr, lock.family, max(lock.seconds, known.seconds),
                            lock.flows or known.flows, lock.mac)  # fmt: skip
            merged[key] = lock
        return list(merged.values())

    def clear(self) -> None:
        commands = [
            {"flush": {"map": self._ref(f"{shape}{family}")}}
            for family in FAMILIES
            for shape in SHAPES.values()
        ]
        commands += [
            {"flush": {"set": self._ref(f"{name}{suffix}{family}")}}
            for family in FAMILIES
            for name in LOCK_SETS
            for suffix in ("", IP)
        ]
        self._run(commands)


def _lock(elem: Any, family: int, flows: bool) -> Lock | None:
    """A lock set's element as listed (``{"elem": {"val": ..., "expires": ...}}``; the value
    is the address, or a concatenation of address and MAC)."""
    value = elem.get("elem") if isinstance(elem, dict) else None
    if not isinstance(value, dict):
        return None
    key, seconds = value.get("val"), float(value.get("expires", 0))
    if isinstance(key, dict):
        addr, mac = key["concat"]
        return Lock(addr, family, seconds, flows, mac)
    return Lock(key, family, seconds, flows)
