"""Shared set-up for the namespace end-to-end tests: root only, a fresh lab per test."""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from lab.gateway import Gateway
from lab.netlab import FTCLIENT, Lab

TOOLS = ("ip", "iptables", "ip6tables", "curl", "nc", "dig", "dnsmasq", "sysctl", "ss")


def skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root: the end-to-end tests build network namespaces and NFQUEUE rules"
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        return f"needs {', '.join(missing)} (make test installs them)"
    if shutil.which("twistd", path=str(Path(sys.executable).parent)) is None:
        return "needs p2pwall installed next to this Python (make test does it)"
    return None


SLOW = "P2PWALL_SLOW"


def slow_off() -> str | None:
    """Runs that repeat what others prove for another variant (ipset beside nft sets) keep
    ``make test`` near 15 minutes: they run when asked (``make test-slow``)."""
    if os.environ.get(SLOW) == "1":
        return None
    return f"a variant of runs made in every make test: runs with {SLOW}=1 (make test-slow)"


class LabCase(SynchronousTestCase):
    """A lab with simulated peers and a web server; ``gateway()`` starts the real daemon.

    The lab is dual-stack; ``family`` (4 or 6) is the one the helpers use (``addr``,
    ``web_ok``). ``slow`` classes run only when asked (``slow_off``)."""

    peers = 20
    peer_seconds = 90.0
    family = 4
    slow = False

    def setUp(self) -> None:
        reason = skip_reason() or (slow_off() if self.slow else None)
        if reason:
            raise self.skipTest(reason)
        self.lab = Lab(peers=self.peers)
        self.lab.setup()
        self.addCleanup(self.lab.teardown)
        self.lab.start_web()
        if self.peers:
            self.lab.start_peers(duration=self.peer_seconds)

    def gateway(self, *options: str, rules: str = "iptables",
                rule_options: Sequence[str] = ()) -> Gateway:  # fmt: skip
        gateway = Gateway(self.lab, options, rules=rules, rule_options=rule_options)
        gateway.install_rules()
        self.addCleanup(gateway.close)
        gateway.start()
        return gateway

    def ftclient(self, *args: str, timeout: float = 90.0) -> dict:
        """Run the simulated Kazaa client in ``rogue`` to the end; its JSON report."""
        report = self.lab.logpath("ftclient.json")
        report.unlink(missing_ok=True)
        done = self.lab.run(
            "rogue",
            [sys.executable, str(FTCLIENT), "--report", str(report), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        self.assertEqual(done.returncode, 0, done.stderr[-3000:])
        return json.loads(report.read_text())

    def addr(self, host: str) -> str:
        """``host``'s address in this test's ``family``."""
        return self.lab.addr(host, self.family)

    def web_ok(self, host: str, timeout: float = 2.0) -> bool:
        """One real HTTP request from ``host`` to the lab's web server."""
        web = self.addr("web")
        done = self.lab.run(
            host,
            ["curl", "-s", "-g", "-o", "/dev/null", "-w", "%{http_code}", "-m", str(timeout),
             f"http://[{web}]/" if self.family == 6 else f"http://{web}/"],
            capture_output=True,
            text=True,
        )  # fmt: skip
        return done.stdout == "200"

    def listen_http(self, ip: str, port: int) -> None:
        """A web server on ``ip:port`` in ``pub``: something for a connection to reach."""
        log = f"listener-{ip}-{port}.log"
        server = [sys.executable, "-m", "http.server", "--bind", ip, str(port)]
        self.lab.wait_listening("pub", "tcp", ip, port, self.lab.spawn("pub", server, log=log), log)

    def tcp_ok(self, host: str, ip: str, port: int, timeout: int = 2) -> bool:
        return self.lab.run(host, ["nc", "-z", "-w", str(timeout), ip, str(port)]).returncode == 0
