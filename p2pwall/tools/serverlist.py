"""Parse OpenNAP server lists, whatever format a list site served.

Why: ftwall blocked OpenNAP by being told every server (``get-napigator-wsx.pl``); the
``p2pwall-napigator`` tool turns such a list into names and IPs to block. Napigator is gone
and its successors used other formats, so the format is detected, not configured:

* ``napigator``: ``<ip> <port> <network> <users> <files> <gigs>`` lines, ending with a
  4-number totals line (TekNap ``parse_napigator``, old ``servers.php``);
* ``napigator-14``: ``<?> <ip> <port> <network> <?> <users> <files> <gigs> <hostname>
  <?> <?> <?> <email> <www>`` lines, same totals line (later ``client1.napigator.com``);
* ``html``: table rows starting with name, IP or host, port, network (mldonkey napigator);
* ``wsx``: WinMX server lists.

Lines or rows that fit no rule (HTTP headers, headings, garbage) are skipped silently.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from html.parser import HTMLParser

from ..detectors.wsx import parse_wsx
from ..endpoints import parse_endpoint, parse_port

NAPIGATOR = "napigator"
NAPIGATOR_14 = "napigator-14"
HTML = "html"
WSX = "wsx"
UNKNOWN = "unknown"

_NUMBER = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")
_HTML_TAG = re.compile(r"<\s*(?:table|tr|td)\b", re.IGNORECASE)
_WSX_FIELD = re.compile(r"\s*[NPTAnpta]\s*:")


@dataclass(frozen=True)
class ServerEntry:
    """One server: a host name or literal IP (as text), its port, and network if listed."""

    host: str
    port: int
    network: str | None = None


def _entries(hosts: list[str], port_text: str, network: str) -> list[ServerEntry]:
    """Entries for the usable hosts, or none when the port is bad."""
    port = parse_port(port_text)
    if port is None:
        return []
    found = []
    for text in hosts:
        endpoint = parse_endpoint(text)
        if endpoint is not None:
            found.append(ServerEntry(str(endpoint[0]), port, network or None))
    return found


def _numbers(tokens: list[str]) -> bool:
    return all(_NUMBER.fullmatch(token) for token in tokens)


def _text_line(tokens: list[str]) -> tuple[str, list[ServerEntry]] | None:
    """Classify a Napigator text line and parse it; None when it is no server line.

    A 14-token line yields the IP and the host name, so both the block list and DNS
    training learn the server.
    """
    if len(tokens) == 6 and _numbers(tokens[3:6]):
        return NAPIGATOR, _entries([tokens[0]], tokens[1], tokens[2])
    if len(tokens) == 14 and _numbers(tokens[5:8]):
        return NAPIGATOR_14, _entries([tokens[1], tokens[8]], tokens[2], tokens[3])
    return None


def _is_totals(tokens: list[str]) -> bool:
    return len(tokens) == 4 and _numbers(tokens)


class _TableRows(HTMLParser):
    """Collect the text of each table row's cells; tolerant of unclosed tags."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.rows: list[list[str]] = []
        self._row: list[str] | None = None
        self._cell: list[str] | None = None

    def _end_cell(self) -> None:
        if self._cell is not None and self._row is not None:
            self._row.append(" ".join("".join(self._cell).split()))
        self._cell = None

    def _end_row(self) -> None:
        self._end_cell()
        if self._row:
            self.rows.append(self._row)
        self._row = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "tr":
            self._end_row()
            self._row = []
        elif tag in ("td", "th"):
            self._end_cell()
            if self._row is None:
                self._row = []
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th"):
            self._end_cell()
        elif tag in ("tr", "table"):
            self._end_row()

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)

    def close(self) -> None:
        super().close()
        self._end_row()


def _parse_html(text: str) -> list[ServerEntry]:
    parser = _TableRows()
    # html.parser raises AssertionError on malformed "<![" marked sections; a list never
    # needs CDATA, so such text is fed as plain text.
    parser.feed(text.replace("<![", "&lt;!["))
    parser.close()
    found = []
    for row in parser.rows:
        if len(row) >= 4:
            found.extend(_entries([row[1]], row[2], row[3]))
    return found


def detect_format(text: str) -> str:
    """Name the list's format (``napigator``, ``napigator-14``, ``html``, ``wsx``, ``unknown``).

    Any table tag means HTML; otherwise the kind of line seen most often wins.
    """
    if _HTML_TAG.search(text):
        return HTML
    votes: Counter[str] = Counter()
    for line in text.split("\n"):
        tokens = line.split()
        parsed = _text_line(tokens)
        if parsed is not None and parsed[1]:
            votes[parsed[0]] += 1
        elif _WSX_FIELD.match(line):
            votes[WSX] += 1
        elif _is_totals(tokens):
            break
    return votes.most_common(1)[0][0] if votes else UNKNOWN


def parse_server_list(text: str) -> list[ServerEntry]:
    """Return the servers in ``text`` in order, without repeats; never raises on bad input."""
    kind = detect_format(text)
    found: list[ServerEntry] = []
    if kind == HTML:
        found = _parse_html(text)
    elif kind == WSX:
        found = [ServerEntry(s.host, s.port) for s in parse_wsx(text).servers]
    elif kind != UNKNOWN:
        for line in text.split("\n"):
            tokens = line.split()
            if _is_totals(tokens):
                break
            parsed = _text_line(tokens)
            if parsed is not None and parsed[0] == kind:
                found.extend(parsed[1])
    return list(dict.fromkeys(found))
