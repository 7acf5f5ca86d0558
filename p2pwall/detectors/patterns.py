"""Load the ``-D`` DNS-training file: which DNS names mark a P2P server.

Why: ftwall blocks WinMX and OpenNAP servers by watching DNS answers; the IPs given for a
name that matches this file join the block list (ftwall v2 man page, DNS AUTO-TRAINING).

File syntax, one entry per line, surrounding whitespace stripped:

* blank lines and lines starting with ``#`` are ignored (a ``#`` later in a line is part
  of the entry, since regexes may contain it);
* a line is a **path** of a ``.wsx`` file or a directory of them when it ends with
  ``.wsx`` (any case), starts with ``/`` or ``./``, or names an existing directory;
  relative paths are taken from the directory holding the patterns file;
* any other line is a **regex** (Python ``re``, which agrees with POSIX ERE on the usual
  ``(^|\\.)winmx\\.com$`` forms but lacks ``[[:alpha:]]`` classes), searched
  case-insensitively anywhere in the name, like ftwall's ``regexec``.

Names are compared lowercased without their trailing dot. Host names from wsx files match
exactly (no subdomains); literal IPs from them are offered in ``ips`` for direct blocking.
A bad regex or wsx file becomes a ``"<file>:<line>: <reason>"`` problem; the rest loads.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

from p2pwall.detectors.wsx import IPAddress, WsxList, load_wsx, normalize_name

WSX_HOST = "wsx host"

# Back-references and conditionals count groups, so they change meaning once the pattern
# sits inside a bigger alternation; such sets are matched one regex at a time instead.
_GROUP_REFERENCE = re.compile(r"\\[1-9]|\(\?P=|\(\?\(")


def _combine(regexes: tuple[re.Pattern[str], ...]) -> re.Pattern[str] | None:
    """One alternation of all regexes: a single search rejects the usual non-matching name."""
    if not regexes or any(_GROUP_REFERENCE.search(rx.pattern) for rx in regexes):
        return None
    try:
        return re.compile("|".join(f"(?:{rx.pattern})" for rx in regexes), re.IGNORECASE)
    except re.error:  # e.g. global inline flags or a group name used twice
        return None


class PatternSet:
    """The names whose DNS answers train the block list, ready for fast matching."""

    __slots__ = ("_any", "_regexes", "ips", "names", "patterns", "problems", "sources")

    def __init__(
        self,
        patterns: Iterable[str] = (),
        names: Iterable[str] = (),
        ips: Iterable[tuple[IPAddress, int]] = (),
        problems: Iterable[str] = (),
        sources: Iterable[str] = (),
    ) -> None:
        """Compile ``patterns`` (valid regexes; ``load_patterns`` weeds out bad ones)."""
        self._regexes = tuple(re.compile(p, re.IGNORECASE) for p in patterns)
        self._any = _combine(self._regexes)
        self.patterns: tuple[str, ...] = tuple(rx.pattern for rx in self._regexes)
        self.names: frozenset[str] = frozenset(normalize_name(n) for n in names)
        self.ips: frozenset[tuple[IPAddress, int]] = frozenset(ips)
        self.problems: tuple[str, ...] = tuple(problems)
        self.sources: tuple[str, ...] = tuple(sources)

    def matches(self, name: str) -> str | None:
        """Return the first pattern (file order) matching ``name``, ``WSX_HOST``, or None."""
        name = normalize_name(name)
        if name in self.names:
            return WSX_HOST
        if self._any is not None and not self._any.search(name):
            return None
        for rx in self._regexes:
            if rx.search(name):
                return rx.pattern
        return None

    def __repr__(self) -> str:
        return (
            f"<PatternSet {len(self.patterns)} patterns, {len(self.names)} names,"
            f" {len(self.ips)} ips, {len(self.problems)} problems>"
        )


def _is_path(entry: str, base: Path) -> bool:
    return (
        entry.lower().endswith(".wsx") or entry.startswith(("/", "./")) or (base / entry).is_dir()
    )


def load_patterns(path: str | os.PathLike[str] | None) -> PatternSet:
    """Read a patterns file; ``None`` (no ``-D``) gives an empty set.

    A missing or unreadable file also gives an empty set, with the reason in ``problems``
    so the daemon can log it instead of failing to start.
    """
    if path is None:
        return PatternSet()
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8", errors="replace")
    except OSError as error:
        return PatternSet(problems=(f"{path}: cannot read: {error.strerror or error}",))
    base = path.parent
    patterns: list[str] = []
    lists: list[WsxList] = []
    problems: list[str] = []
    for number, raw in enumerate(text.splitlines(), 1):
        entry = raw.strip()
        if not entry or entry.startswith("#"):
            continue
        where = f"{path}:{number}"
        if _is_path(entry, base):
            wsx = load_wsx(base / entry)
            problems.extend(f"{where}: {problem}" for problem in wsx.problems)
            lists.append(wsx)
            continue
        try:
            regex = re.compile(entry, re.IGNORECASE)
        except re.error as error:
            problems.append(f"{where}: bad regex {entry!r}: {error}")
            continue
        if regex.search(""):
            problems.append(f"{where}: regex {entry!r} matches an empty name; ignored as too broad")
            continue
        patterns.append(entry)
    wsx = WsxList.merge(lists)
    return PatternSet(patterns, wsx.names, wsx.ips, problems, (str(path), *wsx.sources))
