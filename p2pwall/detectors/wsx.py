"""Read WinMX ``.wsx`` server lists: host names for DNS training, literal IPs to block.

WinMX reaches OpenNAP servers through ``.wsx`` files, so ftwall blocks those servers by
learning the addresses of their names from DNS answers and by blocking the raw IPs listed.
The format has no official spec (docs/protocols.md §3.1), so the parser is tolerant: it keeps
what it can use and reports the rest as ``"file:line: reason"`` problems, never raising.

Rules: lines ``K: value`` with K one of N, P, T, A (any case, optional space after ``:``);
a blank line ends an entry; ``P:`` gives the entry's port (default 8888, the last ``P:``
wins); ``T:`` (NORMAL, META, USE_100_COMMAND) is kept as the server's ``kind``; ``A:`` must
be a host name or IP address, optionally ``:port``; ``N:`` counts only when it parses the
same way, since it is otherwise a display name. A port written in the value beats ``P:``.
"""

from __future__ import annotations

import codecs
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..endpoints import IPAddress, parse_endpoint, parse_ip, parse_port
from ..files import read_regular

DEFAULT_PORT = 8888
DEFAULT_KIND = "NORMAL"

_FIELD = re.compile(r"([A-Za-z]+)\s*:(.*)")
_KEYS = frozenset("NPTA")


@dataclass(frozen=True)
class WsxServer:
    """One server address: a host name or literal IP (canonical text); ``kind`` is ``T:``."""

    host: str
    port: int
    kind: str = DEFAULT_KIND


@dataclass(frozen=True)
class WsxList:
    """Servers from one or more lists, split into DNS names and literal IPs.

    ``ips`` holds ``(address, port)`` pairs, because literal IPs go straight to the block
    list; ``names`` holds normalized host names for DNS training; ``sources`` the files read.
    """

    servers: tuple[WsxServer, ...] = ()
    problems: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    ips: frozenset[tuple[IPAddress, int]] = field(init=False, repr=False, compare=False)
    names: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        ips = set()
        names = set()
        for server in self.servers:
            address = parse_ip(server.host)
            if address is None:
                names.add(server.host)
            else:
                ips.add((address, server.port))
        object.__setattr__(self, "ips", frozenset(ips))
        object.__setattr__(self, "names", frozenset(names))

    @classmethod
    def merge(cls, lists: Iterable[WsxList]) -> WsxList:
        """Combine lists in order, dropping repeated servers (a server is in many files)."""
        servers: dict[WsxServer, None] = {}
        problems: list[str] = []
        sources: list[str] = []
        for wsx in lists:
            servers.update(dict.fromkeys(wsx.servers))
            problems.extend(wsx.problems)
            sources.extend(wsx.sources)
        return cls(tuple(servers), tuple(problems), tuple(sources))


class _Entry:
    """The lines of one blank-line-separated entry, resolved when the entry ends."""

    def __init__(self) -> None:
        self.candidates: list[tuple[str, str, int]] = []
        self.port = DEFAULT_PORT
        self.kind = DEFAULT_KIND

    def servers(self, source: str, problems: list[str]) -> list[WsxServer]:
        found = []
        for key, value, number in self.candidates:
            endpoint = parse_endpoint(value)
            if endpoint is None:
                if key == "A":
                    problems.append(f"{source}:{number}: A: {value!r} is not a host or IP address")
                continue
            host, port = endpoint
            found.append(WsxServer(str(host), self.port if port is None else port, self.kind))
        return found


def parse_wsx(text: str, source: str = "<wsx>") -> WsxList:
    """Parse the text of one ``.wsx`` file; ``source`` names it in problem messages."""
    servers: dict[WsxServer, None] = {}
    problems: list[str] = []
    entry = _Entry()
    # Split on "\n" only: str.splitlines() would also split on latin-1 0x85 and 0x1c-0x1e.
    for number, raw in enumerate(text.removeprefix("\ufeff").split("\n"), 1):
        line = raw.strip()
        if not line:
            servers.update(dict.fromkeys(entry.servers(source, problems)))
            entry = _Entry()
            continue
        match = _FIELD.fullmatch(line)
        key = match[1].upper() if match else ""
        if key not in _KEYS:
            problems.append(f"{source}:{number}: not a N:/P:/T:/A: line: {line[:60]!r}")
            continue
        value = match[2].strip()
        if key == "P":
            port = parse_port(value)
            if port is None:
                problems.append(f"{source}:{number}: bad port {value!r}, using {entry.port}")
            else:
                entry.port = port
        elif key == "T":
            entry.kind = value.upper() or DEFAULT_KIND
        else:
            entry.candidates.append((key, value, number))
    servers.update(dict.fromkeys(entry.servers(source, problems)))
    return WsxList(tuple(servers), tuple(problems))


def _load_file(path: Path) -> WsxList:
    try:
        data = read_regular(path)
    except OSError as error:
        return WsxList(problems=(f"{path}: cannot read: {error.strerror or error}",))
    # Notepad may save UTF-8 with a BOM; as latin-1 it would garble the first field.
    data = data.removeprefix(codecs.BOM_UTF8)
    return replace(parse_wsx(data.decode("latin-1"), str(path)), sources=(str(path),))


def load_wsx(path: str | os.PathLike[str]) -> WsxList:
    """Load a ``.wsx`` file, or every ``*.wsx`` file (any case) in a directory, sorted.

    Read errors become problems, so one bad file never stops the daemon's start.
    """
    path = Path(path)
    if not path.is_dir():
        return _load_file(path)
    try:
        files = sorted(p for p in path.iterdir() if p.suffix.lower() == ".wsx")
    except OSError as error:
        return WsxList(problems=(f"{path}: cannot list: {error.strerror or error}",))
    if not files:
        return WsxList(problems=(f"{path}: no .wsx files",))
    return WsxList.merge(_load_file(p) for p in files)
