"""Tests for OpenNAP server-list parsing and format detection."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from p2pwall.tools.serverlist import (
    HTML,
    NAPIGATOR,
    NAPIGATOR_14,
    UNKNOWN,
    WSX,
    ServerEntry,
    detect_format,
    parse_server_list,
)

NAPIGATOR_TEXT = """\
HTTP/1.0 200 OK
Content-Type: text/plain

198.18.0.1 8888 ExampleNet 120 34000 150.5
198.18.0.2 7777 TestNet 80 12000 40
198.18.0.3 notaport TestNet 1 2 3
not-an-ip 8888 TestNet 1 2 3
2 200 46000 190
198.18.0.9 8888 AfterTotals 1 2 3
"""

NAPIGATOR_14_TEXT = (
    "1 198.18.0.1 8888 ExampleNet 0 120 34000 150 opennap1.example 0 0 0"
    " admin@opennap1.example http://opennap1.example/\r\n"
    "2 198.18.0.2 7777 TestNet 0 80 12000 40 198.18.0.2 0 0 0 - -\r\n"
    "3 198.18.0.3 7777 TestNet 0 1 2 3 - 0 0 0 - -\r\n"
    "3 300 46000 190\r\n"
    "4 198.18.0.4 8888 AfterTotals 0 1 2 3 late.example 0 0 0 - -\r\n"
)

HTML_TEXT = """\
<html><body><h1>OpenNap servers</h1>
<![CDATA[ junk ]]>
<table border=1>
<tr><th>Server</th><th>IP</th><th>Port</th><th>Network</th><th>Users</th></tr>
<tr><td><a href="x">Example &amp; Co</a></td><td>198.18.0.1</td><td>8888</td>
    <td> Example
    Net </td><td>120</td></tr>
<TR><TD>Test hub</TD><TD>Hub.Example</TD><TD>7777</TD><TD></TD></TR>
<tr><td>broken</td><td>198.18.0.5</td><td>eighty</td><td>X</td></tr>
<tr><td>short</td><td>198.18.0.6</td></tr>
<tr><td>unclosed</td><td>198.18.0.7<td>6666<td>Open
</table></body></html>
"""


class DetectFormatTests(SynchronousTestCase):
    """Auto-detection picks the right parser."""

    def test_formats(self) -> None:
        """Each sample is recognised; garbage and empty text are unknown."""
        self.assertEqual(detect_format(NAPIGATOR_TEXT), NAPIGATOR)
        self.assertEqual(detect_format(NAPIGATOR_14_TEXT), NAPIGATOR_14)
        self.assertEqual(detect_format(HTML_TEXT), HTML)
        self.assertEqual(detect_format("N: Net\nN: a.example\nP: 8888\n"), WSX)
        self.assertEqual(detect_format(""), UNKNOWN)
        self.assertEqual(detect_format("hello world\n1 2 3 4 5 6\n"), UNKNOWN)


class ParseServerListTests(SynchronousTestCase):
    """Each format parses to entries; garbage is skipped."""

    def test_napigator(self) -> None:
        """6-token lines parse; headers and bad lines are skipped; totals end the list."""
        self.assertEqual(
            parse_server_list(NAPIGATOR_TEXT),
            [
                ServerEntry("198.18.0.1", 8888, "ExampleNet"),
                ServerEntry("198.18.0.2", 7777, "TestNet"),
            ],
        )

    def test_napigator_14(self) -> None:
        """14-token lines give the IP and, when usable, the host name; totals end the list."""
        self.assertEqual(
            parse_server_list(NAPIGATOR_14_TEXT),
            [
                ServerEntry("198.18.0.1", 8888, "ExampleNet"),
                ServerEntry("opennap1.example", 8888, "ExampleNet"),
                ServerEntry("198.18.0.2", 7777, "TestNet"),
                ServerEntry("198.18.0.3", 7777, "TestNet"),
            ],
        )

    def test_html(self) -> None:
        """Rows of name, host, port, network parse; header and broken rows do not."""
        self.assertEqual(
            parse_server_list(HTML_TEXT),
            [
                ServerEntry("198.18.0.1", 8888, "Example Net"),
                ServerEntry("hub.example", 7777, None),
                ServerEntry("198.18.0.7", 6666, "Open"),
            ],
        )

    def test_html_unterminated(self) -> None:
        """A page cut off inside a row still yields that row."""
        text = "<table><tr><td>n</td><td>198.18.0.8</td><td>8888</td><td>Net"
        self.assertEqual(parse_server_list(text), [ServerEntry("198.18.0.8", 8888, "Net")])

    def test_wsx(self) -> None:
        """A .wsx text gives its servers without a network."""
        text = "N: Net\r\nN: a.example\r\nP: 7777\r\n\r\nA: 198.18.0.1\r\n"
        self.assertEqual(
            parse_server_list(text),
            [ServerEntry("a.example", 7777), ServerEntry("198.18.0.1", 8888)],
        )

    def test_repeats_dropped(self) -> None:
        """A server listed twice is returned once."""
        line = "198.18.0.1 8888 Net 1 2 3\n"
        self.assertEqual(parse_server_list(line * 3), [ServerEntry("198.18.0.1", 8888, "Net")])

    def test_garbage(self) -> None:
        """Garbage never raises and yields nothing."""
        for text in ("", "\x00\xff<><", "<table><tr><td>x", "<![ bogus <tr", "1 2 3 4\n"):
            self.assertEqual(parse_server_list(text), [], repr(text))
