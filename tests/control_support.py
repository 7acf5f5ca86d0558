"""What the command and the protocol tests share: a ``Session`` over a ``StringTransport`` and a
``ControlTestCase`` whose ``Controller`` has every feature."""

from __future__ import annotations

import os
from pathlib import Path

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from p2pwall.commands import Controller, parse_queue_stats
from p2pwall.control import ControlFactory
from p2pwall.testing import make_engine, packed

# What ``reload`` answers with neither a patterns file nor kernel sets.
NOTHING_TO_RELOAD = "ERR nothing to reload (no patterns file, no kernel sets)"

NOW = 1_700_000_000
NOW_ISO = "2023-11-14T22:13:20Z"
FIXTURES = Path(__file__).parent / "tools" / "fixtures"
QUEUE_TEXT = (FIXTURES / "nfnetlink_queue").read_text()
PEER = packed("203.0.113.5")
CLIENT = packed("10.0.0.5")


class Session:
    """One control connection over a ``StringTransport``."""

    def __init__(self, factory: ControlFactory, port: int = 40000) -> None:
        address = IPv4Address("TCP", "127.0.0.1", port)
        self.protocol = factory.buildProtocol(address)
        self.transport = StringTransport(peerAddress=address)
        self.protocol.makeConnection(self.transport)

    def send(self, data: bytes) -> list[str]:
        """Feed raw bytes; return the reply lines they caused."""
        self.transport.clear()
        self.protocol.dataReceived(data)
        return self.transport.value().decode().split("\n")[:-1]

    def command(self, line: str) -> list[str]:
        return self.send(line.encode() + b"\n")


class ControlTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        self.engine = make_engine(self.clock)
        self.names: set[str] = set()
        self.reloads: list[list[str] | None] = []
        self.dump_dir = Path(self.mktemp())
        self.dump_dir.mkdir()
        self.factory = ControlFactory(
            Controller(
                self.engine,
                names=self.names,
                reload=self.reload,
                queue_stats=lambda: parse_queue_stats(QUEUE_TEXT, 3),
                dump_dir=self.dump_dir,
                reader_stats=lambda: {
                    "reader_errors": 2,
                    "reader_undecoded": 5,
                    "reader_enobufs": 1,
                    "reader_cut": 3,
                    "reader_refused": 4,
                },
            )
        )
        self.session = Session(self.factory)

    def reload(self) -> list[str] | None:
        return self.reloads.pop(0)

    def command(self, line: str) -> list[str]:
        return self.session.command(line)

    def snapshot(self) -> tuple:
        """Everything a command could change."""
        return (
            [
                (key, block.origin, block.seen, block.name)
                for key, block in self.engine.blocks.items()
            ],
            sorted(self.names),
            self.engine.accept_all,
            [(c.addr, c.until) for c in self.engine.clients],
            sorted(os.listdir(self.dump_dir)),
        )
