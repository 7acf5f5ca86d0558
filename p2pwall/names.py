"""Banned DNS names (``ban-dns-name``), kept in a file so they survive a restart.

A ban from an admin or the Napigator tracker is as lasting as a manual block: the tracker only
sends what changed since its last run, so a ban the daemon forgot would never come back. The
file is small (one name a line) and rewritten atomically on every change.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from twisted.logger import Logger

from .endpoints import normalize_name
from .errors import StartError
from .files import read_regular
from .store import clean_temp_files, write_atomically

log = Logger()

HEADER = "# p2pwall banned DNS names (ban-dns-name), one a line\n"


class BannedNames:
    """A set of normalized names; with a ``path``, loaded at start and saved on each change."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self._names: set[str] = set()

    def load(self) -> int:
        """Read the file, after removing the temp files of an interrupted write; a file that
        exists but cannot be read (a directory, a FIFO, no permission) is a ``StartError``:
        the first ban would otherwise replace it and lose the names in it."""
        if self.path is None:
            return 0
        clean_temp_files(self.path)
        try:
            text = read_regular(self.path).decode("utf-8", errors="replace")
        except FileNotFoundError:
            return 0
        except OSError as error:
            raise StartError(f"banned names file {self.path}: {error.strerror or error}") from None
        for line in text.splitlines():
            line = line.strip()
            if line and not line.startswith("#") and " " not in line:
                self._names.add(normalize_name(line))
        return len(self._names)

    def add(self, name: str) -> None:
        if name not in self._names:
            self._names.add(name)
            self._save()

    def discard(self, name: str) -> None:
        if name in self._names:
            self._names.discard(name)
            self._save()

    def __contains__(self, name: object) -> bool:
        return name in self._names

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._names))

    def __len__(self) -> int:
        return len(self._names)

    def _save(self) -> None:
        if self.path is None:
            return
        try:
            write_atomically(self.path, HEADER + "".join(f"{name}\n" for name in self))
        except OSError as error:
            log.error("writing {path} failed: {error}", path=self.path, error=error)
