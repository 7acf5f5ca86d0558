"""Tests for the tolerant WinMX ``.wsx`` parser and loader."""

from __future__ import annotations

import codecs
import os
from ipaddress import ip_address
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from p2pwall.detectors.wsx import DEFAULT_PORT, WsxList, WsxServer, load_wsx, parse_wsx


class ParseWsxTests(SynchronousTestCase):
    """The format rules of docs/protocols.md §3.1."""

    def test_blank_line_ends_entry(self) -> None:
        """Each entry keeps its own P:; a blank line (even of spaces) separates them."""
        result = parse_wsx("N: a.example\nP: 1111\n  \t\nN: b.example\nP: 2222\n")
        self.assertEqual(
            result.servers,
            (WsxServer("a.example", 1111), WsxServer("b.example", 2222)),
        )
        self.assertEqual(result.problems, ())

    def test_default_port(self) -> None:
        """Without P: the port is 8888, also after an entry that had a P:."""
        result = parse_wsx("N: a.example\nP: 1111\n\nN: b.example\n")
        self.assertEqual(result.servers[1], WsxServer("b.example", DEFAULT_PORT))
        self.assertEqual(DEFAULT_PORT, 8888)

    def test_port_override_anywhere_in_entry(self) -> None:
        """P: applies to the whole entry, even when it comes after the addresses."""
        result = parse_wsx("N: Net\nN: a.example\nA: b.example\np:7777\n")
        self.assertEqual({s.port for s in result.servers}, {7777})
        self.assertEqual(len(result.servers), 2)

    def test_port_in_value_beats_p(self) -> None:
        """An N:/A: host:port keeps its own port; P: still covers the others."""
        result = parse_wsx("N: a.example:6666\nN: b.example\nA: 198.18.0.9:5555\nP: 7777\n")
        self.assertEqual(
            result.servers,
            (
                WsxServer("a.example", 6666),
                WsxServer("b.example", 7777),
                WsxServer("198.18.0.9", 5555),
            ),
        )

    def test_names_and_ips_split(self) -> None:
        """A: host names go to names (normalized); literal IPs go to ips with ports."""
        result = parse_wsx("A: Hub.Example.\nA: 198.18.0.1\nA: 2001:db8::5\nP: 9000\n")
        self.assertEqual(result.names, frozenset({"hub.example"}))
        self.assertEqual(
            result.ips,
            frozenset({(ip_address("198.18.0.1"), 9000), (ip_address("2001:db8::5"), 9000)}),
        )

    def test_n_display_names_ignored(self) -> None:
        """N: values that are not host/IP[:port] are names of the network, not servers."""
        result = parse_wsx("N: My OpenNap Network\nN: Napster\nN: opennap.example:8888\n")
        self.assertEqual(result.servers, (WsxServer("opennap.example", 8888),))
        self.assertEqual(result.problems, ())

    def test_kind_from_t(self) -> None:
        """T: is kept (uppercased) as the server kind; NORMAL when absent."""
        result = parse_wsx("T: meta\nN: m.example\n\nN: n.example\n")
        self.assertEqual([s.kind for s in result.servers], ["META", "NORMAL"])

    def test_keys_case_and_spacing(self) -> None:
        """Keys are case-insensitive and the space after ':' is optional."""
        result = parse_wsx("n:a.example\na : b.example\nP:  7000\n")
        self.assertEqual(result.names, frozenset({"a.example", "b.example"}))
        self.assertEqual({s.port for s in result.servers}, {7000})

    def test_crlf(self) -> None:
        """CRLF files parse like LF files: blank CRLF lines end entries, no stray \\r."""
        lf = "N: a.example\nP: 1111\n\nN: b.example\n"
        self.assertEqual(parse_wsx(lf.replace("\n", "\r\n")).servers, parse_wsx(lf).servers)
        self.assertEqual(parse_wsx(lf).names, frozenset({"a.example", "b.example"}))

    def test_garbage_reported_rest_parsed(self) -> None:
        """Bad lines become 'file:line: reason' problems; good lines still count."""
        text = "hello world\nN: a.example\nX: y\nP: abc\nA: not a host\n\nA: b.example\n"
        result = parse_wsx(text, "list.wsx")
        self.assertEqual(
            result.servers,
            (WsxServer("a.example", DEFAULT_PORT), WsxServer("b.example", DEFAULT_PORT)),
        )
        self.assertEqual(
            [p.split(": ")[0] for p in result.problems],
            ["list.wsx:1", "list.wsx:3", "list.wsx:4", "list.wsx:5"],
        )

    def test_empty(self) -> None:
        """Empty or blank text is an empty list without problems."""
        for text in ("", "\n\r\n  \n"):
            result = parse_wsx(text)
            self.assertEqual((result.servers, result.problems), ((), ()))
            self.assertEqual((result.names, result.ips), (frozenset(), frozenset()))

    def test_repeats_dropped(self) -> None:
        """A server listed twice appears once."""
        result = parse_wsx("N: a.example\n\nN: a.example\n")
        self.assertEqual(result.servers, (WsxServer("a.example", DEFAULT_PORT),))


class LoadWsxTests(SynchronousTestCase):
    """Reading files and directories."""

    def _write(self, path: Path, data: bytes) -> Path:
        path.write_bytes(data)
        return path

    def test_latin1_bytes(self) -> None:
        """Bytes invalid as UTF-8 load; 0x85 (NEL in latin-1) does not split a line."""
        path = self._write(Path(self.mktemp()), b"N: a.example\nN: R\xe9seau\x85\nP: 7777\n")
        result = load_wsx(path)
        self.assertEqual(result.servers, (WsxServer("a.example", 7777),))
        self.assertEqual(result.problems, ())
        self.assertEqual(result.sources, (str(path),))

    def test_utf8_bom(self) -> None:
        """A UTF-8 BOM (Notepad) does not hide the first field."""
        path = self._write(Path(self.mktemp()), codecs.BOM_UTF8 + b"A: a.example\n")
        self.assertEqual(load_wsx(path).names, frozenset({"a.example"}))

    def test_directory(self) -> None:
        """Every *.wsx (any case) in a directory loads, sorted; other files are ignored."""
        folder = Path(self.mktemp())
        folder.mkdir()
        self._write(folder / "b.WSX", b"A: b.example\nP: 2222\n")
        self._write(folder / "a.wsx", b"A: a.example\r\n\r\nA: b.example\r\nP: 2222\r\n")
        self._write(folder / "notes.txt", b"A: c.example\n")
        result = load_wsx(str(folder))
        self.assertEqual(result.sources, (str(folder / "a.wsx"), str(folder / "b.WSX")))
        self.assertEqual(
            result.servers, (WsxServer("a.example", 8888), WsxServer("b.example", 2222))
        )

    def test_unreadable_file(self) -> None:
        """A missing file is a problem naming it, not an exception."""
        path = Path(self.mktemp())
        result = load_wsx(path)
        self.assertEqual(result.servers, ())
        self.assertEqual(len(result.problems), 1)
        self.assertTrue(result.problems[0].startswith(f"{path}: cannot read"))

    def test_unreadable_file_in_directory(self) -> None:
        """A bad entry in a directory is reported while the other files load."""
        folder = Path(self.mktemp())
        folder.mkdir()
        (folder / "sub.wsx").mkdir()
        os.symlink(folder / "missing", folder / "dangling.wsx")
        self._write(folder / "ok.wsx", b"A: ok.example\n")
        result = load_wsx(folder)
        self.assertEqual(result.names, frozenset({"ok.example"}))
        self.assertEqual(
            sorted(p.split(":")[0] for p in result.problems),
            [str(folder / "dangling.wsx"), str(folder / "sub.wsx")],
        )

    def test_a_fifo_in_a_directory_is_reported_not_opened(self) -> None:
        """Opening a FIFO blocks until a writer comes: the start would hang."""
        folder = Path(self.mktemp())
        folder.mkdir()
        os.mkfifo(folder / "pipe.wsx")
        self._write(folder / "ok.wsx", b"A: ok.example\n")
        result = load_wsx(folder)
        self.assertEqual(result.names, frozenset({"ok.example"}))
        self.assertEqual(
            result.problems, (f"{folder / 'pipe.wsx'}: cannot read: not a regular file",)
        )

    def test_empty_directory(self) -> None:
        """A directory without lists is reported: the operator probably meant another."""
        folder = Path(self.mktemp())
        folder.mkdir()
        self.assertEqual(load_wsx(folder).problems, (f"{folder}: no .wsx files",))

    def test_merge(self) -> None:
        """Merging keeps order, drops repeated servers and keeps problems and sources."""
        one = WsxList((WsxServer("a.example", 1),), ("p1",), ("s1",))
        two = WsxList((WsxServer("a.example", 1), WsxServer("198.18.0.1", 2)), ("p2",), ("s2",))
        merged = WsxList.merge([one, two])
        self.assertEqual(merged.servers, (WsxServer("a.example", 1), WsxServer("198.18.0.1", 2)))
        self.assertEqual((merged.problems, merged.sources), (("p1", "p2"), ("s1", "s2")))
        self.assertEqual(merged.ips, frozenset({(ip_address("198.18.0.1"), 2)}))
