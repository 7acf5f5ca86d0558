"""ftclient and ftpeers as programs, talking over loopback: no root, a few seconds."""

from __future__ import annotations

import contextlib
import io
import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from twisted.trial import unittest

from lab import ftclient, ftpeers, ftwire
from lab.netlab import FTCLIENT, FTPEERS

PEER_IPS = ("127.42.0.1", "127.42.0.2", "127.42.0.3")
HIDDEN_IP = "127.42.0.9"


def free_port(ips: tuple[str, ...]) -> int:
    """A port that is free for both TCP and UDP on every address in ``ips``."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        try:
            with contextlib.ExitStack() as stack:
                for ip in ips:
                    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                        sock = stack.enter_context(socket.socket(socket.AF_INET, kind))
                        sock.bind((ip, port))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port")


def wait_for(
    ready: Callable[[], bool], proc: subprocess.Popen[bytes], log: Path, timeout: float = 10
) -> None:
    """Poll ``ready`` until true; fail fast if ``proc`` died, and never wait forever."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"{proc.args[1]} not ready: {log.read_text()[-2000:]}")
        time.sleep(0.05)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(10)


class ArgumentTests(unittest.TestCase):
    def test_client_defaults_and_limits(self) -> None:
        cfg, report = ftclient.parse_args(["--peer", "198.19.1.1", "--ip", "198.18.1.10"])
        self.assertEqual(cfg.cache, [("198.19.1.1", 1214)])
        self.assertEqual((cfg.name, cfg.enc, cfg.port, cfg.no_udp), ("KaZaA", 0x29, 1214, False))
        self.assertEqual(cfg.supernode, "198.19.1.1:1214")
        self.assertIsNone(report)
        for bad in (
            ["--peer", "8.8.8.8"],
            ["--peer", "198.19.1.1", "--scale", "0"],
            ["--peer", "198.19.1.1", "--linger", "601"],
            ["--peer", "198.19.1.1", "--name", "eDonkey"],
            [],
        ):
            with contextlib.redirect_stderr(io.StringIO()), self.assertRaises(SystemExit):
                ftclient.parse_args(bad)

    def test_cache_size_and_hidden_peers(self) -> None:
        peers = [f"198.19.1.{i}" for i in range(1, 6)]
        argv = [a for p in peers for a in ("--peer", p)]
        argv += ["--cache-size", "3", "--hidden-peer", "198.19.1.9", "--hidden-peer", peers[0]]
        cfg, _ = ftclient.parse_args([*argv, "--ip", "198.18.1.10"])
        self.assertEqual([ip for ip, _ in cfg.cache], peers[:3])
        self.assertEqual(cfg.hidden, [("198.19.1.9", 1214)])  # a cached peer is not hidden

    def test_scaling_keeps_timeouts_sane(self) -> None:
        timing = ftclient.Timing().scaled(0.01)
        self.assertAlmostEqual(timing.phase1, 0.05)
        self.assertEqual(timing.connect_timeout, ftclient.MIN_TIMEOUT)
        self.assertEqual(timing.hello_batch, ftclient.Timing().hello_batch)

    def test_hidden_peers_are_mixed_in_evenly(self) -> None:
        cache = [(f"c{i}", 1) for i in range(6)]
        hidden = [("h0", 1), ("h1", 1)]
        order = [ip for ip, _ in ftclient.mix(cache, hidden)]
        self.assertEqual(order, ["c0", "c1", "h0", "c2", "c3", "c4", "h1", "c5"])

    def test_peers_arguments(self) -> None:
        args = ftpeers.parse_args(["--peer", "198.19.1.1", "--peer", "198.19.1.1:1214"])
        self.assertEqual(args.peers, [("198.19.1.1", 1214)])
        with contextlib.redirect_stderr(io.StringIO()), self.assertRaises(SystemExit):
            ftpeers.parse_args(["--peer", "198.19.1.1", "--duration", "0"])


class LoopbackRunTests(unittest.TestCase):
    """The two programs against each other, so the root-only lab test is not the first run."""

    def run_pair(self, *client_args: str, probe: bool = False) -> tuple[dict, str, str]:
        port = free_port((*PEER_IPS, HIDDEN_IP, "127.0.0.1"))
        tmp = Path(self.mktemp())
        tmp.mkdir()
        peers_file = tmp / "peers"
        peers_file.write_text("".join(f"{ip}:{port}\n" for ip in PEER_IPS))
        report = tmp / "report.json"
        # Output goes to files: a pipe nobody reads during the run would fill and stall.
        peers_log, client_log = tmp / "peers.log", tmp / "client.log"
        peers = self.start(
            [FTPEERS, "--peers-file", peers_file, "--peer", f"{HIDDEN_IP}:{port}",
             "--duration", "20"],
            peers_log,
        )  # fmt: skip
        wait_for(lambda: " ready " in peers_log.read_text(), peers, peers_log)
        client = self.start(
            [FTCLIENT, "--peers-file", peers_file, "--hidden-peer", f"{HIDDEN_IP}:{port}",
             "--ip", "127.0.0.1", "--port", str(port), "--scale", "0.1", "--linger", "1",
             "--report", report, *client_args],
            client_log,
        )  # fmt: skip
        wait_for(lambda: "phase" in client_log.read_text(), client, client_log)
        if probe:
            self.send_probe(port)
        client.wait(30)
        self.assertEqual(client.returncode, 0, client_log.read_text())
        peers.terminate()
        peers.wait(10)
        return json.loads(report.read_text()), client_log.read_text(), peers_log.read_text()

    def start(self, argv: list[object], log: Path) -> subprocess.Popen[bytes]:
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, *map(str, argv)], stdout=out, stderr=subprocess.STDOUT
            )
        self.addCleanup(stop, proc)
        return proc

    def send_probe(self, port: int) -> None:
        """What ftwall does: send the client its own hello; a pong must come back."""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            sock.settimeout(5)
            sock.sendto(ftwire.build_hello("KaZaA", 0xA9), ("127.0.0.1", port))
            data, _ = sock.recvfrom(2048)
        self.assertEqual(ftwire.parse_pong(data), ftwire.Pong(ftwire.PONG, 0xA9, "KaZaA", 0x19))

    def test_udp_mode_pongs_breakthroughs_and_probe(self) -> None:
        report, out, peer_log = self.run_pair(probe=True)
        self.assertEqual(report["mode"], "udp")
        self.assertEqual(report["hellos_sent"], len(PEER_IPS))
        self.assertEqual(report["pongs_received"], len(PEER_IPS))
        self.assertEqual(report["followups_sent"], len(PEER_IPS))
        self.assertEqual(report["connects_succeeded"]["1"], len(PEER_IPS))
        self.assertGreater(report["connects_tried"]["2"], 0)
        self.assertGreater(report["connects_tried"]["3"], 0)
        self.assertEqual(report["probes_answered"], 1)
        self.assertEqual(report["probes"][0]["from"].split(":")[0], "127.0.0.1")
        phases = {b["phase"] for b in report["breakthroughs"]}
        self.assertEqual(phases, {1, 2, 3})
        self.assertTrue(any(b["hidden"] for b in report["breakthroughs"]))
        self.assertEqual(report["downloads_tried"], 0)
        for phase in (1, 2, 3):
            self.assertIn(f"phase {phase} done:", out)
        self.assertIn("hello peer=", peer_log)
        self.assertIn("session-start", peer_log)

    def test_no_udp_mode_downloads(self) -> None:
        report, out, peer_log = self.run_pair("--no-udp", "--supernode", f"{PEER_IPS[1]}:1214")
        self.assertEqual(report["mode"], "no-udp")
        self.assertEqual(report["hellos_sent"], 0)
        self.assertEqual(report["connects_tried"]["1"], 0)
        self.assertGreater(report["downloads_tried"], 0)
        self.assertGreater(report["downloads_succeeded"], 0)
        self.assertIn("download peer=", peer_log)
        self.assertNotIn("hello peer=", peer_log)
