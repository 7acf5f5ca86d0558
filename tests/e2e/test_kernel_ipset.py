"""Kernel enforcement by ipset (``--enforce kernel --sets ipset``) end to end: the real ipset
sets and iptables chains in the lab's gateway, filled by the real daemon, dropping what the
daemon never sees (the Kazaa-proof run is in test_fasttrack, the IPv6 runs in test_ipv6)."""

from __future__ import annotations

import sys
import time

from lab import gateway as lab_gateway
from lab.gateway import Gateway
from lab.netlab import PEER_PORT, LabError

from .kernelsets import ipset_drops, kernel_options
from .test_firewall import (
    CLOSED_OUTSIDE,
    IPTABLES_FIREWALL,
    MSS,
    MSS_CLAMP,
    WEB,
    WEB_ADDR,
    AdminFirewallCase,
)
from .test_kernel import RATE, STREAM, STREAM_PORT, KernelLabCase
from .test_poison import HELLO, ForgeryCase

LOCK = 4.0
CLIENT = "198.18.1.10"
# One datagram from a port no flow used yet: a new UDP flow.
NEW_FLOW = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 40001))
s.sendto(b"new flow", (sys.argv[1], int(sys.argv[2])))
"""


class IpsetEnforcementTests(KernelLabCase):
    """What test_kernel proves for nft sets, with ipset (every make test keeps the forgery and
    the admin's firewall below, and the Kazaa-proof run on iptables-legacy)."""

    peers = 4
    peer_seconds = 120.0
    slow = True

    def ipset_gateway(self, *options: str, lock: float = LOCK, rules: tuple[str, ...] = ()):
        daemon, rule_options = kernel_options(lock, "ipset")
        return self.gateway(*daemon, "-L", "c", *options, rule_options=[*rule_options, *rules])

    def members(self, name: str) -> list[str]:
        """One set's elements, as ``ipset list`` prints them in the gateway."""
        done = self.lab.run("gw", ["ipset", "list", name], capture_output=True, text=True,
                            env=lab_gateway.ENV)  # fmt: skip
        self.assertEqual(done.returncode, 0, done.stderr)
        return sorted(line.split(" timeout")[0] for line in
                      done.stdout.split("Members:\n")[1].splitlines() if line)  # fmt: skip

    def test_the_daemon_will_not_start_without_the_sets(self) -> None:
        daemon, _ = kernel_options(LOCK, "ipset")
        gateway = Gateway(self.lab, daemon)  # queue rules only: no sets
        gateway.install_rules()
        self.addCleanup(gateway.close)
        with self.assertRaises(LabError) as caught:
            gateway.start(wait=10)
        self.assertIn("apply 'p2pwall-rules --enforce kernel --sets ipset'", str(caught.exception))
        self.assertNotIn("Traceback", str(caught.exception))

    def test_the_kernel_alone_blocks_while_the_daemon_is_stopped_and_locks_come_from_it(
        self,
    ) -> None:
        store = self.lab.workdir / "store"
        gateway = self.ipset_gateway("-f", str(store))
        self.assertEqual(self.kazaa()["breakthroughs"], [])
        ip, _ = self.lab.peers[0]
        learned = [f"{ip},{proto}:{PEER_PORT},{CLIENT}" for proto in ("tcp", "udp")]
        self.assertEqual(self.members("p2pwall-ppc-lock4"), learned)
        self.assertEqual(self.members("p2pwall-ppc4"), learned)
        self.wait_for(lambda: self.web_ok("rogue", timeout=1), LOCK + 3, "lock never ended")
        gateway.stop()
        # No daemon now: the kernel still drops the client's SYN to the peer it learned (the
        # sampled try goes to a queue without bypass, the rest is dropped); it locks nobody
        # by itself (no MAC to bind a lock to), and another host reaches the peer.
        self.assertFalse(self.tcp_ok("rogue", ip, PEER_PORT, timeout=1))
        self.assertEqual(self.members("p2pwall-locked4"), [])
        self.assertTrue(self.web_ok("rogue"))
        self.assertTrue(self.tcp_ok("user", ip, PEER_PORT))
        self.assertGreater(ipset_drops(self.lab, "p2pwall-klock"), 0)
        # A restart copies the store file's block into the kernel anew; the next try reaches
        # the daemon, which checks the MAC, locks the client and writes the lock.
        gateway.start()
        self.assertIn("kernel sets loaded: 1 blocks", gateway.read_log())
        self.assertFalse(self.tcp_ok("rogue", ip, PEER_PORT, timeout=1))
        self.wait_for(lambda: self.members("p2pwall-locked4") == [CLIENT], 3, "not locked")
        self.assertIn("locked", gateway.ctl("explain", CLIENT).stdout)
        self.assertFalse(self.web_ok("rogue", timeout=1))
        # accept-all empties the sets: the kernel drops nothing.
        self.assertIn("OK accept-all 1", gateway.ctl("accept-all", "1").stdout)
        self.wait_for(lambda: self.tcp_ok("rogue", ip, PEER_PORT, timeout=1), 5, "still dropped")
        self.assertTrue(self.web_ok("rogue"))
        self.assertEqual(self.members("p2pwall-ppc-lock4"), [])

    def test_allowed_hosts_are_never_locked_or_blocked_by_the_kernel(self) -> None:
        self.ipset_gateway("--allow", f"{CLIENT}/32")
        self.assertTrue(self.kazaa()["breakthroughs"], "an allowed host is blocked by nothing")
        ip, _ = self.lab.peers[0]
        self.assertEqual(self.members("p2pwall-allowed4"), [CLIENT])
        self.assertTrue(self.tcp_ok("rogue", ip, PEER_PORT))
        self.assertTrue(self.web_ok("rogue"))
        self.assertEqual(self.members("p2pwall-locked4"), [])

    def test_with_no_udp_block_a_new_udp_flow_to_a_learned_peer_goes_on_to_the_queue(self) -> None:
        """-n: the action chain's RETURN (nft's accept) lets UDP to a learned peer leave our
        chains for the queue rules, where the daemon sees it; the try restarts the lock."""
        gateway = self.ipset_gateway("-n")
        self.kazaa()
        ip, port = self.lab.peers[0]
        self.assertEqual(len(self.members("p2pwall-ppc-lock-up4")), 2)
        before = int(gateway.stats()["accept_udp"])
        self.assertEqual(self.lab.run("rogue", [sys.executable, "-c", NEW_FLOW, ip, str(port)])
                         .returncode, 0)  # fmt: skip
        self.wait_for(lambda: f"src={CLIENT}:40001" in self.lab.read_log("ftpeers.log"), 3,
                      "the datagram never reached the peer")  # fmt: skip
        self.assertEqual(int(gateway.stats()["accept_udp"]), before + 1, "the daemon saw it")
        self.assertEqual(self.members("p2pwall-locked4"), [CLIENT])

    def test_lock_established_cuts_a_running_download(self) -> None:
        """The "resume" case: a steady stream from outside to a host that becomes a locked
        client 2 s into 8 s stops (the established flows' rules of p2pwall-kgreen/-kto)."""
        self.ipset_gateway(lock=30, rules=("--lock-established",))
        web = self.lab.addr("web")
        sender = self.lab.spawn("pub", [sys.executable, "-c", STREAM, web, str(STREAM_PORT)],
                                log="stream.log")  # fmt: skip
        self.lab.wait_listening("pub", "tcp", web, STREAM_PORT, sender, "stream.log")
        received = self.lab.spawn(
            "rogue", ["sh", "-c", f"timeout 8 nc {web} {STREAM_PORT} | wc -c"], log="received.log"
        )
        time.sleep(2)
        self.assertEqual(self.kazaa()["breakthroughs"], [])
        received.wait(20)
        self.assertLess(int(self.lab.read_log("received.log").strip() or 0), RATE * 5)
        self.assertGreater(ipset_drops(self.lab, "p2pwall-kto"), 0)


class IpsetAdminFirewallTests(AdminFirewallCase):
    def test_a_syn_passes_our_chain_to_the_admins_mangle_and_filter_rules(self) -> None:
        """Our chain is first in mangle FORWARD but never accepts: a SYN it lets through (not
        queued with kernel enforcement) still gets the admin's MSS clamp and filter rules."""
        self.gw_shell(IPTABLES_FIREWALL + MSS_CLAMP + "\n")
        seen = ["INPUT", "-d", WEB_ADDR, "-p", "tcp", "--dport", "80", "--syn", "-m", "tcpmss",
                "--mss", str(MSS)]  # fmt: skip
        self.lab.run("pub", ["iptables", "-A", *seen], check=True)
        daemon, rules = kernel_options(LOCK, "ipset")
        gateway = self.gateway(*daemon, rule_options=rules)
        forward = self.gw_shell("iptables -t mangle -S FORWARD\n").splitlines()
        self.assertEqual(forward[1], "-A FORWARD -j p2pwall-kern")
        self.assertIn("TCPMSS", forward[2])
        self.assertEqual(forward[-1], "-A FORWARD -j p2pwall-fwd")
        reached = self.reach([WEB, *CLOSED_OUTSIDE])
        self.assertEqual(reached, {WEB: True, **dict.fromkeys(CLOSED_OUTSIDE, False)})
        self.assertEqual(gateway.stats()["accept_tcp"], "0", "no SYN was queued")
        counted = self.lab.run("pub", ["iptables", "-L", "INPUT", "-v", "-x", "-n"],
                               capture_output=True, text=True).stdout  # fmt: skip
        clamped = [
            line.split()[0] for line in counted.splitlines() if f"tcpmss match {MSS}" in line
        ]
        self.assertEqual(clamped, ["1"], "the SYN arrived with the admin's MSS")


class IpsetForgeryTests(ForgeryCase):
    peers = 2

    def test_a_syn_forged_with_the_users_address_locks_nobody(self) -> None:
        """ipset cannot bind a lock to a MAC: the kernel hands the try to the daemon, whose
        neighbour check finds the forgery."""
        from scapy.layers.inet import IP, TCP

        daemon, rule_options = kernel_options(3, "ipset")
        gateway = self.gateway(*daemon, "-L", "cp", rule_options=rule_options)
        peer = self.lab.peers[0][0]
        for host in ("rogue", "user"):  # the gateway learns their MACs
            self.assertTrue(self.web_ok(host))
        for host in ("rogue", "user"):  # two hosts reveal the peer: blocked for every host
            self.send_udp(host, 1214, peer, PEER_PORT, HELLO)
        self.assertTrue(self.wait_for(gateway, "blocked for every host"))
        user = self.lab.addr("user")
        deadline = time.monotonic() + 8
        while not self.web_ok("user", timeout=1):
            self.assertLess(time.monotonic(), deadline, "the user's own lock never ended")
        forged = self.forged_from_rogue(
            IP(src=user, dst=peer) / TCP(sport=40000, dport=PEER_PORT, flags="S")
        )
        self.send_frames("rogue", *[forged] * 3)
        time.sleep(0.5)
        for _ in range(3):
            self.assertTrue(self.web_ok("user"), "the forgery locked the user")
        self.assertGreaterEqual(int(gateway.stats()["forged_source"]), 1)
