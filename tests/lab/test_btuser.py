"""The ordinary user's load and the UDP echo, on loopback (no root): what works counts as ok,
what does not as a failure."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from lab import btuser

BTUSER = Path(btuser.__file__)


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class BtUserTests(SynchronousTestCase):
    def spawn(self, *argv: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([sys.executable, *argv], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)  # fmt: skip
        self.addCleanup(proc.wait, 10)
        self.addCleanup(proc.kill)
        return proc

    def echo(self) -> int:
        port = free_port(socket.SOCK_DGRAM)
        self.spawn(str(BTUSER), "echo", "--bind", f"127.0.0.1:{port}", "--seconds", "20")
        for seq in range(50):
            if btuser.check_udp("127.0.0.1", port, seq):
                return port
        self.fail("the echo never answered")

    def test_echo_answers_with_the_same_bytes(self) -> None:
        port = self.echo()
        self.assertTrue(btuser.check_udp("127.0.0.1", port, 7))
        self.assertFalse(btuser.check_udp("127.0.0.1", free_port(socket.SOCK_DGRAM), 7))

    def load(self, web: str, dns: str, echo: int) -> dict:
        report = Path(self.mktemp())
        done = subprocess.run(
            [sys.executable, str(BTUSER), "load", "--web", web, "--dns", dns,
             "--name", "www.lab.test", "--expect", "127.0.0.1", "--echo", f"127.0.0.1:{echo}",
             "--seconds", "2", "--report", str(report)],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        self.assertEqual(done.returncode, 0, done.stderr)
        return json.loads(report.read_text())

    def test_load_counts_ok_and_failures_by_kind(self) -> None:
        for tool in ("curl", "dig", "dnsmasq"):
            if shutil.which(tool) is None:
                raise self.skipTest(f"needs {tool}")
        echo = self.echo()
        web = free_port(socket.SOCK_STREAM)
        root = Path(self.mktemp())
        root.mkdir()
        (root / "index.html").write_text("ok\n")
        self.spawn("-m", "http.server", "--bind", "127.0.0.1", "--directory", str(root), str(web))
        dns = free_port(socket.SOCK_DGRAM)
        server = subprocess.Popen(
            ["dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv",
             "--no-hosts", "--bind-interfaces", "--listen-address=127.0.0.1", f"--port={dns}",
             "--pid-file=", "--host-record=www.lab.test,127.0.0.1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self.addCleanup(server.wait, 10)
        self.addCleanup(server.kill)
        url = f"http://127.0.0.1:{web}/"
        for _ in range(100):
            if btuser.check_web(url) and btuser.check_dns(f"127.0.0.1:{dns}", "www.lab.test",
                                                          "127.0.0.1"):  # fmt: skip
                break
        good = self.load(url, f"127.0.0.1:{dns}", echo)
        self.assertGreater(good["rounds"], 0)
        for kind in ("web", "dns", "udp"):
            self.assertEqual((good[kind]["ok"], good[kind]["failed"]), (good["rounds"], 0), kind)
        dead = self.load(url, f"127.0.0.1:{free_port(socket.SOCK_DGRAM)}", echo)
        self.assertEqual((dead["dns"]["ok"], dead["web"]["failed"]), (0, 0))
        self.assertEqual(dead["dns"]["failed"], dead["rounds"])
        self.assertEqual(len(dead["dns"]["failures"]), min(dead["rounds"], 20))
