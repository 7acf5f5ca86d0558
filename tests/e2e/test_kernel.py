"""Kernel enforcement (``--enforce kernel``) end to end: the real nft sets in the lab's gateway,
filled by the real daemon, dropping what the daemon never sees."""

from __future__ import annotations

import sys
import time

from lab.gateway import Gateway
from lab.netlab import PEER_PORT, LabError
from p2pwall.kernel.sync import POLL_INTERVAL

from .kernelsets import kernel_drops, kernel_options, set_elements
from .support import LabCase
from .test_poison import HELLO, ForgeryCase

LOCK = 4.0
RATE = 400_000  # bytes a second the stream sends
STREAM_PORT = 8080
# One connection, RATE bytes a second in 4 KB pieces for 10 s: a download that runs.
STREAM = f"""
import socket, sys, time
server = socket.create_server((sys.argv[1], int(sys.argv[2])))
conn, _ = server.accept()
start = time.monotonic()
while time.monotonic() - start < 10:
    conn.sendall(bytes(4096))
    time.sleep(4096 / {RATE})
"""


class KernelLabCase(LabCase):
    """What the kernel-enforcement runs share, nft sets or ipset."""

    def kazaa(self) -> dict:
        """A short Kazaa run against the first lab peer: a hello, then connects."""
        ip, port = self.lab.peers[0]
        return self.ftclient("--peer", f"{ip}:{port}", "--scale", "0.1")

    def wait_for(self, check, seconds: float, what: str) -> None:
        deadline = time.monotonic() + seconds
        while not check():
            self.assertLess(time.monotonic(), deadline, what)
            time.sleep(0.2)


class KernelEnforcementTests(KernelLabCase):
    peers = 4
    peer_seconds = 120.0

    def kernel_gateway(
        self, *options: str, lock: float = LOCK, rule_options: tuple[str, ...] = ()
    ) -> Gateway:
        daemon, rules = kernel_options(lock)
        return self.gateway(*daemon, "-L", "c", *options, rule_options=[*rules, *rule_options])

    def test_the_daemon_will_not_start_without_the_kernels_sets(self) -> None:
        daemon, _ = kernel_options(LOCK)
        gateway = Gateway(self.lab, daemon)  # queue rules only: no sets
        gateway.install_rules()
        self.addCleanup(gateway.close)
        with self.assertRaises(LabError) as caught:
            gateway.start(wait=10)
        self.assertIn("apply 'p2pwall-rules --enforce kernel'", str(caught.exception))
        self.assertNotIn("Traceback", str(caught.exception))

    def test_the_kernel_alone_blocks_and_locks_while_the_daemon_is_stopped(self) -> None:
        store = self.lab.workdir / "store"
        gateway = self.kernel_gateway("-f", str(store))
        report = self.kazaa()
        self.assertEqual(report["breakthroughs"], [])
        ip, _ = self.lab.peers[0]
        learned = [e for e in set_elements(self.lab, "map", "peer_port_client4")]
        self.assertEqual(len(learned), 1, learned)
        self.assertEqual(learned[0][0]["concat"], [ip, PEER_PORT, "198.18.1.10"])
        self.wait_for(lambda: self.web_ok("rogue", timeout=1), LOCK + 3, "lock never ended")
        gateway.stop()
        # No daemon now: the kernel still drops the client's SYN to the peer it learned, and
        # locks the client for trying (its web dies too); another host reaches the peer.
        self.assertFalse(self.tcp_ok("rogue", ip, PEER_PORT, timeout=1))
        self.assertFalse(self.web_ok("rogue", timeout=1))
        self.assertTrue(self.tcp_ok("user", ip, PEER_PORT))
        self.assertGreater(kernel_drops(self.lab, "lock"), 0)
        # A restart copies the store file's block into the kernel anew; a lock the kernel
        # makes by itself (the client tries the peer again) reaches the daemon.
        gateway.start()
        self.assertIn("kernel sets loaded: 1 blocks", gateway.read_log())
        self.assertFalse(self.tcp_ok("rogue", ip, PEER_PORT, timeout=1))
        self.wait_for(
            lambda: "locked by the kernel" in gateway.ctl("explain", "198.18.1.10").stdout,
            5,
            "the kernel's lock never reached the daemon",
        )
        self.assertEqual(len(set_elements(self.lab, "map", "peer_port_client4")), 1)
        # accept-all empties the sets: the kernel drops nothing.
        self.assertIn("OK accept-all 1", gateway.ctl("accept-all", "1").stdout)
        self.wait_for(lambda: self.tcp_ok("rogue", ip, PEER_PORT, timeout=1), 5, "still dropped")
        self.assertTrue(self.web_ok("rogue"))

    def test_allowed_hosts_are_never_locked_or_blocked_by_the_kernel(self) -> None:
        self.kernel_gateway("--allow", "198.18.1.10/32")
        self.kazaa()
        ip, _ = self.lab.peers[0]
        self.assertTrue(self.tcp_ok("rogue", ip, PEER_PORT))
        self.assertTrue(self.web_ok("rogue"))
        self.assertEqual(set_elements(self.lab, "set", "locked4"), [])

    def download_during_a_lock(self, *rule_options: str) -> int:
        """Bytes a steady 8 s stream from outside got when its host became a locked client
        2 s in (the sender paces it: a receiver's rate limit lets a socket buffer of
        megabytes fill at the start)."""
        self.kernel_gateway(lock=30, rule_options=rule_options)
        web = self.lab.addr("web")
        sender = self.lab.spawn("pub", [sys.executable, "-c", STREAM, web, str(STREAM_PORT)],
                                log="stream.log")  # fmt: skip
        self.lab.wait_listening("pub", "tcp", web, STREAM_PORT, sender, "stream.log")
        received = self.lab.spawn(
            "rogue",
            ["sh", "-c", f"timeout 8 nc {web} {STREAM_PORT} | wc -c"],
            log="received.log",
        )
        time.sleep(2)
        self.kazaa()
        received.wait(20)
        return int(self.lab.read_log("received.log").strip() or 0)

    def test_lock_established_cuts_a_running_download(self) -> None:
        """The "resume" case: a client that reconnects to peers it knew never shows a flow
        start; with --lock-established its lock stops what already runs."""
        self.assertLess(self.download_during_a_lock("--lock-established"), RATE * 5)

    def test_without_lock_established_a_running_download_goes_on(self) -> None:
        self.assertGreater(self.download_during_a_lock(), RATE * 7)


class KernelForgeryTests(ForgeryCase):
    peers = 2

    def test_a_syn_forged_with_the_users_address_locks_only_the_forger(self) -> None:
        """The kernel restarts a lock by itself, without the daemon's MAC check; its locks are
        bound to the sender's MAC, so a forgery locks the forger's frames alone."""
        from scapy.layers.inet import IP, TCP

        gateway = self.kernel_gateway("-L", "cp", lock=3)
        peer = self.lab.peers[0][0]
        for host in ("rogue", "user"):  # the gateway learns their MACs
            self.assertTrue(self.web_ok(host))
        for host in ("rogue", "user"):  # two hosts reveal the peer: blocked for every host
            self.send_udp(host, 1214, peer, PEER_PORT, HELLO)
        self.assertTrue(self.wait_for(gateway, "blocked for every host"))
        self.wait_for_web("user")
        forged = self.forged_from_rogue(
            IP(src=self.lab.addr("user"), dst=peer) / TCP(sport=40000, dport=PEER_PORT, flags="S")
        )
        self.send_frames("rogue", *[forged] * 3)
        user = self.lab.addr("user")
        pairs = [e["elem"]["val"]["concat"] for e in set_elements(self.lab, "set", "locked4")]
        self.assertIn([user, self.mac("rogue", "eth0")], pairs, "the kernel locked the forgery")
        for _ in range(3):
            self.assertTrue(self.web_ok("user"), "the forgery locked the user")
        time.sleep(POLL_INTERVAL + 0.5)
        self.assertGreaterEqual(int(gateway.stats()["kernel_forged_locks"]), 1)
        self.assertTrue(self.web_ok("user"))

    def wait_for_web(self, host: str) -> None:
        deadline = time.monotonic() + 8
        while not self.web_ok(host, timeout=1):
            self.assertLess(time.monotonic(), deadline, f"{host} stayed locked")
            time.sleep(0.2)

    kernel_gateway = KernelEnforcementTests.kernel_gateway
