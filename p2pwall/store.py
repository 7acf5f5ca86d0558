"""Files: the store file of learned blocks and the client directory.

The store file survives restarts, so it is written atomically (temp file, fsync, rename, fsync
of the directory): a crash leaves the old file or the new one, never half of one.
"""

from __future__ import annotations

import ipaddress
import math
import os
import socket
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path

from twisted.logger import Logger
from zope.interface import implementer

from .interfaces import IClientObserver
from .packet import addr_text
from .tables import ANY_CLIENT, ANY_PORT, MANUAL, ORIGINS, Block, BlockKey, BlockTable

log = Logger()

HEADER = "# p2pwall store file: peer port|* client|* origin last-seen(epoch) [name]\n"


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so readers see the old or the new file, whole."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


@dataclass(frozen=True)
class StoredBlock:
    peer: bytes
    port: int
    client: bytes
    origin: str
    seen: float
    name: str | None


def format_block(entry: StoredBlock) -> str:
    """One line: ``peer port|* client|* origin last-seen [name]``."""
    return _format(entry.peer, entry.port, entry.client, entry.origin, entry.seen, entry.name)


def parse_block(line: str) -> StoredBlock:
    """The inverse of ``format_block``; ``ValueError`` says what is wrong."""
    return StoredBlock(*_parse(line))


def _addr_text(addr: bytes) -> str:
    """``addr_text``, without ``ipaddress`` for IPv4 (the same text, several times faster)."""
    return socket.inet_ntop(socket.AF_INET, addr) if len(addr) == 4 else addr_text(addr)


def _packed(text: str) -> bytes:
    """``ipaddress.ip_address(text).packed``, through ``inet_pton`` first for IPv4."""
    try:
        return socket.inet_pton(socket.AF_INET, text)
    except (OSError, ValueError):
        return ipaddress.ip_address(text).packed


def _format(
    peer: bytes, port: int, client: bytes, origin: str, seen: float, name: str | None
) -> str:
    line = (
        f"{_addr_text(peer)} {port if port != ANY_PORT else '*'} "
        f"{_addr_text(client) if client != ANY_CLIENT else '*'} {origin} {seen:.0f}"
    )
    return f"{line} {name}" if name else line


# The origins' own string objects, so blocks loaded from a file share them as learned ones do.
_ORIGINS = {origin: origin for origin in ORIGINS}

Parsed = tuple[bytes, int, bytes, str, float, str | None]


def _parse(line: str) -> Parsed:
    fields = line.split(None, 5)
    if len(fields) < 5:
        raise ValueError("expected: peer port client origin last-seen [name]")
    peer, port, client, origin, seen = fields[:5]
    origin = _ORIGINS.get(origin, "")
    if not origin:
        raise ValueError(f"unknown origin {fields[3]!r}")
    port_number = ANY_PORT if port == "*" else int(port)
    if not 0 <= port_number < 65536:
        raise ValueError(f"port out of range: {port}")
    return (
        _packed(peer),
        port_number,
        ANY_CLIENT if client == "*" else _packed(client),
        origin,
        float(seen),
        fields[5] if len(fields) > 5 else None,
    )


Snapshot = tuple[list[BlockKey], list[Block]]


def snapshot_lines(snapshot: Snapshot, cutoff: float = -math.inf) -> list[str]:
    """Store-file lines of a ``BlockTable.snapshot()``: manual blocks and those seen since
    ``cutoff``. Safe in a thread: it reads only the snapshot's blocks (a field changed
    meanwhile is written old or new, each whole)."""
    lines = []
    keys, values = snapshot
    for (peer, port, client), block in zip(keys, values, strict=True):
        origin = block.origin
        seen = block.seen
        if seen >= cutoff or origin == MANUAL:
            lines.append(_format(peer, port, client, origin, seen, block.name))
    return lines


def write_lines(path: Path, lines: list[str], header: str = "") -> None:
    """``header`` and one line each, written atomically (``write_atomically``)."""
    write_atomically(path, header + "".join(line + "\n" for line in lines))


class StoreFile:
    """Learned peers with their last-seen time; entries older than ``max_age`` are dropped.

    The file lists blocks in the table's order, least recently seen first, and ``load`` adds
    them in last-seen order, so the table's order (which eviction and pruning rely on) survives
    a restart."""

    def __init__(self, path: str | Path, max_age: float) -> None:
        self.path = Path(path)
        self.max_age = max_age

    def load(self, blocks: BlockTable, now: float) -> int:
        """Add the stored blocks that are young enough; bad lines are logged and skipped."""
        try:
            handle = self.path.open(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return 0
        cutoff = now - self.max_age
        entries: list[Parsed] = []
        with handle:
            for number, line in enumerate(handle, 1):
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                try:
                    entry = _parse(line)
                except ValueError as error:
                    log.warn("{path}:{line}: {error}", path=self.path, line=number, error=error)
                    continue
                if entry[4] >= cutoff or entry[3] == MANUAL:
                    entries.append(entry)
        entries.sort(key=itemgetter(4))  # stable, and linear on a file this class wrote
        add = blocks.add
        for entry in entries:
            add(*entry)
        return len(entries)

    def save(self, blocks: BlockTable, now: float) -> int:
        """Write the table now, on this thread."""
        return self.write(blocks.snapshot(), now)

    def write(self, snapshot: Snapshot, now: float) -> int:
        """Write a ``BlockTable.snapshot()``; safe in a thread (see ``snapshot_lines``)."""
        lines = snapshot_lines(snapshot, now - self.max_age)
        write_lines(self.path, lines, HEADER)
        return len(lines)


@implementer(IClientObserver)
class ClientDirectory:
    """An empty file named after each locked client's address, removed on release."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def start(self) -> None:
        """Make the directory and clear files left by an earlier run (their locks are gone)."""
        self.path.mkdir(parents=True, exist_ok=True)
        self.clear()

    def clear(self) -> None:
        for entry in self._files():
            entry.unlink(missing_ok=True)

    def client_locked(self, addr: bytes) -> None:
        target = self.path / addr_text(addr)
        try:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o644)
            os.close(fd)
        except OSError as error:
            log.warn("client file {path}: {error}", path=target, error=error)

    def client_released(self, addr: bytes) -> None:
        (self.path / addr_text(addr)).unlink(missing_ok=True)

    def _files(self) -> Iterable[Path]:
        for entry in self.path.iterdir():
            try:
                ipaddress.ip_address(entry.name)
            except ValueError:
                continue
            yield entry
