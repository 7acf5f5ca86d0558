"""p2pwall-napigator against a control port and a web server, both on loopback; the lists are
fixture files, and name lookups go to a fake resolver, so nothing leaves the machine."""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Callable
from io import StringIO
from pathlib import Path

from twisted.internet import defer, reactor, task
from twisted.internet.protocol import ProcessProtocol
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.server import Site
from twisted.web.static import File

from p2pwall.commands import Controller
from p2pwall.control import ControlFactory
from p2pwall.testing import make_engine, packed
from p2pwall.tools.napigator import load_state, napigator, parse_args, wanted
from p2pwall.tools.serverlist import ServerEntry

from .test_ctl import ROOT, closed_port, run_script

FIXTURES = Path(__file__).parent / "fixtures"
HUB1 = {"hub1.example.org": ["198.51.100.7", "2001:db8::7"]}


def resolver(table: dict[str, list[str]]) -> Callable[[str], list[str]]:
    def resolve(name: str) -> list[str]:
        if name not in table:
            raise OSError(f"no address for {name}")
        return table[name]

    return resolve


def no_lookups(name: str) -> list[str]:
    raise AssertionError(f"looked up {name}")


class WantedTests(SynchronousTestCase):
    def test_literal_ips_names_and_lookups(self) -> None:
        entries = [
            ServerEntry("203.0.113.10", 8888),
            ServerEntry("2001:db8::40", 6699),
            ServerEntry("hub1.example.org", 7777),
        ]
        self.assertEqual(
            wanted(entries, HUB1, {}),
            {
                "block 203.0.113.10:8888": "203.0.113.10",
                "block [2001:db8::40]:6699": "2001:db8::40",
                "ban-dns-name hub1.example.org": "hub1.example.org",
                "block 198.51.100.7:7777": "hub1.example.org",
                "block [2001:db8::7]:7777": "hub1.example.org",
            },
        )

    def test_failed_lookup_keeps_earlier_blocks(self) -> None:
        previous = {
            "block 198.51.100.7:7777": "hub1.example.org",
            "ban-dns-name hub1.example.org": "hub1.example.org",
            "block 198.51.100.9:7777": "other.example.org",
        }
        self.assertEqual(
            wanted([ServerEntry("hub1.example.org", 7777)], {"hub1.example.org": None}, previous),
            {
                "ban-dns-name hub1.example.org": "hub1.example.org",
                "block 198.51.100.7:7777": "hub1.example.org",
            },
        )


class LoopbackCase(TestCase):
    """A control port and a web server with copies of the fixtures, on 127.0.0.1."""

    def setUp(self) -> None:
        self.engine = make_engine()
        self.names: set[str] = set()
        self.control = self.listen(ControlFactory(Controller(self.engine, names=self.names)))
        self.work = Path(self.mktemp()).resolve()
        shutil.copytree(FIXTURES, self.work)
        site = Site(File(str(self.work)))
        site.noisy = False
        self.web = self.listen(site).replace("tcp:127.0.0.1:", "http://127.0.0.1:") + "/"
        self.state = self.work / "state.json"

    def listen(self, factory) -> str:
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return f"tcp:127.0.0.1:{port.getHost().port}"

    async def run_once(
        self, source: str, *argv: str, resolve=no_lookups, control: str | None = None
    ) -> tuple[int, list[str]]:
        out = StringIO()
        args = parse_args(
            [source, "--control", control or self.control, "--state", str(self.state), *argv]
        )
        status = await napigator(reactor, args, out, resolve)
        return status, out.getvalue().splitlines()

    def sent(self, source: object) -> dict[str, str]:
        """What the state file says was sent for ``source``."""
        return load_state(self.state).get(str(source), {})

    def blocks(self) -> set[tuple[bytes, int, bytes]]:
        return {key for key, _block in self.engine.blocks.items()}

    def commands(self) -> list[str]:
        """The commands the daemon received, from its ``x`` events."""
        return [e.split(": ", 1)[1].split(" -> ")[0] for e in self.engine.events.of("x")]


class NapigatorTests(LoopbackCase):
    async def test_first_run_sends_everything(self) -> None:
        url = self.web + "servers.html"
        status, out = await self.run_once(url, resolve=resolver(HUB1))
        self.assertEqual(status, 0)
        self.assertEqual(
            out,
            [
                "ban-dns-name hub1.example.org -> OK banned hub1.example.org",
                "block 198.51.100.7:8888 -> OK blocked 198.51.100.7:8888",
                "block [2001:db8::7]:8888 -> OK blocked [2001:db8::7]:8888",
                "block [2001:db8::40]:8888 -> OK blocked [2001:db8::40]:8888",
                f"2 servers from {url} (html): 2 new, 0 gone; "
                "commands: 4 added, 0 removed, 0 refused, 0 unchanged",
            ],
        )
        self.assertEqual(self.names, {"hub1.example.org"})
        self.assertEqual(
            self.blocks(),
            {
                (packed("198.51.100.7"), 8888, b""),
                (packed("2001:db8::7"), 8888, b""),
                (packed("2001:db8::40"), 8888, b""),
            },
        )
        self.assertEqual(
            json.loads(self.state.read_text())["sources"][url],
            {
                "ban-dns-name hub1.example.org": "hub1.example.org",
                "block 198.51.100.7:8888": "hub1.example.org",
                "block [2001:db8::7]:8888": "hub1.example.org",
                "block [2001:db8::40]:8888": "2001:db8::40",
            },
        )

    async def test_second_run_sends_nothing(self) -> None:
        url = self.web + "servers.html"
        await self.run_once(url, resolve=resolver(HUB1))
        received = self.commands()
        status, out = await self.run_once(url, resolve=resolver(HUB1))
        self.assertEqual(
            (status, out),
            (
                0,
                [
                    f"2 servers from {url} (html): 0 new, 0 gone; "
                    "commands: 0 added, 0 removed, 0 refused, 4 unchanged"
                ],
            ),
        )
        self.assertEqual(self.commands(), received)

    async def test_sends_only_changes(self) -> None:
        source = self.work / "servers.txt"
        await self.run_once(str(source))
        received = len(self.commands())
        source.write_text(
            "203.0.113.10 8888 OpenNapNet 120 34000 210\n"
            "203.0.113.12 8888 NewNet 1 2 3\n"
            "2 121 34002 213\n"
        )
        status, out = await self.run_once(str(source))
        self.assertEqual(status, 0)
        self.assertEqual(
            out,
            [
                "block 203.0.113.12:8888 -> OK blocked 203.0.113.12:8888",
                "unblock 203.0.113.11:7777 -> OK unblocked 203.0.113.11:7777",
                f"2 servers from {source} (napigator): 1 new, 1 gone; "
                "commands: 1 added, 1 removed, "
                "0 refused, 1 unchanged",
            ],
        )
        self.assertEqual(
            self.commands()[received:], ["block 203.0.113.12:8888", "unblock 203.0.113.11:7777"]
        )
        self.assertEqual(
            self.blocks(),
            {(packed("203.0.113.10"), 8888, b""), (packed("203.0.113.12"), 8888, b"")},
        )
        self.assertEqual(
            set(self.sent(source)), {"block 203.0.113.10:8888", "block 203.0.113.12:8888"}
        )

    async def test_removal_of_something_already_gone(self) -> None:
        source = self.work / "servers.txt"
        await self.run_once(str(source))
        self.engine.unblock(packed("203.0.113.11"), 7777)
        source.write_text("203.0.113.10 8888 OpenNapNet 120 34000 210\n")
        status, out = await self.run_once(str(source))
        self.assertEqual(status, 0)
        self.assertEqual(out[0], "unblock 203.0.113.11:7777 -> ERR not blocked: 203.0.113.11:7777")
        self.assertEqual(set(self.sent(source)), {"block 203.0.113.10:8888"})

    async def test_failed_lookup_keeps_blocks(self) -> None:
        url = self.web + "servers.html"
        await self.run_once(url, resolve=resolver(HUB1))
        before = self.blocks()
        status, out = await self.run_once(url, resolve=resolver({}))
        self.assertEqual(status, 0)
        self.assertEqual(
            out[0],
            "cannot resolve hub1.example.org: no address for hub1.example.org; keeping its blocks",
        )
        self.assertEqual(self.blocks(), before)
        self.assertEqual(len(self.sent(url)), 4)

    async def test_no_resolve_bans_names_only(self) -> None:
        url = self.web + "servers-14.txt"
        status, out = await self.run_once(url, "--no-resolve")
        self.assertEqual(status, 0)
        self.assertEqual(self.names, {"nap1.example.net"})
        self.assertEqual(
            self.blocks(),
            {(packed("203.0.113.30"), 8888, b""), (packed("203.0.113.31"), 6699, b"")},
        )
        self.assertEqual(
            out[-1],
            f"3 servers from {url} (napigator-14): 3 new, 0 gone; "
            "commands: 3 added, 0 removed, 0 refused, 0 unchanged",
        )

    async def test_wsx_file(self) -> None:
        status, _out = await self.run_once(str(self.work / "servers.wsx"), "--no-resolve")
        self.assertEqual(status, 0)
        self.assertEqual(self.names, {"wsx1.example.net"})
        self.assertEqual(self.blocks(), {(packed("203.0.113.50"), 8888, b"")})

    async def test_unusable_lists_change_nothing(self) -> None:
        await self.run_once(self.web + "servers.txt")
        blocks, state = self.blocks(), self.state.read_text()
        cases = [
            (self.web + "error.html", "(format unknown); nothing changed"),
            (self.web + "missing.txt", ": HTTP Error 404: Not Found; nothing changed"),
            (str(self.work / "missing.txt"), "No such file or directory"),
        ]
        for source, message in cases:
            with self.subTest(source=source):
                status, out = await self.run_once(source)
                self.assertEqual(status, 1)
                self.assertEqual(len(out), 1)
                self.assertIn(source, out[0])
                self.assertIn(message, out[0])
                self.assertEqual(self.blocks(), blocks)
                self.assertEqual(self.state.read_text(), state)

    async def test_daemon_down(self) -> None:
        endpoint = f"tcp:127.0.0.1:{closed_port()}"
        status, out = await self.run_once(self.web + "servers.txt", control=endpoint)
        self.assertEqual(status, 2)
        self.assertTrue(out[0].startswith(f"p2pwall-napigator: cannot connect to {endpoint}"))
        self.assertEqual(self.sent(self.web + "servers.txt"), {})

    async def test_refused_additions_are_sent_again(self) -> None:
        self.control = self.listen(ControlFactory(Controller(self.engine)))  # no DNS name set
        source = str(self.work / "servers.wsx")
        status, out = await self.run_once(source, "--no-resolve")
        self.assertEqual(status, 1)
        self.assertIn("ban-dns-name wsx1.example.net -> ERR DNS name banning is not available", out)
        self.assertEqual(set(self.sent(source)), {"block 203.0.113.50:8888"})
        status, out = await self.run_once(source, "--no-resolve")
        self.assertEqual((status, len(out)), (1, 2))
        self.assertTrue(out[0].startswith("ban-dns-name wsx1.example.net -> ERR"))

    async def test_full_sends_everything_again(self) -> None:
        source = str(self.work / "servers.txt")
        await self.run_once(source)
        status, out = await self.run_once(source, "--full")
        self.assertEqual(status, 0)
        self.assertEqual(
            out,
            [
                "block 203.0.113.10:8888 -> OK already blocked 203.0.113.10:8888",
                "block 203.0.113.11:7777 -> OK already blocked 203.0.113.11:7777",
                f"2 servers from {source} (napigator): 0 new, 0 gone; commands: 2 added, "
                "0 removed, 0 refused, 0 unchanged",
            ],
        )

    async def test_unreadable_state_means_send_everything(self) -> None:
        self.state.write_text("{not json")
        status, out = await self.run_once(str(self.work / "servers.txt"))
        self.assertEqual(status, 0)
        self.assertTrue(out[0].startswith(f"ignoring state file {self.state}: "))
        self.assertEqual(len(self.blocks()), 2)
        self.assertEqual(len(self.sent(self.work / "servers.txt")), 2)

    async def test_two_lists_sharing_a_state_file_keep_each_others_entries(self) -> None:
        both = "203.0.113.10 8888 OpenNapNet 120 34000 210\n"
        first, second = self.work / "first.txt", self.work / "second.txt"
        first.write_text(both + "203.0.113.11 7777 Other 1 2 3\n2 121 34002 213\n")
        second.write_text(both + "203.0.113.20 8888 Third 1 2 3\n2 121 34002 213\n")
        await self.run_once(str(first))
        status, out = await self.run_once(str(second))
        self.assertEqual(status, 0)
        self.assertEqual(
            out[-1],
            f"2 servers from {second} (napigator): 2 new, 0 gone; commands: 2 added, 0 removed, "
            "0 refused, 0 unchanged",
        )
        self.assertEqual(
            set(self.sent(first)), {"block 203.0.113.10:8888", "block 203.0.113.11:7777"}
        )
        first.write_text("203.0.113.11 7777 Other 1 2 3\n1 1 2 3\n")
        status, out = await self.run_once(str(first))
        self.assertEqual(status, 0)
        self.assertNotIn(
            "unblock 203.0.113.10:8888", "\n".join(out), "the second list still has it"
        )
        self.assertIn((packed("203.0.113.10"), 8888, b""), self.blocks())
        self.assertEqual(set(self.sent(first)), {"block 203.0.113.11:7777"})
        self.assertEqual(len(self.sent(second)), 2, "the first list's run kept the second's part")

    async def test_a_state_file_of_the_first_format_is_this_lists(self) -> None:
        source = self.work / "servers.txt"
        self.state.write_text(json.dumps({"sent": {"block 203.0.113.10:8888": "203.0.113.10"}}))
        status, out = await self.run_once(str(source))
        self.assertEqual(status, 0)
        self.assertEqual(out, [
            "block 203.0.113.11:7777 -> OK blocked 203.0.113.11:7777",
            f"2 servers from {source} (napigator): 1 new, 0 gone; commands: 1 added, 0 removed, "
            "0 refused, 1 unchanged",
        ])  # fmt: skip
        self.assertEqual(list(load_state(self.state)), [str(source)])


class Child(ProcessProtocol):
    def __init__(self) -> None:
        self.output = b""
        self.ended: defer.Deferred[None] = defer.Deferred()

    def outReceived(self, data: bytes) -> None:
        self.output += data

    def errReceived(self, data: bytes) -> None:
        self.output += data

    def processEnded(self, reason: object) -> None:
        self.ended.callback(None)


class ScriptTests(LoopbackCase):
    """The console script's code path: a child process talking to this test's reactor."""

    async def test_once(self) -> None:
        url = self.web + "servers.txt"
        out, err, code = await run_script(
            url, "--control", self.control, "--no-resolve", module="p2pwall.tools.napigator"
        )
        self.assertEqual((err, code), ("", 0))
        self.assertEqual(
            out.splitlines()[-1],
            f"2 servers from {url} (napigator): 2 new, 0 gone; "
            "commands: 2 added, 0 removed, 0 refused, 0 unchanged",
        )
        self.assertEqual(len(self.blocks()), 2)

    async def test_interval_follows_the_list(self) -> None:
        source = self.work / "servers.txt"
        child = Child()
        argv = [str(source), "--control", self.control, "--no-resolve", "--interval", "0.2"]
        process = reactor.spawnProcess(
            child,
            sys.executable,
            [sys.executable, "-m", "p2pwall.tools.napigator", *argv],
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            path=str(ROOT),
        )
        try:
            await self.until(lambda: len(self.blocks()) == 2, child)
            source.write_text("203.0.113.12 8888 NewNet 1 2 3\n1 1 2 3\n")
            await self.until(lambda: self.blocks() == {(packed("203.0.113.12"), 8888, b"")}, child)
        finally:
            process.signalProcess("TERM")
            await child.ended

    async def until(self, condition: Callable[[], bool], child: Child) -> None:
        for _ in range(150):
            if condition():
                return
            await task.deferLater(reactor, 0.05)
        self.fail(f"timed out; child said: {child.output.decode()[-2000:]}")
