"""--on-lock / --on-release: the command's environment, its bounds and its failures, with a fake
process reactor, then real ``/bin/sh`` scripts under the real reactor."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessDone, ProcessExitedAlready, ProcessTerminated
from twisted.internet.task import Clock, deferLater
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from p2pwall.hooks import CommandHooks, parse_command
from p2pwall.packet import Hook, decode
from p2pwall.testing import make_engine, packed, udp

CLIENT = "198.18.1.10"
HELLO = b"\x27\x00\x00\x00\x29\x80KaZaA\x00"


class FakeTransport:
    def __init__(self) -> None:
        self.signals: list[str] = []
        self.exited = False

    def signalProcess(self, signal: str) -> None:
        if self.exited:
            raise ProcessExitedAlready()
        self.signals.append(signal)


class ProcessClock(Clock):
    """A clock that records ``spawnProcess`` calls instead of forking."""

    def __init__(self) -> None:
        super().__init__()
        self.spawned: list[tuple] = []
        self.refuse: OSError | None = None

    def spawnProcess(self, protocol, executable, args, env):
        if self.refuse is not None:
            raise self.refuse
        protocol.makeConnection(FakeTransport())
        self.spawned.append((protocol, executable, tuple(args), env))
        return protocol.transport


def capture_log(case) -> list[dict]:
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    case.addCleanup(globalLogPublisher.removeObserver, events.append)
    return events


def texts(events: list[dict]) -> list[str]:
    from twisted.logger import formatEvent

    return [formatEvent(e) for e in events if e.get("log_namespace") == "p2pwall.hooks"]


class ParseCommandTests(SynchronousTestCase):
    def test_split_like_a_shell_and_found_on_the_path(self) -> None:
        argv = parse_command("sh -c 'echo \"$P2PWALL_CLIENT\"'", "--on-lock")
        self.assertEqual(argv[1:], ("-c", 'echo "$P2PWALL_CLIENT"'))
        self.assertTrue(os.path.isabs(argv[0]) and argv[0].endswith("/sh"))

    def test_bad_commands_are_one_line(self) -> None:
        for text, error in (
            ("", "--on-lock: empty command"),
            ("'unclosed", "--on-lock: cannot split \"'unclosed\": No closing quotation"),
            ("no-such-program-p2pwall x", "--on-lock: 'no-such-program-p2pwall' is not an "
             "executable program"),
            ("/etc", "--on-lock: '/etc' is not an executable program"),
        ):  # fmt: skip
            with self.subTest(text=text), self.assertRaises(ValueError) as caught:
                parse_command(text, "--on-lock")
            self.assertEqual(str(caught.exception), error)


class HookUnitTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = ProcessClock()
        self.clock.advance(1_700_000_000)
        self.engine = make_engine(self.clock)
        self.hooks = CommandHooks(
            self.clock,
            self.engine,
            on_lock=("/bin/lock", "a"),
            on_release=("/bin/release",),
            max_running=2,
            timeout=5,
            environ={"PATH": "/usr/bin"},
        )
        self.engine.observers.append(self.hooks)
        self.log = capture_log(self)

    def hello(self, src: str = CLIENT) -> None:
        self.engine.verdict(decode(udp(src, "198.19.1.1", 1214, 2000, HELLO)), Hook.FORWARD)

    def end(self, index: int, reason: Exception) -> None:
        protocol = self.clock.spawned[index][0]
        protocol.transport.exited = True
        protocol.processEnded(Failure(reason))

    def test_a_lock_runs_the_command_with_what_happened_in_its_environment(self) -> None:
        self.hello()
        ((_protocol, executable, args, env),) = self.clock.spawned
        self.assertEqual((executable, args), ("/bin/lock", ("/bin/lock", "a")))
        self.assertEqual(
            env,
            {
                "PATH": "/usr/bin",
                "P2PWALL_EVENT": "lock",
                "P2PWALL_CLIENT": CLIENT,
                "P2PWALL_PROTOCOL": "FastTrack",
                "P2PWALL_REASON": "FastTrack hello",
                "P2PWALL_LOCK_REASON": "FastTrack hello",
                "P2PWALL_PEER": "198.19.1.1:2000",
                "P2PWALL_TIME": "2023-11-14T22:13:20Z",
                "P2PWALL_EPOCH": "1700000000",
                "P2PWALL_DRY_RUN": "0",
                "P2PWALL_UNTIL": "2023-11-14T22:15:20Z",
            },
        )

    def test_a_release_says_why_the_lock_ended_and_why_it_began(self) -> None:
        self.hello()
        self.engine.dry_run = True
        self.engine.unlock(packed(CLIENT))
        env = self.clock.spawned[1][3]
        self.assertEqual(self.clock.spawned[1][1], "/bin/release")
        self.assertEqual(
            (env["P2PWALL_EVENT"], env["P2PWALL_REASON"], env["P2PWALL_LOCK_REASON"]),
            ("release", "unlocked from the control port", "FastTrack hello"),
        )
        self.assertEqual(env["P2PWALL_DRY_RUN"], "1")
        self.assertNotIn("P2PWALL_UNTIL", env)
        self.assertEqual(self.hooks._locked, {})

    def test_at_most_max_running_the_rest_skipped_and_counted(self) -> None:
        for n in range(10, 15):
            self.hello(f"198.18.1.{n}")
        self.assertEqual(len(self.clock.spawned), 2)
        self.assertEqual(
            (self.engine.stats["hooks_run"], self.engine.stats["hooks_skipped"]), (2, 3)
        )
        self.assertEqual(len(texts(self.log)), 2, "the 1st and 2nd skips, not the 3rd")
        self.end(0, ProcessDone(0))
        self.hello("198.18.1.20")
        self.assertEqual(len(self.clock.spawned), 3)

    def test_a_hung_command_is_killed_after_the_timeout(self) -> None:
        self.hello()
        transport = self.clock.spawned[0][0].transport
        self.clock.advance(4.9)
        self.assertEqual(transport.signals, [])
        self.clock.advance(0.1)
        self.assertEqual(transport.signals, ["KILL"])
        self.end(0, ProcessTerminated(signal=9))
        self.assertEqual(self.engine.stats["hooks_killed"], 1)
        self.assertEqual(texts(self.log), [f"on-lock {CLIENT}: killed after 5 s"])
        self.assertEqual(self.hooks.active, set())

    def test_a_failure_is_logged_with_its_status_and_output(self) -> None:
        self.hello()
        protocol = self.clock.spawned[0][0]
        protocol.childDataReceived(2, b"curl: (7) Failed\nto connect\n" + b"x" * 1000)
        self.end(0, ProcessTerminated(exitCode=7))
        (line,) = texts(self.log)
        self.assertTrue(line.startswith(f"on-lock {CLIENT}: exit status 7: curl: (7) Failed to"))
        self.assertLess(len(line), 500)
        self.assertEqual(self.engine.stats["hooks_failed"], 1)
        self.assertFalse(self.clock.getDelayedCalls(), "the timeout is cancelled")

    def test_a_command_that_cannot_be_started_is_counted(self) -> None:
        self.clock.refuse = OSError(11, "Resource temporarily unavailable")
        self.hello()
        self.assertEqual(self.engine.stats["hooks_failed"], 1)
        self.assertEqual(self.hooks.active, set())
        self.assertIn("Resource temporarily unavailable", texts(self.log)[0])

    def test_stopping_waits_for_the_running_commands(self) -> None:
        self.hooks.startService()
        self.hello()
        stopped = self.hooks.stopService()
        self.assertNoResult(stopped)
        self.end(0, ProcessDone(0))
        self.successResultOf(stopped)


class RealProcessTests(TestCase):
    """Real ``/bin/sh`` scripts under the real reactor."""

    timeout = 20

    def setUp(self) -> None:
        self.dir = Path(self.mktemp())
        self.dir.mkdir()
        self.engine = make_engine(reactor)

    def script(self, name: str, body: str) -> str:
        path = self.dir / name
        path.write_text("#!/bin/sh\n" + body)
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
        return str(path)

    def until_idle(self, hooks: CommandHooks) -> Deferred:
        hooks.startService()
        return hooks.stopService()

    async def test_lock_and_release_scripts_see_their_environment(self) -> None:
        out = self.dir / "out"
        record = self.script(
            "record",
            f'echo "$P2PWALL_EVENT $P2PWALL_CLIENT $P2PWALL_REASON $1" >> {out}\n',
        )
        hooks = CommandHooks(
            reactor,
            self.engine,
            on_lock=parse_command(f"{record} 'one arg'", "--on-lock"),
            on_release=parse_command(record, "--on-release"),
        )
        self.engine.observers.append(hooks)
        self.engine.verdict(decode(udp(CLIENT, "198.19.1.1", 1214, 2000, HELLO)), Hook.FORWARD)
        await self.until_idle(hooks)
        self.engine.unlock(packed(CLIENT))
        await self.until_idle(hooks)
        self.assertEqual(
            out.read_text().splitlines(),
            [
                f"lock {CLIENT} FastTrack hello one arg",
                f"release {CLIENT} unlocked from the control port ",
            ],
        )
        self.assertEqual(self.engine.stats["hooks_run"], 2)

    async def test_no_shell_reads_the_arguments(self) -> None:
        out = self.dir / "out"
        args = self.script("args", f'for a in "$@"; do echo "$a"; done > {out}\n')
        hooks = CommandHooks(
            reactor, self.engine, on_lock=parse_command(f"{args} '$(id)' ';' '*'", "--on-lock")
        )
        hooks.client_locked(packed(CLIENT))
        await self.until_idle(hooks)
        self.assertEqual(out.read_text().splitlines(), ["$(id)", ";", "*"])

    async def test_a_hung_script_is_killed_and_the_reactor_never_waits(self) -> None:
        hung = self.script("hung", "exec sleep 30\n")
        hooks = CommandHooks(reactor, self.engine, on_lock=(hung,), timeout=0.5)
        log = capture_log(self)
        hooks.client_locked(packed(CLIENT))
        active = await deferLater(reactor, 0.1, lambda: len(hooks.active))
        self.assertEqual(active, 1, "the reactor ran on while the script hung")
        await self.until_idle(hooks)
        self.assertEqual(self.engine.stats["hooks_killed"], 1)
        self.assertEqual(texts(log), [f"on-lock {CLIENT}: killed after 0.5 s"])

    async def test_a_failing_script_is_logged_with_its_exit_status(self) -> None:
        failing = self.script("failing", "echo 'no route' >&2\nexit 3\n")
        hooks = CommandHooks(reactor, self.engine, on_lock=(failing,))
        log = capture_log(self)
        hooks.client_locked(packed(CLIENT))
        await self.until_idle(hooks)
        self.assertEqual(texts(log), [f"on-lock {CLIENT}: exit status 3: no route"])
