"""The kernel's sets written through libnftables (Debian's python3-nftables binding).

Writes are nft commands, several lines in one ``cmd`` call: one transaction the kernel applies
whole or not at all, never a process per element. They are the text syntax, not the JSON API:
measured here, 100,000 map elements took 2.3 s and 411 MB through JSON, 0.8 s and 33 MB as
text (jansson's tree of the whole batch is the difference). Every word written is ours: an
address from ``inet_ntop``, a number, a MAC in hex, a chain name, so nothing needs quoting.
Reads (the lock sets, with their seconds left) use the JSON output. A whole copy goes in
transactions of ``CHUNK`` elements, so a million blocks take about 50 MB, not gigabytes;
between its first (which empties the sets) and its last, the kernel holds part of them.
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
# Elements per transaction of a whole copy.
CHUNK = 20_000


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


def _key(key: tuple[str | int, ...]) -> str:
    return " . ".join(map(str, key))


def _mapping(item: Element, action: str) -> str:
    return f"{_key(item.key)} : goto {action}"


@implementer(IKernelSets)
class NftSets:
    """p2pwall's sets in ``table inet p2pwall``."""

    name = "nft"

    def __init__(self, nft: Any = None, table: str = TABLE) -> None:
        """``nft``: a libnftables context (``open_nftables``); tests pass a fake."""
        self._nft = nft if nft is not None else open_nftables()
        self._table = table
        self.batches = 0

    def _run(self, lines: list[str]) -> None:
        """One transaction."""
        if not lines:
            return
        rc, _output, error = self._nft.cmd("\n".join(lines))
        self.batches += 1
        if rc != 0:
            raise KernelSetsError(f"nft: {_first_line(error, rc)}")

    def _elements(self, op: str, name: str, elems: Sequence[str]) -> str:
        return f"{op} element inet {self._table} {name} {{ {', '.join(elems)} }}"

    def _listing(self, name: str) -> list[dict[str, Any]]:
        """The JSON listing of one set."""
        ref = {"family": "inet", "table": self._table, "name": name}
        rc, output, error = self._nft.json_cmd({"nftables": [{"list": {"set": ref}}]})
        self.batches += 1
        if rc != 0:
            raise KernelSetsError(f"nft: {_first_line(error, rc)}")
        return [item["set"] for item in output["nftables"] if "set" in item]

    def check(self, lock_seconds: float) -> None:
        for family in FAMILIES:
            for name in (f"{n}{suffix}{family}" for n in LOCK_SETS for suffix in ("", IP)):
                try:
                    listed = self._listing(name)
                except KernelSetsError:
                    raise KernelSetsError(
                        f"no set {name} in table inet {self._table}: apply "
                        "'p2pwall-rules --enforce kernel' (of this version) before starting "
                        "with --enforce kernel"
                    ) from None
                timeout = listed[0].get("timeout") if listed else None
                if timeout != math.ceil(lock_seconds):
                    raise KernelSetsError(
                        f"the kernel's lock set times out after {timeout} s, the daemon's time "
                        f"lock is {lock_seconds:g} s: give p2pwall-rules --lock-time the "
                        "daemon's -t"
                    )

    def load(self, blocks: Iterable[tuple[Element, str]], allowed: Sequence[Network]) -> int:
        names = [f"{shape}{family}" for family in FAMILIES for shape in SHAPES.values()]
        pending: dict[str, list[str]] = {name: [] for name in names}
        lines = [f"flush map inet {self._table} {name}" for name in names]
        lines += self._allowed(allowed)
        count = size = 0
        for item, action in blocks:
            pending[item.set_name].append(_mapping(item, action))
            count += 1
            size += 1
            if size >= CHUNK:
                self._run(lines + self._drain(pending))
                lines, size = [], 0
        self._run(lines + self._drain(pending))
        return count

    def _drain(self, pending: dict[str, list[str]]) -> list[str]:
        lines = [self._elements("add", name, elems) for name, elems in pending.items() if elems]
        for elems in pending.values():
            elems.clear()
        return lines

    def _allowed(self, networks: Sequence[Network]) -> list[str]:
        lines = []
        for family in FAMILIES:
            name = f"{ALLOWED}{family}"
            lines.append(f"flush set inet {self._table} {name}")
            prefixes = [str(n) for n in networks if n.version == family]
            if prefixes:
                lines.append(self._elements("add", name, prefixes))
        return lines

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
        lines = [self._elements("add", item.set_name, [_mapping(item, action)])
                 for item, action in add]  # fmt: skip
        for item, action in replace:
            lines.append(self._elements("delete", item.set_name, [_key(item.key)]))
            lines.append(self._elements("add", item.set_name, [_mapping(item, action)]))
        lines += [self._elements("delete", item.set_name, [_key(item.key)]) for item in remove]
        for lock in locks:
            seconds = max(1, math.ceil(lock.seconds))
            for name in [LOCKED, LOCKED_FLOWS] if lock.flows else [LOCKED]:
                keys = [(f"{name}{IP}{lock.family}", lock.addr)]
                if lock.mac is not None:
                    keys.append((f"{name}{lock.family}", f"{lock.addr} . {lock.mac}"))
                for set_name, key in keys:
                    # Add, delete, add: an element's timeout is set only when it is added.
                    lines += self._reset(set_name, key)
                    lines.append(self._elements("add", set_name, [f"{key} timeout {seconds}s"]))
        if unlocks:
            lines += self._unlocks(unlocks)
        self._run(lines)

    def _unlocks(self, unlocks: Sequence[tuple[int, str]]) -> list[str]:
        """Remove the addresses from every lock set, whatever MAC a lock is bound to (the
        sets are read for those: an unlock is an admin's rare act)."""
        lines = []
        bound = {(lock.family, lock.addr): lock.mac for lock in self._listed() if lock.mac}
        for family, addr in unlocks:
            for name in LOCK_SETS:
                lines += self._reset(f"{name}{IP}{family}", addr)
                mac = bound.get((family, addr))
                if mac is not None:
                    lines += self._reset(f"{name}{family}", f"{addr} . {mac}")
        return lines

    def _reset(self, name: str, key: str) -> list[str]:
        """Remove ``key`` from a lock set whether it is there or not (deleting an absent
        element would fail the whole transaction)."""
        return [self._elements("add", name, [key]), self._elements("delete", name, [key])]

    def _listed(self) -> list[Lock]:
        """Every element of every lock set, as it is."""
        found = []
        for family in FAMILIES:
            for name in LOCK_SETS:
                for suffix in ("", IP):
                    for listed in self._listing(f"{name}{suffix}{family}"):
                        for elem in listed.get("elem", ()):
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
        lines = [
            f"flush map inet {self._table} {shape}{family}"
            for family in FAMILIES
            for shape in SHAPES.values()
        ]
        lines += [
            f"flush set inet {self._table} {name}{suffix}{family}"
            for family in FAMILIES
            for name in LOCK_SETS
            for suffix in ("", IP)
        ]
        self._run(lines)


def _first_line(error: object, rc: int) -> str:
    return " ".join(str(error).split())[:300] or f"error {rc}"


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
