"""The control port's line protocol (``p2pwall.control``): sessions over ``StringTransport``,
every kind of bad input, limits and timeouts, then the real listening port (TCP and unix) and
the wiring in ``makeService``."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from twisted.internet import defer, reactor
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.endpoints import clientFromString, connectProtocol, serverFromString
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from p2pwall.commands import COMMANDS, Controller, read_queue_stats
from p2pwall.control import (
    IDLE_TIMEOUT,
    MAX_CONNECTIONS,
    ControlFactory,
    ControlService,
    control_endpoint,
    listen_control,
    listen_now,
    peer_text,
)
from p2pwall.errors import StartError
from p2pwall.options import Options
from p2pwall.service import makeService
from p2pwall.store import HEADER
from p2pwall.tables import ANY_CLIENT, ANY_PORT
from p2pwall.testing import FakeKernelQueue, RecordingSpoofer, make_engine, packed

from .control_support import (
    CLIENT,
    NOTHING_TO_RELOAD,
    NOW,
    NOW_ISO,
    PEER,
    ControlTestCase,
    Session,
)


class SlowWorkTests(ControlTestCase):
    """``dump-blocks`` formats off the reactor thread (``run``); replies keep command order."""

    def setUp(self) -> None:
        super().setUp()
        self.pending: list[tuple[defer.Deferred, object, tuple]] = []

        def run(work, *args) -> defer.Deferred:
            done: defer.Deferred = defer.Deferred()
            self.pending.append((done, work, args))
            return done

        self.session = Session(
            ControlFactory(Controller(self.engine, dump_dir=self.dump_dir, run=run))
        )

    def finish(self) -> list[str]:
        """Do the pending work (as the thread would) and return the lines it let out."""
        self.session.transport.clear()
        done, work, args = self.pending.pop(0)
        done.callback(work(*args))
        return self.session.transport.value().decode().split("\n")[:-1]

    def test_commands_after_a_dump_wait_for_its_reply(self) -> None:
        self.engine.block(PEER)
        self.assertEqual(self.session.send(b"dump-blocks\nblock 203.0.113.6\nping\n"), [])
        self.assertNotIn((packed("203.0.113.6"), ANY_PORT, ANY_CLIENT), self.engine.blocks)
        self.assertEqual(
            self.finish(),
            [
                f"203.0.113.5 * * manual {NOW} first-seen={NOW_ISO} last-seen={NOW_ISO}",
                "OK 1 blocks",
                "OK blocked 203.0.113.6",
                "OK pong",
            ],
        )
        self.assertIn((packed("203.0.113.6"), ANY_PORT, ANY_CLIENT), self.engine.blocks)

    def test_nothing_after_quit_runs_even_behind_a_dump(self) -> None:
        self.session.send(b"dump-blocks\nquit\nblock 203.0.113.6\n")
        self.assertEqual(self.finish(), ["OK 0 blocks", "OK bye"])
        self.assertTrue(self.session.transport.disconnecting)
        self.assertEqual(len(self.engine.blocks), 0)

    def test_a_half_close_answers_the_lines_still_waiting(self) -> None:
        self.session.send(b"dump-blocks\nping\n")
        self.session.protocol.readConnectionLost()
        self.assertFalse(self.session.transport.disconnecting)
        self.assertEqual(self.finish(), ["OK 0 blocks", "OK pong"])
        self.assertTrue(self.session.transport.disconnecting)

    def test_a_half_close_waits_for_the_reply_being_worked_on(self) -> None:
        """``echo dump-blocks | nc -N``: the client is done sending before the dump is done."""
        self.session.command("dump-blocks")
        self.session.protocol.readConnectionLost()
        self.assertFalse(self.session.transport.disconnecting)
        self.assertEqual(self.finish(), ["OK 0 blocks"])
        self.assertTrue(self.session.transport.disconnecting)

    def test_a_dump_file_is_written_by_the_work(self) -> None:
        self.engine.block(PEER)
        self.assertEqual(self.session.command("dump-blocks saved"), [])
        self.assertFalse((self.dump_dir / "saved").exists())
        self.assertEqual(self.finish(), [f"OK 1 blocks written to {self.dump_dir / 'saved'}"])
        self.assertEqual(
            (self.dump_dir / "saved").read_text(), f"{HEADER}203.0.113.5 * * manual {NOW}\n"
        )

    def test_a_reply_that_cannot_be_written_does_not_cost_the_next_one(self) -> None:
        transport = self.session.transport
        write, broken = transport.write, [OSError("gone")]

        def write_once_broken(data: bytes) -> None:
            if broken:
                raise broken.pop()
            write(data)

        transport.write = write_once_broken
        self.assertEqual(self.session.send(b"ping\nping\n"), ["OK pong"])
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)

    def test_failing_work_is_logged_and_answered_and_the_session_goes_on(self) -> None:
        self.session.command("dump-blocks")
        self.session.transport.clear()
        done, _work, _args = self.pending.pop(0)
        done.errback(ZeroDivisionError("bug"))
        self.assertEqual(
            self.session.transport.value(), b"ERR internal error (see the daemon log)\n"
        )
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertEqual(self.session.command("ping"), ["OK pong"])


class SessionTests(ControlTestCase):
    def test_a_client_that_does_not_read_stops_being_read(self) -> None:
        session = Session(self.factory)
        self.assertIs(session.transport.producer, session.protocol)
        self.assertTrue(session.transport.streaming)
        session.protocol.pauseProducing()
        self.assertEqual(session.send(b"ping\n"), [])
        session.transport.clear()
        session.protocol.resumeProducing()
        self.assertEqual(session.transport.value(), b"OK pong\n")

    def test_help_is_the_command_table(self) -> None:
        lines = self.command("help")
        self.assertEqual(lines[-1], f"OK {len(COMMANDS)} commands")
        self.assertEqual([line.split()[0] for line in lines[:-1]], [c.name for c in COMMANDS])
        self.assertIn("dump-blocks [FILE]", lines[2])
        self.assertIn("explain ADDR", "".join(lines))
        self.assertEqual(
            self.command("help block"),
            [f"{'block PEER[:PORT] [CLIENT]':<30} block a peer (for one client)", "OK 1 commands"],
        )
        self.assertEqual(self.command("help nosuch"), ["ERR unknown command 'nosuch'"])

    def test_ping(self) -> None:
        self.assertEqual(self.command("ping"), ["OK pong"])
        self.assertFalse(self.session.transport.disconnecting)

    def test_quit_closes(self) -> None:
        self.assertEqual(self.session.send(b"quit\nping\n"), ["OK bye"])
        self.assertTrue(self.session.transport.disconnecting)

    def test_crlf_blank_lines_and_split_chunks(self) -> None:
        self.assertEqual(self.session.send(b"ping\r\n\n  \r\n\tping\n"), ["OK pong", "OK pong"])
        self.assertEqual(self.session.send(b"blo"), [])
        self.assertEqual(self.session.send(b"ck 203.0.113.5\r\nping"), ["OK blocked 203.0.113.5"])
        self.assertEqual(self.session.send(b"\n"), ["OK pong"])

    def test_connections_do_not_mix(self) -> None:
        other = Session(self.factory, port=40001)
        self.assertEqual(self.session.send(b"block 203.0."), [])
        self.assertEqual(other.send(b"ping\n"), ["OK pong"])
        self.assertEqual(self.session.send(b"113.5\n"), ["OK blocked 203.0.113.5"])

    def test_every_command_is_logged_with_the_peer(self) -> None:
        self.command("block 203.0.113.5")
        self.session.send(b"\xff\xfe\n")
        self.command("nonsense")
        self.assertEqual(
            self.engine.events.of("x"),
            [
                "control 127.0.0.1:40000: block 203.0.113.5 -> OK blocked 203.0.113.5",
                "control 127.0.0.1:40000: <2 bytes, not text> -> ERR not a text line",
                "control 127.0.0.1:40000: nonsense -> ERR unknown command 'nonsense', try help",
            ],
        )

    def test_peer_text(self) -> None:
        self.assertEqual(peer_text(IPv6Address("TCP", "::1", 5000)), "[::1]:5000")
        self.assertEqual(peer_text(IPv4Address("TCP", "127.0.0.1", 5000)), "127.0.0.1:5000")
        self.assertEqual(peer_text(UNIXAddress(None)), "unix")


class ConnectionLimitTests(ControlTestCase):
    """A local program opening connections in a loop cannot make the daemon hold more."""

    def test_the_connection_past_the_cap_is_refused_with_one_line(self) -> None:
        sessions = [self.session]
        sessions += [Session(self.factory, port=40001 + n) for n in range(MAX_CONNECTIONS - 1)]
        self.assertFalse(any(s.transport.disconnecting for s in sessions))
        extra = Session(self.factory, port=41000)
        self.assertEqual(extra.transport.value(), b"ERR too many connections\n")
        self.assertTrue(extra.transport.disconnecting)
        self.assertEqual(extra.send(b"block 203.0.113.5\n"), [])
        self.assertNotIn((PEER, 0, b""), self.engine.blocks)
        extra.protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(len(self.factory.connections), MAX_CONNECTIONS)
        self.assertEqual(
            self.engine.events.of("x")[-1],
            f"control 127.0.0.1:41000: <connection> -> ERR too many connections"
            f" (max {MAX_CONNECTIONS})",
        )

    def test_a_closed_connection_frees_its_place(self) -> None:
        factory = ControlFactory(Controller(self.engine), max_connections=2)
        first, _second = Session(factory), Session(factory, port=40001)
        self.assertTrue(Session(factory, port=40002).transport.disconnecting)
        first.protocol.connectionLost(Failure(ConnectionDone()))
        third = Session(factory, port=40003)
        self.assertEqual(third.command("ping"), ["OK pong"])


class IdleTimeoutTests(ControlTestCase):
    """A connection that sends nothing is closed, so idle ones cannot use up the cap."""

    def test_closed_after_the_idle_time_without_a_line(self) -> None:
        self.clock.advance(IDLE_TIMEOUT - 1)
        self.assertEqual(self.command("ping"), ["OK pong"])
        self.session.transport.clear()
        self.session.protocol.dataReceived(b"pi")  # half a line is not a line
        self.clock.advance(IDLE_TIMEOUT - 1)
        self.assertFalse(self.session.transport.disconnecting)
        self.clock.advance(1)
        self.assertEqual(self.session.transport.value(), b"ERR idle for 300 s, closing\n")
        self.assertTrue(self.session.transport.disconnecting)
        self.session.protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.factory.connections, set())
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_the_timeout_is_a_factory_parameter(self) -> None:
        session = Session(ControlFactory(Controller(self.engine), idle_timeout=5))
        self.clock.advance(5)
        self.assertEqual(session.transport.value(), b"ERR idle for 5 s, closing\n")

    def test_a_client_that_does_not_read_is_cut_off(self) -> None:
        """A polite close would wait for its full buffer to drain, that is for ever."""
        self.session.protocol.pauseProducing()
        self.clock.advance(IDLE_TIMEOUT)
        self.assertTrue(self.session.transport.disconnected)  # aborted

    def test_a_reply_worked_on_is_not_idleness(self) -> None:
        pending: list[defer.Deferred] = []

        def run(work, *args) -> defer.Deferred:
            pending.append(defer.Deferred().addCallback(lambda _: work(*args)))
            return pending[-1]

        session = Session(ControlFactory(Controller(self.engine, run=run)))
        session.command("dump-blocks")
        self.clock.advance(IDLE_TIMEOUT * 2)
        self.assertFalse(session.transport.disconnecting)
        session.transport.clear()
        pending[0].callback(None)
        self.assertEqual(session.transport.value(), b"OK 0 blocks\n")
        self.clock.advance(IDLE_TIMEOUT)
        self.assertTrue(session.transport.disconnecting)


class ControlEndpointTests(SynchronousTestCase):
    def test_unix_sockets_get_mode_600_unless_they_name_one(self) -> None:
        cases = {
            "unix:/run/p2pwall.sock": "unix:/run/p2pwall.sock:mode=600",
            "unix:/run/p2pwall.sock:mode=660": "unix:/run/p2pwall.sock:mode=660",
            "unix:address=/run/a.sock:lockfile=1": "unix:address=/run/a.sock:lockfile=1:mode=600",
            "unix:mode=640:address=/run/a.sock": "unix:mode=640:address=/run/a.sock",
            "unix:/run/mode=1\\:x.sock": "unix:/run/mode=1\\:x.sock:mode=600",
            "tcp:4120:interface=127.0.0.1": "tcp:4120:interface=127.0.0.1",
            "tcp6:4120:interface=\\:\\:1": "tcp6:4120:interface=\\:\\:1",
        }
        for given, expected in cases.items():
            self.assertEqual(control_endpoint(given), expected, given)


class ListenControlTests(TestCase):
    """``listen_control`` on the real reactor: the socket's mode and one-line errors."""

    def setUp(self) -> None:
        self.factory = ControlFactory(Controller(make_engine(), names=set()))
        self.dir = Path(self.mktemp())  # relative: a socket's path has at most 107 bytes
        self.dir.mkdir()

    def listen(self, description: str) -> object:
        port = listen_control(description, self.factory, reactor)
        self.addCleanup(port.stopListening)
        return port

    def test_a_unix_socket_is_0600_unless_a_mode_is_given(self) -> None:
        os.umask(old := os.umask(0))  # the widest umask: the mode must not come from it
        self.addCleanup(os.umask, old)
        self.listen(f"unix:{self.dir / 'a.sock'}")
        self.listen(f"unix:{self.dir / 'b.sock'}:mode=660")
        self.assertEqual(stat.S_IMODE(os.stat(self.dir / "a.sock").st_mode), 0o600)
        self.assertEqual(stat.S_IMODE(os.stat(self.dir / "b.sock").st_mode), 0o660)

    def test_a_missing_socket_directory_is_one_line(self) -> None:
        socket = self.dir / "missing" / "control.sock"
        error = self.assertRaises(
            StartError, listen_control, f"unix:{socket}", self.factory, reactor
        )
        self.assertEqual(
            str(error),
            f"control port unix:{socket}:mode=600: directory {socket.parent} does not exist",
        )

    def test_a_busy_port_is_one_line(self) -> None:
        port = self.listen("tcp:0:interface=127.0.0.1").getHost().port
        description = f"tcp:{port}:interface=127.0.0.1"
        error = self.assertRaises(StartError, listen_control, description, self.factory, reactor)
        self.assertEqual(
            str(error), f"control port {description}: cannot listen: Address already in use"
        )

    def test_a_socket_held_by_a_running_daemon_is_one_line(self) -> None:
        socket = self.dir / "control.sock"
        self.listen(f"unix:{socket}")
        error = self.assertRaises(
            StartError, listen_control, f"unix:{socket}", self.factory, reactor
        )
        self.assertIn(": cannot listen: ", str(error))
        self.assertNotIn("\n", str(error))

    def test_a_bad_endpoint_is_one_line(self) -> None:
        for description, reason in (
            ("tpc:4120", "bad endpoint: Unknown endpoint type: 'tpc'"),
            ("tcp:port", "bad endpoint: invalid literal for int() with base 10: 'port'"),
        ):
            error = self.assertRaises(
                StartError, listen_control, description, self.factory, reactor
            )
            self.assertEqual(str(error), f"control port {description}: {reason}")

    def test_an_endpoint_that_listens_later_is_one_line(self) -> None:
        class Later:
            def listen(self, factory: Factory) -> defer.Deferred:
                return defer.Deferred()

        error = self.assertRaises(StartError, listen_now, Later(), self.factory, "control port x")
        self.assertEqual(str(error), "control port x: the endpoint does not listen at once")

    def test_other_failures_are_not_hidden(self) -> None:
        """Only listening errors become one line; a bug in the factory still shows."""

        class Broken(MemoryReactorClock):
            def listenTCP(self, *args, **kwargs):
                raise ZeroDivisionError("bug")

        self.assertRaises(ZeroDivisionError, listen_control, "tcp:4120", Factory(), Broken())

    @defer.inlineCallbacks
    def test_the_service_listens_when_privileged_and_stops(self):
        socket = self.dir / "control.sock"
        service = ControlService(f"unix:{socket}", self.factory, reactor)
        service.privilegedStartService()
        service.startService()
        self.assertEqual(stat.S_IMODE(os.stat(socket).st_mode), 0o600)
        client = ClientProtocol(b"ping\nquit\n")
        yield connectProtocol(clientFromString(reactor, f"unix:{socket}"), client)
        self.assertEqual((yield client.closed), "OK pong\nOK bye\n")
        yield service.stopService()
        self.assertFalse(socket.exists())


BAD_PEER = "expected IP, IPv4:PORT or [IPv6]:PORT, PORT 1-65535"
BAD_INPUT = [
    (b"\x00\x01\xff\xfe", "ERR not a text line"),
    (b"bl\xc3\xb6ck 203.0.113.7", "ERR not a text line"),
    (b"block 203.0.113.7\x1b[2J", "ERR not a text line"),
    (b"ping\x00", "ERR not a text line"),
    (b"frobnicate 1 2", "ERR unknown command 'frobnicate', try help"),
    (b"block", "ERR usage: block PEER[:PORT] [CLIENT]"),
    (b"block 203.0.113.7 10.0.0.5 extra", "ERR usage: block PEER[:PORT] [CLIENT]"),
    (b"unblock", "ERR usage: unblock PEER[:PORT] [CLIENT]"),
    (b"ping now", "ERR usage: ping"),
    (b"quit now", "ERR usage: quit"),
    (b"dump-blocks a b", "ERR usage: dump-blocks [FILE]"),
    (b"ban-dns-name", "ERR usage: ban-dns-name NAME"),
    (b"accept-all 0 1", "ERR usage: accept-all [0|1]"),
    (b"accept-all 2", "ERR accept-all takes 0 or 1"),
    (b"accept-all yes", "ERR accept-all takes 0 or 1"),
    (b"block 203.0.113", f"ERR bad peer '203.0.113': {BAD_PEER}"),
    (b"block 999.0.113.7", f"ERR bad peer '999.0.113.7': {BAD_PEER}"),
    (b"block peer.example.net", f"ERR bad peer 'peer.example.net': {BAD_PEER}"),
    (b"block 203.0.113.7:0", f"ERR bad peer '203.0.113.7:0': {BAD_PEER}"),
    (b"block 203.0.113.7:65536", f"ERR bad peer '203.0.113.7:65536': {BAD_PEER}"),
    (b"block 203.0.113.7:-1", f"ERR bad peer '203.0.113.7:-1': {BAD_PEER}"),
    (b"block 203.0.113.7:http", f"ERR bad peer '203.0.113.7:http': {BAD_PEER}"),
    (b"block 203.0.113.7:", f"ERR bad peer '203.0.113.7:': {BAD_PEER}"),
    (b"block [2001:db8::7]:70000", f"ERR bad peer '[2001:db8::7]:70000': {BAD_PEER}"),
    (b"block [203.0.113.7]:80", f"ERR bad peer '[203.0.113.7]:80': {BAD_PEER}"),
    (b"block fe80::1%eth0", f"ERR bad peer 'fe80::1%eth0': {BAD_PEER}"),
    (b"unblock 203.0.113.5:99999", f"ERR bad peer '203.0.113.5:99999': {BAD_PEER}"),
    (b"block 203.0.113.7 10.0.0.5:80", "ERR bad client '10.0.0.5:80': an address, without a port"),
    (b"block 203.0.113.7 client.example", f"ERR bad client 'client.example': {BAD_PEER}"),
    (b"block 203.0.113.7 fd00::5", "ERR peer and client must both be IPv4 or both IPv6"),
    (
        b"ban-dns-name 203.0.113.7",
        "ERR bad DNS name '203.0.113.7': expected a host name like a.example.com",
    ),
    (b"help nosuch", "ERR unknown command 'nosuch'"),
]


class BadInputTests(ControlTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.engine.block(PEER, 1214)
        self.engine.learn(packed("198.51.100.1"), 0, b"", "udp")
        self.engine.lock(CLIENT, "test")
        self.names.add("a.example.net")

    def test_one_error_line_and_nothing_changes(self) -> None:
        before = self.snapshot()
        for data, reply in BAD_INPUT:
            for ending in (b"\n", b"\r\n"):
                with self.subTest(data=data, ending=ending):
                    self.assertEqual(self.session.send(data + ending), [reply])
                    self.assertEqual(self.snapshot(), before)
                    self.assertFalse(self.session.transport.disconnecting)
        self.assertEqual(self.command("ping"), ["OK pong"])
        self.assertEqual(len(self.engine.events.of("x")), 2 * len(BAD_INPUT) + 1)

    def test_overlong_line_errs_then_closes(self) -> None:
        before = self.snapshot()
        reply = ["ERR line too long (max 1024 bytes)"]
        self.assertEqual(self.session.send(b"block " + b"1" * 2000 + b"\nping\n"), reply)
        self.assertTrue(self.session.transport.disconnecting)
        self.assertEqual(self.snapshot(), before)

    def test_overlong_partial_line_errs_then_closes(self) -> None:
        reply = ["ERR line too long (max 1024 bytes)"]
        self.assertEqual(self.session.send(b"ban-dns-name " + b"a" * 1100), reply)
        self.assertTrue(self.session.transport.disconnecting)

    def test_cap_is_1024_bytes_before_the_newline(self) -> None:
        self.assertEqual(self.session.send(b"ping" + b" " * 1019 + b"\r\n"), ["OK pong"])
        reply = ["ERR line too long (max 1024 bytes)"]
        self.assertEqual(self.session.send(b"ping" + b" " * 1020 + b"\r\n"), reply)


class ClientProtocol(Protocol):
    """Sends a script, collects everything until the server closes the connection."""

    def __init__(self, script: bytes) -> None:
        self.script = script
        self.received = b""
        self.closed: defer.Deferred[str] = defer.Deferred()

    half_close = False

    def connectionMade(self) -> None:
        self.transport.write(self.script)
        if self.half_close:
            self.transport.loseWriteConnection()

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: object) -> None:
        self.closed.callback(self.received.decode())


class ListeningTests(TestCase):
    """The real reactor and sockets: the port nc and socat talk to."""

    def setUp(self) -> None:
        self.engine = make_engine()
        self.factory = ControlFactory(Controller(self.engine, names=set()))

    async def listen(self, description: str) -> object:
        port = await serverFromString(reactor, description).listen(self.factory)
        self.addCleanup(port.stopListening)
        return port

    async def run_script(self, description: str, script: bytes, half_close: bool = False) -> str:
        client = ClientProtocol(script)
        client.half_close = half_close
        await connectProtocol(clientFromString(reactor, description), client)
        return await client.closed

    @defer.inlineCallbacks
    def test_tcp_loopback(self):
        port = yield defer.ensureDeferred(self.listen("tcp:0:interface=127.0.0.1"))
        endpoint = f"tcp:127.0.0.1:{port.getHost().port}"
        output = yield defer.ensureDeferred(
            self.run_script(endpoint, b"block 203.0.113.5:1214\r\nbogus\ndump-blocks\nquit\n")
        )
        self.assertEqual(
            output.splitlines(),
            [
                "OK blocked 203.0.113.5:1214",
                "ERR unknown command 'bogus', try help",
                "203.0.113.5 1214 * manual 0"
                " first-seen=1970-01-01T00:00:00Z last-seen=1970-01-01T00:00:00Z",
                "OK 1 blocks",
                "OK bye",
            ],
        )
        self.assertIn((PEER, 1214, b""), self.engine.blocks)

    @defer.inlineCallbacks
    def test_half_close_still_gets_the_replies(self):
        """``echo ping | nc -N``: the client shuts its sending side right after the command."""
        port = yield defer.ensureDeferred(self.listen("tcp:0:interface=127.0.0.1"))
        endpoint = f"tcp:127.0.0.1:{port.getHost().port}"
        output = yield defer.ensureDeferred(
            self.run_script(endpoint, b"ping\nblock 203.0.113.9\n", half_close=True)
        )
        self.assertEqual(output, "OK pong\nOK blocked 203.0.113.9\n")

    @defer.inlineCallbacks
    def test_many_clients_at_once(self):
        port = yield defer.ensureDeferred(self.listen("tcp:0:interface=127.0.0.1"))
        endpoint = f"tcp:127.0.0.1:{port.getHost().port}"
        outputs = yield defer.gatherResults(
            [
                defer.ensureDeferred(
                    self.run_script(endpoint, f"block 198.51.100.{n}\nquit\n".encode())
                )
                for n in range(20)
            ]
        )
        self.assertEqual(
            sorted(outputs), sorted(f"OK blocked 198.51.100.{n}\nOK bye\n" for n in range(20))
        )
        self.assertEqual(len(self.engine.blocks), 20)

    @defer.inlineCallbacks
    def test_unix_socket(self):
        path = Path(self.mktemp())
        path.mkdir()
        socket = path / "control.sock"
        yield defer.ensureDeferred(self.listen(f"unix:{socket}"))
        output = yield defer.ensureDeferred(
            self.run_script(f"unix:{socket}", b"ban-dns-name a.example.net\nquit\n")
        )
        self.assertEqual(output, "OK banned a.example.net\nOK bye\n")
        self.assertEqual(self.factory.controller.names, {"a.example.net"})


class MakeServiceTests(SynchronousTestCase):
    def build(self, *argv: str) -> tuple:
        options = Options()
        options.parseOptions(["--queue", "3", *argv])
        memory = MemoryReactorClock()
        service = makeService(options, memory, FakeKernelQueue, RecordingSpoofer())
        service.privilegedStartService()
        service.startService()
        self.addCleanup(service.stopService)
        return service, memory

    def test_control_port_is_wired(self) -> None:
        dump_dir = self.mktemp()
        service, memory = self.build("--dump-dir", dump_dir)
        ((port, factory, _backlog, interface),) = memory.tcpServers
        self.assertEqual((port, interface), (4120, "127.0.0.1"))
        self.assertIs(factory.controller.engine, service.engine)
        self.assertEqual(factory.controller.dump_dir, Path(dump_dir))
        session = Session(factory)
        self.assertEqual(session.command("block 203.0.113.5"), ["OK blocked 203.0.113.5"])
        self.assertIn((PEER, 0, b""), service.engine.blocks)
        self.assertEqual(session.command("ban-dns-name a.example.net"), ["OK banned a.example.net"])
        self.assertEqual(session.command("reload"), [NOTHING_TO_RELOAD])
        expected = read_queue_stats(3) or dict.fromkeys(("queue_dropped",), "-")
        stats = dict(line.split() for line in session.command("stats")[:-1])
        self.assertEqual(stats["queue_dropped"], str(expected["queue_dropped"]))
        (reader,) = memory.getReaders()
        reader.handler.undecoded += 1  # the live reader's counters
        stats = dict(line.split() for line in session.command("stats")[:-1])
        self.assertEqual(
            (stats["reader_errors"], stats["reader_undecoded"], stats["reader_enobufs"]),
            ("0", "1", "0"),
        )

    def test_control_can_be_off(self) -> None:
        _service, memory = self.build("--control", "")
        self.assertEqual(memory.tcpServers, [])
