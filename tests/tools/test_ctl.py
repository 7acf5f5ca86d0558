"""p2pwall-ctl against a real control port on loopback, in-process and as a child process."""

from __future__ import annotations

import os
import sys
from io import StringIO
from pathlib import Path

from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase

from p2pwall.commands import Controller
from p2pwall.control import ControlFactory
from p2pwall.testing import make_engine, packed
from p2pwall.tools.ctl import (
    DEFAULT_ENDPOINT,
    ControlClient,
    ControlReply,
    ctl,
    default_endpoint,
    parse_args,
)

ROOT = Path(__file__).resolve().parents[2]


def closed_port() -> int:
    """A loopback port nobody listens on."""
    port = reactor.listenTCP(0, Factory.forProtocol(Protocol), interface="127.0.0.1")
    number = port.getHost().port
    port.stopListening()
    return number


async def run_script(*argv: str, module: str = "p2pwall.tools.ctl") -> tuple[str, str, int]:
    """Run ``python -m MODULE``, as its console script would run, in a child process."""
    out, err, code = await getProcessOutputAndValue(
        sys.executable,
        ["-m", module, *argv],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        path=str(ROOT),
    )
    return out.decode(), err.decode(), code


class Hangup(Protocol):
    def connectionMade(self) -> None:
        self.transport.loseConnection()


class LoopbackCase(TestCase):
    """A control port on 127.0.0.1 in front of a fresh engine."""

    def setUp(self) -> None:
        self.engine = make_engine()
        self.factory = ControlFactory(Controller(self.engine, names=set()))
        self.endpoint = self.listen(self.factory)

    def listen(self, factory: Factory) -> str:
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return f"tcp:127.0.0.1:{port.getHost().port}"

    async def ctl(self, *argv: str, endpoint: str | None = None) -> tuple[int, str, str]:
        out, err = StringIO(), StringIO()
        args = parse_args(["--control", endpoint or self.endpoint, *argv])
        status = await ctl(reactor, args, out, err)
        return status, out.getvalue(), err.getvalue()


class CtlTests(LoopbackCase):
    async def test_ok_exits_0(self) -> None:
        self.assertEqual(
            await self.ctl("block", "203.0.113.5:1214"), (0, "OK blocked 203.0.113.5:1214\n", "")
        )
        self.assertIn((packed("203.0.113.5"), 1214, b""), self.engine.blocks)

    async def test_err_exits_1(self) -> None:
        self.assertEqual(
            await self.ctl("unblock", "203.0.113.5"), (1, "ERR not blocked: 203.0.113.5\n", "")
        )

    async def test_explain_and_unlock(self) -> None:
        """What an admin types when a host cannot connect: why, then free it."""
        self.engine.lock(packed("10.0.0.5"), "test")
        status, out, _err = await self.ctl("explain", "10.0.0.5")
        self.assertEqual(status, 0)
        self.assertEqual(out.splitlines()[0], "address 10.0.0.5 green allowed=no")
        self.assertTrue(out.splitlines()[-1].startswith("OK 10.0.0.5: locked until "))
        self.assertEqual(await self.ctl("unlock", "10.0.0.5"), (0, "OK unlocked 10.0.0.5\n", ""))
        self.assertEqual(
            await self.ctl("unlock", "10.0.0.5"), (1, "ERR not locked: 10.0.0.5\n", "")
        )

    async def test_multi_line_reply(self) -> None:
        self.factory.controller.names.update({"b.example.net", "a.example.net"})
        self.assertEqual(
            await self.ctl("dump-dns-names"), (0, "a.example.net\nb.example.net\nOK 2 names\n", "")
        )

    async def test_cannot_connect_exits_2(self) -> None:
        endpoint = f"tcp:127.0.0.1:{closed_port()}"
        status, out, err = await self.ctl("ping", endpoint=endpoint)
        self.assertEqual((status, out), (2, ""))
        self.assertTrue(err.startswith(f"p2pwall-ctl: cannot connect to {endpoint}: "), err)
        self.assertIn("refused", err)
        self.assertIn("is p2pwall running with this --control?", err)

    async def test_bad_endpoint_exits_2(self) -> None:
        status, out, err = await self.ctl("ping", endpoint="tcp:4120:interface=127.0.0.1")
        self.assertEqual((status, out), (2, ""))
        self.assertIn("bad endpoint 'tcp:4120:interface=127.0.0.1'", err)
        self.assertIn("use tcp:HOST:PORT", err)

    async def test_hangup_exits_2(self) -> None:
        endpoint = self.listen(Factory.forProtocol(Hangup))
        self.assertEqual(
            await self.ctl("ping", endpoint=endpoint),
            (2, "", "p2pwall-ctl: connection closed before the reply to 'ping'\n"),
        )

    async def test_silence_exits_2(self) -> None:
        endpoint = self.listen(Factory.forProtocol(Protocol))
        self.assertEqual(
            await self.ctl("--timeout", "0.2", "ping", endpoint=endpoint),
            (2, "", "p2pwall-ctl: no reply to 'ping' within 0.2s\n"),
        )

    async def test_unix_socket(self) -> None:
        directory = Path(self.mktemp())
        directory.mkdir()
        path = directory / "control.sock"
        port = reactor.listenUNIX(str(path), self.factory)
        self.addCleanup(port.stopListening)
        self.assertEqual(await self.ctl("ping", endpoint=f"unix:{path}"), (0, "OK pong\n", ""))

    def test_command_must_be_one_line(self) -> None:
        stderr = StringIO()
        self.patch(sys, "stderr", stderr)
        with self.assertRaises(SystemExit) as raised:
            parse_args(["ping\nquit"])
        self.assertEqual(raised.exception.code, 2)
        self.assertIn("the command must be one line", stderr.getvalue())

    async def test_client_pipelines(self) -> None:
        """Replies pair with commands in order, multi-line ones included (napigator relies on
        it)."""
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", int(self.endpoint.rsplit(":", 1)[1]))
        client = await connectProtocol(endpoint, ControlClient())
        self.addCleanup(client.transport.loseConnection)
        replies = await defer.gatherResults(
            [
                client.command("block 203.0.113.5"),
                client.command("dump-blocks"),
                client.command("nonsense"),
            ]
        )
        self.assertEqual(
            replies,
            [
                ControlReply([], "OK blocked 203.0.113.5"),
                ControlReply(
                    [
                        "203.0.113.5 * * manual 0"
                        " first-seen=1970-01-01T00:00:00Z last-seen=1970-01-01T00:00:00Z"
                    ],
                    "OK 1 blocks",
                ),
                ControlReply([], "ERR unknown command 'nonsense', try help"),
            ],
        )
        self.assertEqual([r.ok for r in replies], [True, True, False])


class ScriptTests(LoopbackCase):
    """The same code path as the console script: a child process and its exit status."""

    async def test_child_process_exit_statuses(self) -> None:
        self.assertEqual(
            await run_script("--control", self.endpoint, "block", "203.0.113.9", "10.0.0.5"),
            ("OK blocked 203.0.113.9 for client 10.0.0.5\n", "", 0),
        )
        self.assertIn((packed("203.0.113.9"), 0, packed("10.0.0.5")), self.engine.blocks)
        self.assertEqual(
            await run_script("--control", self.endpoint, "accept-all", "2"),
            ("ERR accept-all takes 0 or 1\n", "", 1),
        )
        out, err, code = await run_script("--control", f"tcp:127.0.0.1:{closed_port()}", "ping")
        self.assertEqual((out, code), ("", 2))
        self.assertIn("cannot connect", err)


class DefaultEndpointTests(TestCase):
    """``p2pwall-ctl stats`` finds the daemon the systemd unit runs, with no --control."""

    def setUp(self) -> None:
        self.patch(os, "environ", {k: v for k, v in os.environ.items() if k != "P2PWALL_CONTROL"})
        self.path = os.path.join(self.mktemp() + ".d", "control.sock")
        os.makedirs(os.path.dirname(self.path))

    def test_the_daemons_tcp_port_when_there_is_no_service_socket(self) -> None:
        self.assertEqual(default_endpoint(self.path), DEFAULT_ENDPOINT)
        Path(self.path).write_text("a file, not a socket")
        self.assertEqual(default_endpoint(self.path), DEFAULT_ENDPOINT)

    def test_the_service_socket_when_it_exists(self) -> None:
        import socket

        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(listener.close)
        listener.bind(self.path)
        self.assertEqual(default_endpoint(self.path), f"unix:{self.path}")

    def test_the_environment_comes_first(self) -> None:
        os.environ["P2PWALL_CONTROL"] = "tcp:127.0.0.1:4999"
        self.assertEqual(default_endpoint(self.path), "tcp:127.0.0.1:4999")
        self.assertEqual(parse_args(["stats"]).control, "tcp:127.0.0.1:4999")
