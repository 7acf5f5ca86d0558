"""Files: the store file of learned blocks and the client directory.

The store file survives restarts, so it is written atomically (temp file, fsync, rename, fsync
of the directory): a crash leaves the old file or the new one, never half of one, and the temp
file a kill -9 left behind is removed at the next start (``remove_temp_files``).

Loading trusts the file no more than a packet: a file that cannot be used is a ``StartError``
(found at start, not by the first failing write), reading is bounded by the table's cap and a
line length, and a line the daemon would never have written (a green peer, a last-seen in the
future or not a number, a peer and a client of different families) is reported and skipped.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import socket
import tempfile
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path
from typing import BinaryIO

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from .errors import StartError
from .files import open_regular
from .interfaces import IClientObserver
from .networks import GreenNetworks
from .origins import Origins
from .packet import addr_text
from .tables import ANY_CLIENT, ANY_PORT, MANUAL, Block, BlockKey, BlockTable

log = Logger()

HEADER = "# p2pwall store file: peer port|* client|* origin last-seen(epoch) [name]\n"

# The longest line read: ours are below 400 bytes (two IPv6 addresses and a DNS name).
MAX_LINE = 1024
# A last-seen time this far ahead of the clock is still taken (a clock stepped back a little).
CLOCK_SKEW = 300.0
# Bad lines logged one by one; past this many only their count is logged.
REPORTED_LINES = 20
# Seconds between tries of a client file that could not be created or removed.
CLIENT_FILE_RETRY = 10.0


def _temp_prefix(path: Path) -> str:
    return f".{path.name}."


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so readers see the old or the new file, whole."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), dir=path.parent)
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


def remove_temp_files(path: Path) -> list[Path]:
    """Remove the temp files ``write_atomically(path, ...)`` left when killed mid-write (an
    fsync'd temp file of the whole table each); return them. Only names ``mkstemp`` makes for
    ``path`` are touched, so ``.peers.names.x`` is not taken for a temp file of ``peers``."""
    temp = re.compile(re.escape(_temp_prefix(path)) + r"[a-z0-9_]{8}")
    removed = []
    for entry in path.parent.iterdir():
        if temp.fullmatch(entry.name) and entry.is_file() and not entry.is_symlink():
            entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


def clean_temp_files(path: Path) -> None:
    """``remove_temp_files``, logged; a failure is logged, the start goes on."""
    try:
        for temp in remove_temp_files(path):
            log.info("removed {temp}, left by an interrupted write", temp=temp)
    except FileNotFoundError:
        return  # no directory, no temp files (``check_writable_dir`` tells the admin)
    except OSError as error:
        log.warn("cleaning temp files of {path}: {error}", path=path, error=error)


def check_writable_dir(path: Path, what: str) -> None:
    """``StartError`` unless ``path``'s directory exists and takes new files (every write of
    ``write_atomically`` creates one there)."""
    parent = path.parent
    if not parent.is_dir():
        raise StartError(f"{what} {path}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise StartError(f"{what} {path}: cannot create files in {parent}")


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


def parse_block(line: str, origins: Origins) -> StoredBlock:
    """The inverse of ``format_block``; ``ValueError`` says what is wrong."""
    return StoredBlock(*_parse(line, origins))


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


Parsed = tuple[bytes, int, bytes, str, float, str | None]


def _parse(line: str, origins: Origins) -> Parsed:
    """One line; the origin by its name now or by an older one (``Origins.resolve``), as the
    origin's own name string, which blocks loaded from a file then share with learned ones."""
    fields = line.split(None, 5)
    if len(fields) < 5:
        raise ValueError("expected: peer port client origin last-seen [name]")
    peer, port, client, origin_name, seen = fields[:5]
    known = origins.resolve(origin_name)
    if known is None:
        raise ValueError(f"unknown origin {origin_name!r}")
    origin = known.name
    port_number = ANY_PORT if port == "*" else int(port)
    if not 0 <= port_number < 65536:
        raise ValueError(f"port out of range: {port}")
    peer_packed = _packed(peer)
    client_packed = ANY_CLIENT if client == "*" else _packed(client)
    if client_packed and len(client_packed) != len(peer_packed):
        raise ValueError("peer and client must both be IPv4 or both IPv6")
    seen_time = float(seen)
    if not math.isfinite(seen_time):
        raise ValueError(f"last-seen must be a finite number, got {seen}")
    return (
        peer_packed,
        port_number,
        client_packed,
        origin,
        seen_time,
        fields[5] if len(fields) > 5 else None,
    )


def _lines(handle: BinaryIO) -> Iterator[bytes | None]:
    """The file's lines; ``None`` for one longer than ``MAX_LINE``, skipped without holding
    more than ``MAX_LINE`` bytes of it."""
    while line := handle.readline(MAX_LINE + 1):
        if len(line) > MAX_LINE and not line.endswith(b"\n"):
            while line and not line.endswith(b"\n"):
                line = handle.readline(MAX_LINE)
            yield None
        else:
            yield line


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

    def __init__(self, path: str | Path, max_age: float, origins: Origins) -> None:
        """``origins``: those the daemon knows (``Engine.origins``); lines of others are
        bad lines."""
        self.path = Path(path)
        self.max_age = max_age
        self.origins = origins

    def load(
        self,
        blocks: BlockTable,
        now: float,
        green: GreenNetworks | None = None,
        local: Collection[bytes] = (),
    ) -> int:
        """Add the stored blocks that are young enough, at most ``blocks.cap``; bad lines are
        logged and skipped. Learned blocks of ``green`` or ``local`` (the gateway's own)
        addresses are bad lines: the daemon never learns those. Removes the temp files of an
        interrupted write first; ``StartError`` when the file cannot be used (see ``check``)."""
        self.check()
        clean_temp_files(self.path)
        try:
            handle = open_regular(self.path)
        except FileNotFoundError:
            return 0
        except OSError as error:
            raise StartError(f"store file {self.path}: {error.strerror or error}") from None
        cutoff = now - self.max_age
        entries: list[Parsed] = []
        room = blocks.cap - len(blocks)
        bad = 0
        with handle:
            for number, raw in enumerate(_lines(handle), 1):
                if len(entries) >= room:
                    log.warn(
                        "{path}:{line}: stopped reading, --max-peers ({cap}) blocks read;"
                        " the rest of the file is dropped",
                        path=self.path,
                        line=number,
                        cap=blocks.cap,
                    )
                    break
                try:
                    entry = self._entry(raw, now, green, local)
                except ValueError as error:
                    bad += 1
                    if bad <= REPORTED_LINES:
                        log.warn("{path}:{line}: {error}", path=self.path, line=number, error=error)
                    continue
                if entry is not None and (entry[4] >= cutoff or entry[3] == MANUAL):
                    entries.append(entry)
        if bad > REPORTED_LINES:
            log.warn(
                "{path}: {count} more bad lines skipped",
                path=self.path,
                count=bad - REPORTED_LINES,
            )
        entries.sort(key=itemgetter(4))  # stable, and linear on a file this class wrote
        add = blocks.add
        for entry in entries:
            add(*entry)
        return len(entries)

    def check(self) -> None:
        """``StartError`` when the store cannot work: its directory is missing or takes no new
        files (every write would fail), or the file is not a regular file."""
        check_writable_dir(self.path, "store file")
        if self.path.exists() and not self.path.is_file():
            raise StartError(f"store file {self.path}: not a regular file")

    def _entry(
        self,
        raw: bytes | None,
        now: float,
        green: GreenNetworks | None,
        local: Collection[bytes],
    ) -> Parsed | None:
        """One line parsed and checked, None for a blank or comment line; ``ValueError``
        says why a line is refused."""
        if raw is None:
            raise ValueError(f"line longer than {MAX_LINE} bytes")
        line = raw.decode("utf-8", errors="replace").strip()
        if not line or line.startswith("#"):
            return None
        entry = _parse(line, self.origins)
        peer, origin, seen = entry[0], entry[3], entry[4]
        if seen > now + CLOCK_SKEW:
            raise ValueError(f"last-seen {seen:.0f} is in the future (now {now:.0f})")
        if origin != MANUAL:
            if green is not None and peer in green:
                raise ValueError(f"peer {_addr_text(peer)} is in the green networks")
            if peer in local:
                raise ValueError(f"peer {_addr_text(peer)} is one of the gateway's addresses")
        return entry

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
    """An empty file named after each locked client's address, removed on release.

    Other programs read the directory to know who is locked, so a create or a removal that
    fails (a full disk, a directory planted under the client's name) is not dropped: it is
    tried again every ``retry_interval`` seconds on ``clock`` until it works, the client is
    released, or the directory is cleared at stop."""

    def __init__(
        self,
        path: str | Path,
        clock: IReactorTime | None = None,
        retry_interval: float = CLIENT_FILE_RETRY,
    ) -> None:
        self.path = Path(path)
        self.clock = clock
        self.retry_interval = retry_interval
        self._pending: dict[bytes, bool] = {}  # client -> file wanted, after a failed try
        self._retry: IDelayedCall | None = None

    def start(self) -> None:
        """Make the directory and clear files left by an earlier run (their locks are gone);
        ``StartError`` when it is not a directory or takes no new files."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise StartError(f"client directory {self.path}: not a directory") from None
        except OSError as error:
            raise StartError(f"client directory {self.path}: {error.strerror or error}") from None
        if not os.access(self.path, os.W_OK | os.X_OK):
            raise StartError(f"client directory {self.path}: cannot create files in it")
        self.clear()

    def clear(self) -> None:
        """Remove every client file (at start and stop) and forget the pending retries."""
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        self._pending.clear()
        try:
            entries = list(self._files())
        except OSError as error:
            log.warn("client directory {path}: {error}", path=self.path, error=error)
            return
        for entry in entries:
            if entry.is_dir() and not entry.is_symlink():
                log.warn("client directory: {path} is a directory, left alone", path=entry)
                continue
            try:
                entry.unlink(missing_ok=True)
            except OSError as error:
                log.warn("client file {path}: {error}", path=entry, error=error.strerror or error)

    def client_locked(self, addr: bytes) -> None:
        self._apply(addr, True)

    def client_released(self, addr: bytes) -> None:
        self._apply(addr, False)

    def retry(self) -> None:
        """Try the failed creates and removals again; those failing still are kept."""
        self._retry = None
        for addr, wanted in list(self._pending.items()):
            self._apply(addr, wanted)

    def _apply(self, addr: bytes, wanted: bool) -> None:
        """Make the client's file exist (``wanted``) or not; on failure, log the first one and
        keep it for ``retry``."""
        target = self.path / addr_text(addr)
        try:
            if wanted:  # O_NONBLOCK: a FIFO planted under the name fails instead of blocking
                flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK
                os.close(os.open(target, flags, 0o644))
            else:
                target.unlink(missing_ok=True)
        except OSError as error:
            if self._pending.get(addr) != wanted:
                reason = error.strerror or error
                log.warn("client file {path}: {error}; trying again", path=target, error=reason)
            self._pending[addr] = wanted
            self._schedule()
            return
        if self._pending.pop(addr, None) is not None:
            log.info("client file {path}: done after a retry", path=target)

    def _schedule(self) -> None:
        if self.clock is not None and self._retry is None:
            self._retry = self.clock.callLater(self.retry_interval, self.retry)

    def _files(self) -> Iterable[Path]:
        for entry in self.path.iterdir():
            try:
                ipaddress.ip_address(entry.name)
            except ValueError:
                continue
            yield entry
