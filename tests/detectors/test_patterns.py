"""Tests for the ``-D`` patterns file and the shipped ``conf/dns-patterns.conf``."""

from __future__ import annotations

import os
import time
from ipaddress import ip_address, ip_network
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from p2pwall.detectors.patterns import WSX_HOST, PatternSet, load_patterns
from p2pwall.detectors.wsx import load_wsx

CONF = Path(__file__).resolve().parents[2] / "conf"
WINMX = r"(^|\.)winmx\.com$"


class PatternSetTests(SynchronousTestCase):
    """Matching names against regexes and wsx hosts."""

    def test_case_insensitive_and_trailing_dot(self) -> None:
        """Neither the pattern's nor the name's case matters; a trailing dot is ignored."""
        patterns = PatternSet([r"(^|\.)WinMX\.COM$"])
        self.assertEqual(patterns.matches("WWW.winmx.com."), r"(^|\.)WinMX\.COM$")
        self.assertIsNone(patterns.matches("winmx.com.evil.test"))
        self.assertIsNone(patterns.matches("notwinmx.com"))

    def test_first_pattern_in_file_order(self) -> None:
        """When several patterns match, the earliest one is reported."""
        patterns = PatternSet([r"\.test$", r"^a\."])
        self.assertEqual(patterns.matches("a.test"), r"\.test$")
        self.assertEqual(patterns.matches("a.example"), r"^a\.")

    def test_patterns_that_cannot_be_combined(self) -> None:
        """Repeated group names cannot share one alternation; they still match one by one."""
        patterns = PatternSet([WINMX, r"(?P<n>a)\.test$", r"(?P<n>b)\.test$"])
        self.assertEqual(patterns.matches("b.test"), r"(?P<n>b)\.test$")
        self.assertEqual(patterns.matches("www.winmx.com"), WINMX)
        self.assertIsNone(patterns.matches("c.test"))

    def test_posix_classes(self) -> None:
        """RE2 has the POSIX ERE classes ftwall's patterns may use."""
        patterns = PatternSet([r"^cache[[:digit:]]+\.[[:alpha:]]+\.test$"])
        self.assertIsNotNone(patterns.matches("CACHE7.winmx.test"))
        self.assertIsNone(patterns.matches("cachex.winmx.test"))

    def test_catastrophic_pattern_takes_linear_time(self) -> None:
        """``(a+)+$`` backtracks exponentially in Python's ``re`` (seconds at 26 letters, for
        ever at 253); RE2 answers in microseconds, so a hostile DNS name cannot stall the
        reactor. The bound is loose: the old engine takes seconds on the short name."""
        patterns = PatternSet([r"(a+)+$", r"^(a|aa)+$", r"(x+x+)+y"])
        for name in ("a" * 26 + "!", "a" * 252 + "!", "x" * 253):
            started = time.perf_counter()
            self.assertIsNone(patterns.matches(name))
            self.assertLess(time.perf_counter() - started, 0.5, name[:30])

    def test_wsx_names_exact(self) -> None:
        """wsx host names match exactly, whatever the case, but not their subdomains."""
        patterns = PatternSet(names=["Hub.Example."])
        self.assertEqual(patterns.matches("HUB.example."), WSX_HOST)
        self.assertIsNone(patterns.matches("x.hub.example"))

    def test_empty(self) -> None:
        """An empty set matches nothing."""
        self.assertIsNone(PatternSet().matches("www.winmx.com"))


class LoadPatternsTests(SynchronousTestCase):
    """Reading the file: entries, paths, comments and problems."""

    def _conf(self, text: str) -> Path:
        folder = Path(self.mktemp())
        folder.mkdir()
        path = folder / "dns-patterns.conf"
        path.write_text(text)
        return path

    def test_bad_regex_reported_rest_loads(self) -> None:
        """A bad regex is reported with file:line; the lines after it still load."""
        path = self._conf("# header\n(unclosed\n" + WINMX + "\n")
        patterns = load_patterns(path)
        self.assertEqual(patterns.patterns, (WINMX,))
        self.assertEqual(len(patterns.problems), 1)
        self.assertTrue(patterns.problems[0].startswith(f"{path}:2: bad regex '(unclosed'"))
        self.assertEqual(patterns.matches("www.winmx.com"), WINMX)

    def test_regexes_outside_re2_reported_rest_loads(self) -> None:
        """Back-references, look-arounds and (?x) need a backtracking engine: reported."""
        path = self._conf("(ab)\\1\\.test$\n(?=x)y\n(?x) w i n\n" + WINMX + "\n")
        patterns = load_patterns(path)
        self.assertEqual(patterns.patterns, (WINMX,))
        self.assertEqual(
            [p.split(": bad regex ")[0] for p in patterns.problems],
            [f"{path}:1", f"{path}:2", f"{path}:3"],
        )
        self.assertIn("(RE2 syntax): invalid escape sequence", patterns.problems[0])

    def test_nul_byte_reported_rest_loads(self) -> None:
        """A NUL byte cannot be in a path (it used to raise out of the loader)."""
        path = self._conf("./lists\0/a.wsx\nx\0y\n" + WINMX + "\n")
        patterns = load_patterns(path)
        self.assertEqual(patterns.patterns, (WINMX,))
        self.assertEqual(
            patterns.problems,
            (
                f"{path}:1: a NUL byte in the line; ignored",
                f"{path}:2: a NUL byte in the line; ignored",
            ),
        )

    def test_long_regex_line_is_not_a_path(self) -> None:
        """A regex longer than a file name may be is still a regex (is_dir used to raise)."""
        long = "(^|\\.)" + "a" * 300 + "\\.test$"
        patterns = load_patterns(self._conf(long + "\n"))
        self.assertEqual((patterns.patterns, patterns.problems), ((long,), ()))

    def test_fifo_path_reported_not_opened(self) -> None:
        """Opening a FIFO blocks until a writer comes: a path line naming one is a problem."""
        folder = Path(self.mktemp()).resolve()
        folder.mkdir()
        os.mkfifo(folder / "pipe.wsx")
        os.mkfifo(folder / "pipe")
        path = self._conf(f"{folder}/pipe.wsx\n{folder}/pipe\n" + WINMX + "\n")
        patterns = load_patterns(path)
        self.assertEqual(patterns.patterns, (WINMX,))
        self.assertEqual(
            patterns.problems,
            tuple(
                f"{path}:{line}: '{folder}/{name}' is not a file or a directory; ignored"
                for line, name in ((1, "pipe.wsx"), (2, "pipe"))
            ),
        )

    def test_fifo_as_the_patterns_file(self) -> None:
        """-D naming a FIFO is reported at once instead of blocking the start."""
        path = Path(self.mktemp())
        os.mkfifo(path)
        patterns = load_patterns(path)
        self.assertEqual(patterns.problems, (f"{path}: cannot read: not a regular file",))
        self.assertEqual(patterns.sources, ())

    def test_too_broad_regex_rejected(self) -> None:
        """A regex matching the empty name would match every answer, so it is refused."""
        path = self._conf("winmx|\n")
        patterns = load_patterns(path)
        self.assertEqual(patterns.patterns, ())
        self.assertIsNone(patterns.matches("www.example.com"))
        self.assertTrue(patterns.problems[0].startswith(f"{path}:1: "))

    def test_comments_blank_lines_whitespace(self) -> None:
        """Comment lines are not patterns; entries are stripped of surrounding space."""
        path = self._conf("# (^|\\.)evil\\.test$\n\n   \t\n   (^|\\.)good\\.test$   \n")
        patterns = load_patterns(path)
        self.assertEqual(patterns.patterns, (r"(^|\.)good\.test$",))
        self.assertIsNone(patterns.matches("evil.test"))
        self.assertEqual(patterns.problems, ())

    def test_wsx_path_relative_to_conf(self) -> None:
        """A relative .wsx path is read from the conf file's directory, not the cwd."""
        path = self._conf("lists/PUBLIC 20050428.wsx\n")
        (path.parent / "lists").mkdir()
        wsx = path.parent / "lists" / "PUBLIC 20050428.wsx"
        wsx.write_bytes(b"A: hub.example\r\nA: 198.18.0.1\r\nP: 7777\r\n")
        patterns = load_patterns(path)
        self.assertEqual(patterns.problems, ())
        self.assertEqual(patterns.names, frozenset({"hub.example"}))
        self.assertEqual(patterns.ips, frozenset({(ip_address("198.18.0.1"), 7777)}))
        self.assertEqual(patterns.sources, (str(path), str(wsx)))
        self.assertEqual(patterns.matches("hub.example."), WSX_HOST)

    def test_directory_of_wsx(self) -> None:
        """An existing directory, with or without './', loads all its lists."""
        for entry in ("lists", "./lists/"):
            path = self._conf(entry + "\n")
            (path.parent / "lists").mkdir()
            (path.parent / "lists" / "a.wsx").write_bytes(b"A: a.example\n")
            (path.parent / "lists" / "b.wsx").write_bytes(b"A: b.example\n")
            patterns = load_patterns(path)
            self.assertEqual(patterns.names, frozenset({"a.example", "b.example"}), entry)
            self.assertEqual(patterns.patterns, (), entry)

    def test_unreadable_wsx_reported_rest_loads(self) -> None:
        """A missing list is a file:line problem; the other lines still load."""
        path = self._conf("./missing/\ngone.wsx\n" + WINMX + "\n")
        patterns = load_patterns(path)
        self.assertEqual(patterns.patterns, (WINMX,))
        self.assertEqual([p.split(": ")[0] for p in patterns.problems], [f"{path}:1", f"{path}:2"])
        self.assertIn("cannot read", patterns.problems[1])

    def test_absent_file(self) -> None:
        """A missing file gives an empty set and says why; None gives a silent empty set."""
        missing = load_patterns(Path(self.mktemp()))
        self.assertEqual(
            (missing.patterns, missing.names, missing.ips), ((), frozenset(), frozenset())
        )
        self.assertEqual(len(missing.problems), 1)
        self.assertIsNone(missing.matches("www.winmx.com"))
        nothing = load_patterns(None)
        self.assertEqual((nothing.patterns, nothing.problems, nothing.sources), ((), (), ()))

    def test_empty_file(self) -> None:
        """An empty file loads cleanly and matches nothing."""
        path = self._conf("")
        patterns = load_patterns(path)
        self.assertEqual((patterns.patterns, patterns.problems), ((), ()))
        self.assertEqual(patterns.sources, (str(path),))


class ShippedConfTests(SynchronousTestCase):
    """``conf/dns-patterns.conf`` and the sample lists in ``conf/wsx``."""

    def setUp(self) -> None:
        self.patterns = load_patterns(CONF / "dns-patterns.conf")

    def test_loads_cleanly(self) -> None:
        """No problems, and the sample directory is read."""
        self.assertEqual(self.patterns.problems, ())
        self.assertIn(str(CONF / "wsx" / "PUBLIC 20050428.wsx"), self.patterns.sources)

    def test_winmx_names(self) -> None:
        """WinMX's own and the community cache domains match, look-alikes do not."""
        for name in (
            "www.WinMX.com.",
            "winmx.com",
            "c3313.z1303.winmx.com",
            "cache7.winmxgroup.com",
            "cache0.winmxgroup.net.",
        ):
            self.assertIsNotNone(self.patterns.matches(name), name)
        self.assertEqual(self.patterns.matches("www.WinMX.com."), WINMX)
        for name in ("winmx.com.evil.test", "notwinmx.com", "winmxgroup.org", "www.kazaa.com"):
            self.assertIsNone(self.patterns.matches(name), name)

    def test_sample_lists(self) -> None:
        """Sample hosts match exactly, and the samples use only reserved names and IPs."""
        self.assertEqual(self.patterns.matches("OpenNap1.Example."), WSX_HOST)
        self.assertIn((ip_address("198.18.0.10"), 7777), self.patterns.ips)
        benchmark = ip_network("198.18.0.0/15")
        self.assertTrue(all(ip in benchmark for ip, _ in self.patterns.ips))
        self.assertTrue(
            all(n.rsplit(".", 1)[1] in ("example", "test", "invalid") for n in self.patterns.names)
        )

    def test_samples_cover_formats(self) -> None:
        """At least one sample uses CRLF, and every sample parses without problems."""
        files = sorted((CONF / "wsx").glob("*.wsx"))
        self.assertGreaterEqual(len(files), 2)
        self.assertTrue(any(b"\r\n" in f.read_bytes() for f in files))
        for f in files:
            self.assertEqual(load_wsx(f).problems, (), f)
