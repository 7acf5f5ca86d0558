"""The namespace lab: naming without root, and a real end-to-end self-test as root.

The self-test runs the simulated client against the simulated peers with no
firewall in ``gw``: if it cannot break through there, a p2pwall test that sees
no breakthroughs proves nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

from twisted.trial import unittest

from lab import ftwire, netlab
from lab.netlab import FTCLIENT, Lab, LabError

REPO = Path(__file__).resolve().parents[2]
TOOLS = ("ip", "sysctl", "ss", "dnsmasq", "curl", "dig")

# Sent from pub through gw: what a probe from "the internet" looks like to the client.
PROBE = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 0))
s.settimeout(0.5)
for _ in range(10):
    s.sendto(bytes.fromhex(sys.argv[3]), (sys.argv[2], 1214))
    try:
        print(s.recvfrom(2048)[0].hex())
        break
    except TimeoutError:
        pass
"""


def need_root() -> None:
    if os.geteuid() != 0:
        raise unittest.SkipTest("needs root: the lab creates network namespaces, veths, a bridge")
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        raise unittest.SkipTest(f"needs {', '.join(missing)} on PATH")


def our_namespaces(lab: Lab) -> list[str]:
    return [name for name in netlab._netns_list() if name.startswith(lab.prefix)]


class NamingTests(unittest.TestCase):
    """No root needed: what a Lab object promises before it builds anything."""

    def test_names_and_addresses(self) -> None:
        lab = Lab(peers=3, run_id="abc123")
        self.assertEqual(lab.ns("rogue"), "p2pwabc123-rogue")
        self.assertEqual(lab.ns("web"), lab.ns("pub"))
        self.assertEqual(
            lab.namespaces, [f"p2pwabc123-{h}" for h in ("gw", "pub", "rogue", "user")]
        )
        self.assertEqual(lab.addr("rogue"), "198.18.1.10")
        self.assertEqual(lab.addr("user"), "198.18.1.20")
        self.assertEqual(lab.addr("gw"), "198.18.1.1")
        self.assertEqual(lab.addr("dns"), "198.19.0.53")
        self.assertEqual(lab.peers, [(f"198.19.1.{i}", 1214) for i in (1, 2, 3)])
        self.assertRaises(LabError, lab.ns, "router")
        self.assertRaises(LabError, lab.addr, "nowhere")

    def test_run_ids_are_unique_and_checked(self) -> None:
        self.assertNotEqual(Lab().prefix, Lab().prefix)
        self.assertRaises(LabError, Lab, run_id="../etc")
        self.assertRaises(LabError, Lab, peers=255)

    def test_only_lab_addresses(self) -> None:
        self.assertRaises(LabError, netlab.check_lab_addr, "10.1.2.3")
        self.assertRaises(LabError, Lab, extra_addrs=["198.18.5.5"])  # green side
        self.assertRaises(LabError, Lab, extra_addrs=["198.19.255.9"])  # gw-pub link
        self.assertIn("198.19.2.1", Lab(extra_addrs=["198.19.2.1"]).public_addrs)

    def test_setup_without_root_says_why(self) -> None:
        with mock.patch("os.geteuid", return_value=1000):
            err = self.assertRaises(LabError, Lab().setup)
        self.assertIn("the lab needs root: network namespaces", str(err))


class LabSelfTest(unittest.TestCase):
    """Root only: build the lab, break through it with the simulator, tear it down."""

    def setUp(self) -> None:
        need_root()

    def test_simulator_breaks_through_an_open_gateway(self) -> None:
        lab = Lab(peers=12)
        self.addCleanup(lab.teardown)
        lab.setup()
        lab.setup()  # idempotent: completes or confirms, never fails on what exists
        lab.start_web()
        lab.start_dns(
            {"www.winmx.com": "198.19.2.1", "www.example.org": ["198.19.0.80", "198.19.2.2"]}
        )
        lab.start_peers(duration=60)
        cache, hidden = lab.peers[:10], lab.peers[10:]
        cache_file = lab.write_peers_file("cache.peers", cache)
        client = [sys.executable, str(FTCLIENT), "--peers-file", str(cache_file), "--scale", "0.25"]
        hidden_args = [arg for ip, port in hidden for arg in ("--hidden-peer", f"{ip}:{port}")]
        rogue = lab.spawn(
            "rogue",
            [*client, *hidden_args, "--linger", "1.5", "--report", str(lab.workdir / "rogue.json")],
            log="rogue.log",
        )
        # The user host runs a UDP-less client at the same time: downloads must work too.
        user = lab.spawn(
            "user",
            [*client, "--no-udp", "--name", "Grokster", "--report", str(lab.workdir / "user.json")],
            log="user.log",
        )

        web = lab.run("user", ["curl", "-sS", "-m", "5", "http://198.19.0.80/"],
                      capture_output=True, text=True)  # fmt: skip
        self.assertEqual(web.returncode, 0, web.stderr)
        self.assertIn("p2pwall lab web", web.stdout)
        dig = ["dig", "+short", "+time=2", "+tries=2", "@198.19.0.53"]
        answer = lab.run("user", [*dig, "www.winmx.com"], capture_output=True, text=True)
        self.assertEqual(answer.stdout.split(), ["198.19.2.1"], answer.stderr)
        answer = lab.run("user", [*dig, "www.example.org"], capture_output=True, text=True)
        self.assertEqual(sorted(answer.stdout.split()), ["198.19.0.80", "198.19.2.2"])

        # Wait for phase 3 to end, then probe the lingering client from the internet side.
        deadline = time.monotonic() + 20
        while "lingering" not in lab.read_log("rogue.log"):
            self.assertIsNone(rogue.poll(), lab.read_log("rogue.log"))
            self.assertLess(time.monotonic(), deadline, lab.read_log("rogue.log"))
            time.sleep(0.1)
        hello = ftwire.build_hello("KaZaA", 0x29).hex()
        probe = lab.run("pub", [sys.executable, "-c", PROBE, "198.19.1.1", "198.18.1.10", hello],
                        capture_output=True, text=True)  # fmt: skip
        pong = ftwire.parse_pong(bytes.fromhex(probe.stdout.strip()))
        self.assertEqual(pong, ftwire.Pong(ftwire.PONG, 0x29, "KaZaA", 0x19), probe.stderr)

        for proc, log in ((rogue, "rogue.log"), (user, "user.log")):
            self.assertEqual(proc.wait(30), 0, lab.read_log(log))
        report = json.loads((lab.workdir / "rogue.json").read_text())
        self.assertEqual(report["own"], "198.18.1.10:1214")
        self.assertEqual(report["hellos_sent"], len(cache))
        self.assertEqual(report["pongs_received"], len(cache))
        self.assertEqual(report["connects_succeeded"]["1"], len(cache))
        self.assertGreater(len(report["breakthroughs"]), len(cache))
        self.assertTrue(any(b["hidden"] for b in report["breakthroughs"]))
        self.assertEqual(report["probes_answered"], 1)
        self.assertEqual(report["probes"][0]["from"].split(":")[0], "198.19.1.1")
        report = json.loads((lab.workdir / "user.json").read_text())
        self.assertEqual(report["hellos_sent"], 0)
        self.assertGreater(report["downloads_succeeded"], 0)
        peer_log = lab.read_log("ftpeers.log")
        self.assertIn("src=198.18.1.10:1214 name=KaZaA", peer_log)  # no NAT on the way
        self.assertIn("download peer=", peer_log)

        pids = {proc.pid for proc in lab.procs}
        lab.teardown()
        self.assertEqual(our_namespaces(lab), [])
        self.assertFalse(any(netlab._pid_alive(pid) for pid in pids))
        self.assertFalse(lab.workdir.exists())
        lab.teardown()  # idempotent

    def test_sigterm_tears_the_lab_down(self) -> None:
        """A killed test run must not leave namespaces or processes behind."""
        script = (
            "import sys, time\n"
            "from lab.netlab import Lab\n"
            "lab = Lab(peers=2).setup()\n"
            "lab.start_web()\n"
            "print(lab.run_id, lab.procs[0].pid, flush=True)\n"
            "time.sleep(30)\n"
        )
        owner = subprocess.Popen(
            [sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE, text=True
        )
        self.addCleanup(owner.wait, 10)
        self.addCleanup(owner.kill)
        assert owner.stdout is not None
        run_id, web_pid = owner.stdout.readline().split()
        lab = Lab(run_id=run_id)
        self.addCleanup(lab.teardown)  # only does something if the test fails
        self.assertEqual(len(our_namespaces(lab)), 4)
        owner.send_signal(signal.SIGTERM)
        self.assertEqual(owner.wait(15), 128 + signal.SIGTERM)
        self.assertEqual(our_namespaces(lab), [])
        self.assertFalse(netlab._pid_alive(int(web_pid)))

    def test_cli_up_status_down(self) -> None:
        cli = [sys.executable, "-m", "lab.netlab"]
        up = subprocess.run([*cli, "up", "--peers", "3", "--web", "--dns", "a.lab=198.19.2.3"],
                            cwd=REPO, capture_output=True, text=True, timeout=60)  # fmt: skip
        self.assertEqual(up.returncode, 0, up.stderr)
        run_id = up.stdout.split()[1]
        lab = Lab(run_id=run_id)
        self.addCleanup(lab.teardown)  # only does something if the test fails
        answer = lab.run("rogue", ["dig", "+short", "+time=2", "@198.19.0.53", "a.lab"],
                         capture_output=True, text=True)  # fmt: skip
        self.assertEqual(answer.stdout.split(), ["198.19.2.3"])
        status = subprocess.run([*cli, "status"], cwd=REPO, capture_output=True, text=True,
                                timeout=60)  # fmt: skip
        self.assertIn(f"{run_id}: detached", status.stdout)
        down = subprocess.run([*cli, "down", run_id], cwd=REPO, capture_output=True, text=True,
                              timeout=60)  # fmt: skip
        self.assertEqual(down.returncode, 0, down.stderr)
        self.assertEqual(our_namespaces(lab), [])
        self.assertFalse(lab.workdir.exists())
