"""Files: the store file of learned blocks and the client directory.

The store file survives restarts, so it is written atomically (temp file, fsync, rename, fsync
of the directory): a crash leaves the old file or the new one, never half of one.
"""

from __future__ import annotations

import ipaddress
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from twisted.logger import Logger
from zope.interface import implementer

from .interfaces import IClientObserver
from .packet import addr_text
from .tables import ANY_CLIENT, ANY_PORT, ORIGINS, BlockTable

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
    fields = [
        addr_text(entry.peer),
        str(entry.port) if entry.port != ANY_PORT else "*",
        addr_text(entry.client) if entry.client != ANY_CLIENT else "*",
        entry.origin,
        f"{entry.seen:.0f}",
    ]
    if entry.name:
        fields.append(entry.name)
    return " ".join(fields)


def parse_block(line: str) -> StoredBlock:
    """The inverse of ``format_block``; ``ValueError`` says what is wrong."""
    fields = line.split(None, 5)
    if len(fields) < 5:
        raise ValueError("expected: peer port client origin last-seen [name]")
    peer, port, client, origin, seen = fields[:5]
    if origin not in ORIGINS:
        raise ValueError(f"unknown origin {origin!r}")
    port_number = ANY_PORT if port == "*" else int(port)
    if not 0 <= port_number < 65536:
        raise ValueError(f"port out of range: {port}")
    return StoredBlock(
        ipaddress.ip_address(peer).packed,
        port_number,
        ANY_CLIENT if client == "*" else ipaddress.ip_address(client).packed,
        origin,
        float(seen),
        fields[5] if len(fields) > 5 else None,
    )


def table_entries(blocks: BlockTable) -> Iterator[StoredBlock]:
    for (peer, port, client), block in blocks.items():
        yield StoredBlock(peer, port, client, block.origin, block.seen, block.name)


class StoreFile:
    """Learned peers with their last-seen time; entries older than ``max_age`` are dropped."""

    def __init__(self, path: str | Path, max_age: float) -> None:
        self.path = Path(path)
        self.max_age = max_age

    def load(self, blocks: BlockTable, now: float) -> int:
        """Add the stored blocks that are young enough; bad lines are logged and skipped."""
        try:
            text = self.path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return 0
        loaded = 0
        cutoff = now - self.max_age
        for number, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            try:
                entry = parse_block(line)
            except ValueError as error:
                log.warn("{path}:{line}: {error}", path=self.path, line=number, error=error)
                continue
            if entry.seen >= cutoff or entry.origin == "manual":
                blocks.add(
                    entry.peer, entry.port, entry.client, entry.origin, entry.seen, entry.name
                )
                loaded += 1
        return loaded

    def save(self, blocks: BlockTable, now: float) -> int:
        cutoff = now - self.max_age
        entries = [e for e in table_entries(blocks) if e.seen >= cutoff or e.origin == "manual"]
        write_atomically(self.path, HEADER + "".join(format_block(e) + "\n" for e in entries))
        return len(entries)


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
