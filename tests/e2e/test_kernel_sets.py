"""NftSets against the kernel: the rules of ``p2pwall-rules --enforce kernel`` in a scratch
network namespace, the daemon's set writer run inside it (libnftables works in the namespace
of the process that calls it)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

CHECKOUT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(CHECKOUT)}
# Run inside the namespace: every step's outcome as one JSON object.
SCRIPT = r"""
import ipaddress, json, subprocess
from p2pwall.errors import KernelSetsError
from p2pwall.kernel.elements import Element, Lock
from p2pwall.kernel.nftsets import CHUNK, NftSets

def listed(kind, name):
    out = subprocess.run(["nft", "-j", "list", kind, "inet", "p2pwall", name],
                         capture_output=True, text=True, check=True).stdout
    return [i[kind] for i in json.loads(out)["nftables"] if kind in i][0].get("elem", [])

sets, got = NftSets(), {}
sets.check(90)
try:
    sets.check(120)
except KernelSetsError as error:
    got["check"] = str(error)
ppc = Element(4, "peer_port_client", ("198.19.0.1", 1214, "198.18.1.10"))
peer6 = Element(6, "peer", ("2001:2:0:1000::9",))
got["loaded"] = sets.load([(ppc, "lock"), (peer6, "block")],
                          [ipaddress.ip_network("198.18.5.0/24")])
got["after_load"] = [listed("map", "peer_port_client4"), listed("map", "peer6"),
                     listed("set", "allowed4")]
sets.apply([(Element(4, "peer", ("198.19.0.2",)), "block")], [(ppc, "block")], [peer6],
           [Lock("198.18.1.10", 4, 50, True, "02:00:00:00:00:0a"),
            Lock("198.18.1.11", 4, 30, False)], [])
got["after_apply"] = [listed("map", "peer_port_client4"), listed("map", "peer4"),
                      listed("map", "peer6")]
got["locks"] = [[lock.addr, lock.mac, lock.flows, lock.seconds] for lock in sets.locks()]
sets.apply([], [], [], [], [(4, "198.18.1.10")])
got["after_unlock"] = sorted(lock.addr for lock in sets.locks())
try:
    sets.apply([], [], [Element(4, "peer", ("198.19.0.99",))], [], [])
except KernelSetsError as error:
    got["refused"] = str(error)
got["big"] = sets.load([(Element(4, "peer", (f"198.19.{i >> 8}.{i & 255}",)), "block")
                        for i in range(2 * CHUNK + 5)], [])
got["big_listed"] = len(listed("map", "peer4"))
sets.clear()
got["cleared"] = [len(listed("map", "peer4")), len(listed("set", "locked_ip4"))]
print(json.dumps(got))
"""


class NftSetsKernelTests(SynchronousTestCase):
    def setUp(self) -> None:
        if os.geteuid() != 0 or not shutil.which("nft") or not shutil.which("ip"):
            raise self.skipTest("needs root, ip and nft to load the sets into a namespace")
        try:
            import nftables  # noqa: F401
        except ImportError:
            raise self.skipTest("needs python3-nftables (make test links it)") from None
        self.ns = f"p2pks{uuid.uuid4().hex[:8]}"
        subprocess.run(["ip", "netns", "add", self.ns], check=True)
        self.addCleanup(subprocess.run, ["ip", "netns", "del", self.ns], check=False)
        rules = subprocess.run(
            [str(Path(sys.executable).parent / "p2pwall-rules"), "--green-if", "g0",
             "--enforce", "kernel", "--lock-time", "90"],
            capture_output=True, text=True, check=True, env=ENV,
        ).stdout  # fmt: skip
        self.run_in(["sh", "-e"], rules)

    def run_in(self, argv: list[str], stdin: str) -> str:
        done = subprocess.run(
            ["ip", "netns", "exec", self.ns, *argv], input=stdin, text=True,
            capture_output=True, timeout=120, env=ENV,
        )  # fmt: skip
        self.assertEqual(done.returncode, 0, done.stderr[-3000:])
        return done.stdout

    def test_what_the_writer_writes_is_what_the_kernel_holds(self) -> None:
        got = json.loads(self.run_in([sys.executable, "-"], SCRIPT))
        self.assertIn("times out after 90 s, the daemon's time lock is 120 s", got["check"])
        self.assertEqual(got["loaded"], 2)
        ppc, peer6, allowed = got["after_load"]
        self.assertEqual(ppc, [[{"concat": ["198.19.0.1", 1214, "198.18.1.10"]},
                                {"goto": {"target": "lock"}}]])  # fmt: skip
        self.assertEqual(peer6, [["2001:2:0:1000::9", {"goto": {"target": "block"}}]])
        self.assertEqual(allowed, [{"prefix": {"addr": "198.18.5.0", "len": 24}}])
        ppc, peer4, peer6 = got["after_apply"]
        self.assertEqual(ppc[0][1], {"goto": {"target": "block"}})
        self.assertEqual(peer4, [["198.19.0.2", {"goto": {"target": "block"}}]])
        self.assertEqual(peer6, [])
        locks = {(addr, mac, flows) for addr, mac, flows, _ in got["locks"]}
        expected = {("198.18.1.10", "02:00:00:00:00:0a", True), ("198.18.1.10", None, True),
                    ("198.18.1.11", None, False)}  # fmt: skip
        self.assertEqual(locks, expected)
        self.assertTrue(all(25 <= seconds <= 50 for *_, seconds in got["locks"]))
        self.assertEqual(got["after_unlock"], ["198.18.1.11"])
        self.assertTrue(got["refused"].startswith("nft: "), got["refused"])
        self.assertNotIn("\n", got["refused"])
        self.assertEqual(got["big_listed"], got["big"])
        self.assertEqual(got["cleared"], [0, 0])
