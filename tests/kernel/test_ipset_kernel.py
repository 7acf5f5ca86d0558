"""IpsetSets through pyroute2 against the kernel's ipset, in a scratch network namespace whose
sets p2pwall-rules made (root only)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from ..tools.test_rules import rendered

CHECKOUT = Path(__file__).resolve().parents[2]
# Run in the namespace: IpsetSets loads, applies and reads locks; prints what it read.
SCRIPT = """
import ipaddress, json, sys
from p2pwall.errors import KernelSetsError
from p2pwall.kernel.elements import Element, Lock
from p2pwall.kernel.ipset import IpsetSets

sets = IpsetSets()
out = {}
sets.check(45)
try:
    sets.check(60)
except KernelSetsError as error:
    out["check"] = str(error)
ppc = Element(4, "peer_port_client", ("198.19.0.1", 1214, "198.18.1.10"))
pc = Element(6, "peer_client", ("2001:2::1", "2001:2:0:1::10"))
peers = [(Element(4, "peer", (f"198.19.{n // 250}.{n % 250 + 1}",)), "block") for n in range(500)]
out["loaded"] = sets.load([(ppc, "lock"), (pc, "block_udp_passes"), *peers],
                          [ipaddress.ip_network("0.0.0.0/0")])
sets.apply([(Element(6, "peer_port", ("2001:2::2", 80)), "lock_flows")], [(ppc, "block")],
           [peers[0][0]], [Lock("198.18.1.10", 4, 30.5, True), Lock("2001:2:0:1::10", 6, 9, False)],
           [])
out["locks"] = sorted([lock.addr, lock.family, lock.seconds, lock.flows] for lock in sets.locks())
sets.apply([], [], [], [], [(4, "198.18.1.10"), (4, "198.18.1.99")])
out["after_unlock"] = sorted(lock.addr for lock in sets.locks())
if sys.argv[1:] == ["clear"]:
    sets.clear()
json.dump(out, sys.stdout)
"""


class IpsetKernelTests(SynchronousTestCase):
    def setUp(self) -> None:
        if os.geteuid() != 0 or not shutil.which("ipset") or not shutil.which("iptables"):
            raise self.skipTest("needs root, ipset and iptables to make sets in a namespace")
        self.ns = f"p2pis{uuid.uuid4().hex[:8]}"
        subprocess.run(["ip", "netns", "add", self.ns], check=True)
        self.addCleanup(subprocess.run, ["ip", "netns", "del", self.ns], check=False)
        rules = rendered("-i", "lo", "--enforce", "kernel", "--sets", "ipset", "--lock-time", "45")
        self.run_in(["sh", "-e"], rules)

    def run_in(self, argv: list[str], stdin: str | None = None) -> str:
        env = {**os.environ, "PYTHONPATH": str(CHECKOUT)}
        done = subprocess.run(["ip", "netns", "exec", self.ns, *argv], input=stdin, text=True,
                              capture_output=True, env=env, timeout=120)  # fmt: skip
        self.assertEqual(done.returncode, 0, done.stderr[-2000:])
        return done.stdout

    def members(self, name: str) -> list[str]:
        listing = self.run_in(["ipset", "list", name]).split("Members:\n")[1]
        return sorted(line for line in listing.splitlines() if line)

    def test_load_apply_and_locks_as_the_kernel_holds_them(self) -> None:
        out = json.loads(self.run_in([sys.executable, "-c", SCRIPT]))
        self.assertIn("--lock-time", out["check"])
        self.assertEqual(out["loaded"], 502)
        # The replaced block moved to its new action's set, both protocols.
        self.assertEqual(self.members("p2pwall-ppc-lock4"), [])
        self.assertEqual(self.members("p2pwall-ppc-block4"), [
            "198.19.0.1,tcp:1214,198.18.1.10", "198.19.0.1,udp:1214,198.18.1.10",
        ])  # fmt: skip
        self.assertEqual(
            self.members("p2pwall-pp-flows6"), ["2001:2::2,tcp:80", "2001:2::2,udp:80"]
        )
        self.assertEqual(len(self.members("p2pwall-p-block4")), 499, "one removed")
        # Every block is in its shape's set too, where a new flow meets it first.
        self.assertEqual(len(self.members("p2pwall-p4")), 499)
        self.assertEqual(self.members("p2pwall-ppc4"), self.members("p2pwall-ppc-block4"))
        self.assertEqual(self.members("p2pwall-pp6"), self.members("p2pwall-pp-flows6"))
        # Every port of both protocols, for that client alone.
        self.assertEqual(len(self.members("p2pwall-pc-block-up6")), 2 * 65536)
        self.assertEqual(self.members("p2pwall-allowed4"), ["0.0.0.0/1", "128.0.0.0/1"])
        self.assertEqual(self.members("p2pwall-allowed6"), [])
        # Written with their seconds rounded up (31, 9), read back with what is left.
        (v4, v4_seconds, v4_flows), (v6, v6_seconds, v6_flows) = [
            (addr, seconds, flows) for addr, _, seconds, flows in out["locks"]
        ]
        self.assertEqual(
            (v4, v4_flows, v6, v6_flows), ("198.18.1.10", True, "2001:2:0:1::10", False)
        )
        self.assertTrue(29 <= v4_seconds <= 31 and 7 <= v6_seconds <= 9, out["locks"])
        self.assertEqual(out["after_unlock"], ["2001:2:0:1::10"])
        # Nothing of the swaps is left behind.
        self.assertNotIn("-new", self.run_in(["ipset", "list", "-n"]))

    def test_clear_empties_blocks_and_locks(self) -> None:
        self.run_in([sys.executable, "-c", SCRIPT, "clear"])
        saved = self.run_in(["ipset", "save"])
        added = sorted(line for line in saved.splitlines() if line.startswith("add "))
        self.assertEqual(
            added, ["add p2pwall-allowed4 0.0.0.0/1", "add p2pwall-allowed4 128.0.0.0/1"]
        )
