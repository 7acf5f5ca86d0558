"""Load the ``-D`` DNS-training file: which DNS names mark a P2P server.

Why: ftwall blocks WinMX and OpenNAP servers by watching DNS answers; the IPs given for a
name that matches this file join the block list (ftwall v2 man page, DNS AUTO-TRAINING).

File syntax, one entry per line, surrounding whitespace stripped:

* blank lines and lines starting with ``#`` are ignored (a ``#`` later in a line is part
  of the entry, since regexes may contain it);
* a line is a **path** of a ``.wsx`` file or a directory of them when it ends with
  ``.wsx`` (any case), starts with ``/`` or ``./``, or names an existing directory;
  relative paths are taken from the directory holding the patterns file;
* any other line is a **regex** in RE2 syntax (google-re2), searched case-insensitively
  anywhere in the name, like ftwall's ``regexec``. RE2 agrees with POSIX ERE on the usual
  ``(^|\\.)winmx\\.com$`` forms and has ``[[:alpha:]]`` classes; it matches in time linear in
  the name, so no pattern can stall the daemon on a hostile name (Python's ``re`` takes
  exponential time on ``(a+)+$``). Back-references, look-arounds and ``(?x)`` are not RE2:
  such a line is reported.

Names are compared lowercased without their trailing dot. Host names from wsx files match
exactly (no subdomains); literal IPs from them are offered in ``ips`` for direct blocking.
A bad regex or wsx file, a line with a NUL byte, or a path naming something other than a
file or a directory (a FIFO would block the reader) becomes a ``"<file>:<line>: <reason>"``
problem; the rest loads.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import re2

from p2pwall.detectors.wsx import WsxList, load_wsx
from p2pwall.endpoints import IPAddress, normalize_name
from p2pwall.files import is_special, read_regular

WSX_HOST = "wsx host"

_OPTIONS = re2.Options()
_OPTIONS.case_sensitive = False
_OPTIONS.log_errors = False  # a bad pattern is a reported problem, not noise on stderr

Regex = Any  # re2's compiled pattern (the module has no type stubs)


def compile_pattern(pattern: str) -> Regex:
    """``pattern`` compiled case-insensitively by RE2; ``re2.error`` when RE2 rejects it."""
    return re2.compile(pattern, _OPTIONS)


def _reason(error: re2.error) -> str:
    """RE2's message, which it gives as bytes."""
    reason = error.args[0] if error.args else error
    return reason.decode("utf-8", "replace") if isinstance(reason, bytes) else str(reason)


def _combine(regexes: tuple[Regex, ...]) -> Regex | None:
    """One alternation of all regexes: a single search rejects the usual non-matching name."""
    if not regexes:
        return None
    try:
        return compile_pattern("|".join(f"(?:{rx.pattern})" for rx in regexes))
    except re2.error:  # e.g. a group name used twice
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
        self._regexes = tuple(compile_pattern(p) for p in patterns)
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
    return entry.lower().endswith(".wsx") or entry.startswith(("/", "./")) or _is_dir(base / entry)


def _is_dir(path: Path) -> bool:
    """``Path.is_dir`` raises for a name too long or a directory it may not search: a long
    regex line is not a path."""
    try:
        return path.is_dir()
    except OSError:
        return False


def load_patterns(path: str | os.PathLike[str] | None) -> PatternSet:
    """Read a patterns file; ``None`` (no ``-D``) gives an empty set.

    A missing or unreadable file also gives an empty set, with the reason in ``problems``
    so the daemon can log it instead of failing to start.
    """
    if path is None:
        return PatternSet()
    path = Path(path)
    try:
        text = read_regular(path).decode("utf-8", errors="replace")
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
        if "\0" in entry:
            problems.append(f"{where}: a NUL byte in the line; ignored")
            continue
        if _is_path(entry, base):
            if is_special(base / entry):
                problems.append(f"{where}: {entry!r} is not a file or a directory; ignored")
                continue
            wsx = load_wsx(base / entry)
            problems.extend(f"{where}: {problem}" for problem in wsx.problems)
            lists.append(wsx)
            continue
        try:
            regex = compile_pattern(entry)
        except re2.error as error:
            problems.append(f"{where}: bad regex {entry!r} (RE2 syntax): {_reason(error)}")
            continue
        if regex.search(""):
            problems.append(f"{where}: regex {entry!r} matches an empty name; ignored as too broad")
            continue
        patterns.append(entry)
    wsx = WsxList.merge(lists)
    return PatternSet(patterns, wsx.names, wsx.ips, problems, (str(path), *wsx.sources))
