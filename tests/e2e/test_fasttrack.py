"""The real daemon against the simulated Kazaa client, in namespaces, through real NFQUEUE rules."""

from __future__ import annotations

import os
import shutil
import sys
import time

from lab import gateway as lab_gateway
from lab.gateway import nft_queue_supported
from lab.netlab import PEER_PORT

from .kernelsets import kernel_drops, kernel_options
from .support import LabCase, slow_off

TIME_LOCK = 3.0
SCALE = "0.5"


class KazaaProofTests(LabCase):
    peers = 24

    def cache_and_hidden(self) -> list[str]:
        """The client's cache holds most lab peers; the last four it never announces."""
        cache = self.lab.write_peers_file("cache", self.lab.peers[:20])
        hidden = [f"--hidden-peer={ip}:{port}" for ip, port in self.lab.peers[20:]]
        return ["--peers-file", str(cache), *hidden]

    def kazaa_run(self, rules: str, enforce: str = "queue", sets: str = "nft") -> None:
        kernel = enforce == "kernel"
        daemon, rule_options = (
            kernel_options(TIME_LOCK, sets) if kernel else (["-t", str(TIME_LOCK)], [])
        )
        gateway = self.gateway(
            *daemon, "-L", "tcp", "-d", "tp", rules=rules, rule_options=rule_options
        )
        report = self.ftclient(*self.cache_and_hidden(), "--scale", SCALE, "--linger", "7")
        self.assertEqual(report["breakthroughs"], [], "a FastTrack connection got through")
        self.assertGreater(report["pongs_received"], 10)
        self.assertGreaterEqual(report["probes_answered"], 4)
        self.assertGreater(sum(report["connects_tried"].values()), 20)
        log = gateway.read_log()
        self.assertIn("client 198.18.1.10 identified: FastTrack hello", log)
        self.assertGreaterEqual(log.count("learned (fasttrack-udp) from client 198.18.1.10"), 20)
        if not kernel:
            self.assertIn("(time lock)", log)
        self.assertGreaterEqual(
            log.count("probe answered by 198.18.1.10"), 4, "the lock lives on answered probes"
        )
        self.assertFalse(self.web_ok("rogue"), "the client lingers, answering probes: still locked")
        quit_at = time.monotonic()
        while not self.web_ok("rogue", timeout=1):
            self.assertLess(time.monotonic() - quit_at, TIME_LOCK * 1.5 + 3, "lock never released")
            time.sleep(0.2)
        # A lock is over at its deadline; the timer that logs it runs up to a tick later.
        cleared = "client 198.18.1.10 cleared: time lock expired"
        deadline = time.monotonic() + 2
        while cleared not in gateway.read_log() and time.monotonic() < deadline:
            time.sleep(0.1)
        self.assertIn(cleared, gateway.read_log())
        if kernel:
            # The kernel dropped the connections; the daemon saw no ordinary SYN. nft sets
            # lock by themselves; ipset's hand the daemon a sample of the tries (no MAC to
            # bind a kernel-made lock to).
            stats = gateway.stats()
            self.assertEqual(stats["accept_tcp"], "0")
            if sets == "nft":
                self.assertEqual(stats["drop_tcp"], "0")
            self.assertGreater(kernel_drops(self.lab, "lock", sets), 20)

    def test_three_phases_end_with_no_breakthrough_iptables(self) -> None:
        self.kazaa_run("iptables")

    def test_three_phases_end_with_no_breakthrough_kernel_enforcement(self) -> None:
        self.kazaa_run("iptables", enforce="kernel")

    def test_three_phases_end_with_no_breakthrough_kernel_enforcement_by_ipset(self) -> None:
        """(On iptables-legacy in every make test, below.)"""
        if reason := slow_off():
            raise self.skipTest(reason)
        self.kazaa_run("iptables", enforce="kernel", sets="ipset")

    def test_three_phases_end_with_no_breakthrough_ipset_on_iptables_legacy(self) -> None:
        """An iptables-legacy gateway: the rules' iptables is iptables-legacy there (so are
        the counters read)."""
        legacy = self.mktemp()
        os.mkdir(legacy)
        for command in ("iptables", "ip6tables"):
            found = shutil.which(f"{command}-legacy")
            if found is None:
                raise self.skipTest(f"needs {command}-legacy")
            os.symlink(found, os.path.join(legacy, command))
        path = f"{os.path.abspath(legacy)}:{lab_gateway.ENV.get('PATH', os.defpath)}"
        self.patch(lab_gateway, "ENV", {**lab_gateway.ENV, "PATH": path})
        self.kazaa_run("iptables", enforce="kernel", sets="ipset")

    def test_three_phases_end_with_no_breakthrough_nft(self) -> None:
        if not nft_queue_supported(self.lab):
            raise self.skipTest("this kernel has no nft queue support (CONFIG_NFT_QUEUE not set)")
        self.kazaa_run("nft")

    def test_three_phases_end_with_no_breakthrough_nft_selecting_xtables_queueing(self) -> None:
        """The nft rule set chooses every packet; where the kernel lacks nft's ``queue``, an
        xtables NFQUEUE rule hands the packets it marked to the daemon."""
        self.kazaa_run("nft-xt")

    def test_names_and_encryption_types(self) -> None:
        gateway = self.gateway("-t", str(TIME_LOCK), "-L", "c")
        for name, enc in (("fileshare", "0xA9"), ("Grokster", "0x29")):
            report = self.ftclient("--peer", f"{self.lab.peers[0][0]}:{PEER_PORT}", "--name", name,
                                   "--enc", enc, "--scale", "0.1")  # fmt: skip
            self.assertEqual(report["breakthroughs"], [])
            self.assertGreater(report["pongs_received"], 0)
        self.assertIn("client 198.18.1.10 identified", gateway.read_log())


class NoCollateralDamageTests(LabCase):
    peers = 20

    def test_ordinary_user_keeps_working_during_a_kazaa_run(self) -> None:
        self.lab.start_dns({"www.example.test": "198.19.0.80"})
        self.gateway("-t", str(TIME_LOCK))
        script = (
            "ok=0; for i in $(seq 30); do "
            "c=$(curl -s -o /dev/null -w '%{http_code}' -m 2 http://198.19.0.80/); "
            "d=$(dig +short +time=1 +tries=1 @198.19.0.53 www.example.test); "
            '[ "$c" = 200 ] && [ "$d" = 198.19.0.80 ] && ok=$((ok+1)); sleep 0.3; done; '
            "echo ok=$ok"
        )
        user = self.lab.spawn("user", ["sh", "-c", script], log="user.log")
        cache = self.lab.write_peers_file("cache", self.lab.peers)
        report = self.ftclient("--peers-file", str(cache), "--scale", "0.4")
        self.assertEqual(report["breakthroughs"], [])
        user.wait(60)
        self.assertEqual(self.lab.read_log("user.log").strip(), "ok=30")


class HttpSafetyNetTests(LabCase):
    peers = 6
    SUPERNODE = "198.19.7.7"

    def test_download_attempts_are_dropped_and_teach_the_daemon(self) -> None:
        self.lab.add_public_addr(self.SUPERNODE)
        gateway = self.gateway("-t", "5", "-L", "pc", "-d", "h")
        peers = self.lab.peers[:3]
        report = self.ftclient(
            *[f"--peer={ip}:{port}" for ip, port in peers],
            "--no-udp", "--supernode", f"{self.SUPERNODE}:3531", "--scale", "0.2",
        )  # fmt: skip
        self.assertEqual(report["downloads_succeeded"], 0)
        self.assertGreater(report["downloads_tried"], 0)
        log = gateway.read_log()
        self.assertIn("client 198.18.1.10 identified: FastTrack HTTP download", log)
        self.assertIn(
            f"peer {self.SUPERNODE}:3531 learned (fasttrack-http: x-kazaa-supernodeip) from client "
            "198.18.1.10",
            log,
        )
        self.assertIn(
            f"peer {peers[0][0]}:{PEER_PORT} learned (fasttrack-http) from client 198.18.1.10", log
        )
        self.assertNotIn("peer 198.18.1.10", log, "a green address must never be blocked")
        self.assertFalse(self.web_ok("rogue"))
        self.assertTrue(self.tcp_ok("user", *peers[0]), "what rogue revealed blocks rogue only")


class RestartTests(LabCase):
    peers = 4

    def learn_a_peer(self) -> str:
        peer = self.lab.peers[0][0]
        report = self.ftclient(f"--peer={peer}:{PEER_PORT}", "--scale", "0.05")
        self.assertGreater(report["pongs_received"], 0)
        return peer

    def check_restart(self, signal_number: int) -> None:
        """The peer is blocked for the client that revealed it; after a restart (no lock
        survives one) only the stored block can stop that client's connection."""
        store = self.lab.logpath("peers.store")
        gateway = self.gateway("-t", "2", "-f", str(store), "--store-interval", "1")
        peer = self.learn_a_peer()
        time.sleep(1.5)
        self.assertFalse(self.tcp_ok("rogue", peer, PEER_PORT))
        self.assertTrue(self.tcp_ok("user", peer, PEER_PORT), "blocked for its client only")
        gateway.stop(signal_number)
        self.assertTrue(self.tcp_ok("rogue", peer, PEER_PORT), "--queue-bypass: flows while down")
        self.assertTrue(self.web_ok("user"))
        gateway.start()
        self.assertTrue(self.web_ok("rogue"), "no lock survives a restart")
        self.assertFalse(self.tcp_ok("rogue", peer, PEER_PORT), "a stored peer is blocked again")

    def test_sigterm(self) -> None:
        import signal

        self.check_restart(signal.SIGTERM)

    def test_sigkill(self) -> None:
        import signal

        self.check_restart(signal.SIGKILL)


class UdpFlowTests(LabCase):
    """The recommended rules queue only the first packets of a UDP flow; a dropped flow stays
    queued (its conntrack entry is never confirmed), an accepted one leaves the queue once its
    first verdict is in (packets sent 20 ms apart, as a voice call's; a burst that overtakes the
    first verdict is queued whole, each packet seeing a new flow)."""

    peers = 2
    SEND = (
        "import socket, sys, time\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "s.bind(('0.0.0.0', 40000))\n"
        "for payload in sys.argv[3:]:\n"
        "    s.sendto(bytes.fromhex(payload), (sys.argv[1], int(sys.argv[2])))\n"
        "    time.sleep(0.02)\n"
    )

    def send(self, host: str, ip: str, *payloads: bytes) -> None:
        argv = [sys.executable, "-c", self.SEND, ip, str(PEER_PORT), *(p.hex() for p in payloads)]
        self.assertEqual(self.lab.run(host, argv).returncode, 0)

    def test_blocked_flow_stays_dropped_and_ordinary_flow_leaves_the_queue(self) -> None:
        self.check_flows("iptables")

    def test_the_same_with_nft_choosing(self) -> None:
        """nft's ``ct original packets <= 3`` (queued via xtables, see ``Gateway``)."""
        self.check_flows("nft-xt")

    def check_flows(self, rules: str) -> None:
        gateway = self.gateway("-t", "30", rules=rules)
        known, other = (ip for ip, _port in self.lab.peers)
        hello = b"\x27\x00\x00\x00\x29\x80KaZaA\x00"
        followups = [b"\x2a\x00\x00\x00%c" % i for i in range(12)]
        self.send("rogue", known, *[hello] * 6, *followups)
        self.send("user", other, *[b"ordinary %d" % i for i in range(20)])
        time.sleep(1)
        log = self.lab.read_log("ftpeers.log")
        self.assertNotIn("src=198.18.1.10:40000", log, "UDP to a known peer got through")
        self.assertEqual(log.count("src=198.18.1.20:40000"), 20)
        stats = dict(line.split() for line in gateway.ctl("stats").stdout.splitlines()[:-1])
        self.assertEqual(int(stats["drop_udp"]), 18, "forged pongs open no flow to hide behind")
        self.assertEqual(int(stats["spoofs"]), 6)
        self.assertEqual(int(stats["accept_udp"]), 3, "only the flow's first packets are queued")
