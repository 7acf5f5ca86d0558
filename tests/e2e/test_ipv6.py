"""IPv6 end to end, over the lab's IPv6 twins (2001:2::/48): the Kazaa-proof run, the DNS
training run (AAAA answers) and the restart run of test_fasttrack and test_dns, the MAC check
(a forged hello, a host's new address) and the HTTP safety net, with each enforcement mode: the
daemon drops what it learned (``queue``) or the kernel does (``kernel``: nft sets, or ipset)."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from lab.netlab import PEER_PORT, v6

from .daemons import OwnArgvGateway
from .kernelsets import kernel_drops, kernel_options
from .test_poison import HELLO, ForgeryCase

CONF = Path(__file__).resolve().parents[2] / "conf" / "dns-patterns.conf"
TIME_LOCK = 3.0
ROGUE = v6("198.18.1.10")
USER = v6("198.18.1.20")
WINMX = v6("198.19.2.1")
OPENNAP = v6("198.19.2.2")
LISTENER_PORT = 8888
# The ordinary user's loop: web and DNS (AAAA) over IPv6, both must work every round.
USER_LOOP = (
    "ok=0; for i in $(seq {rounds}); do "
    "c=$(curl -s -g -o /dev/null -w '%{{http_code}}' -m 2 'http://[{web}]/'); "
    "d=$(dig +short +time=1 +tries=1 @{dns} AAAA www.example.test); "
    '[ "$c" = 200 ] && [ "$d" = {web} ] && ok=$((ok+1)); sleep 0.3; done; '
    "echo ok=$ok"
)


class Ipv6Runs:
    """The runs, over IPv6, with the daemon in ``enforce`` mode: a mixin, so that only its
    subclasses, one per mode, are collected as tests."""

    family = 6
    peers = 24
    enforce: str
    sets = "nft"  # the kernel's sets, with kernel enforcement

    def enforcing(self, *options: str, time_lock: float = TIME_LOCK):
        """``gateway()`` with this class's enforcement mode and a ``time_lock``."""
        if self.enforce == "queue":
            return self.gateway("-t", f"{time_lock:g}", *options)
        daemon, rules = kernel_options(time_lock, self.sets)
        return self.gateway(*daemon, *options, rule_options=rules)

    def test_kazaa_proof_three_phases_no_breakthrough_user_unaffected(self) -> None:
        self.lab.start_dns({"www.example.test": self.addr("web")})
        gateway = self.enforcing("-L", "tcp", "-d", "tp")
        rounds = 30
        loop = USER_LOOP.format(rounds=rounds, web=self.addr("web"), dns=self.addr("dns"))
        user = self.lab.spawn("user", ["sh", "-c", loop], log="user.log")
        cache = self.lab.write_peers_file("cache", self.lab.peers6[:20])
        hidden = [f"--hidden-peer=[{ip}]:{port}" for ip, port in self.lab.peers6[20:]]
        report = self.ftclient("--peers-file", str(cache), *hidden, "--scale", "0.5",
                               "--linger", "7")  # fmt: skip
        quit_at = time.monotonic()
        # The client lingered, answering probes, until a moment ago: still locked.
        self.assertFalse(self.web_ok("rogue", timeout=1), "the lock lives on answered probes")
        self.assertEqual(report["own"], f"[{ROGUE}]:{PEER_PORT}")
        self.assertEqual(report["breakthroughs"], [], "a FastTrack connection got through")
        self.assertGreater(report["pongs_received"], 10, "forged IPv6 pongs")
        self.assertGreaterEqual(report["probes_answered"], 4)
        self.assertGreater(sum(report["connects_tried"].values()), 20)
        self.assertNotIn(f"src=[{ROGUE}]", self.lab.read_log("ftpeers.log"), "a hello got out")
        log = gateway.read_log()
        self.assertIn(f"client {ROGUE} identified: FastTrack hello", log)
        self.assertGreaterEqual(log.count(f"learned (fasttrack-udp) from client {ROGUE}"), 20)
        self.assertIn(f"peer [{self.lab.peers6[0][0]}]:{PEER_PORT} learned", log)
        stats = gateway.stats()
        self.assertNotIn("forged_source", stats, "the neighbour table knows rogue's MAC")
        if self.enforce == "queue":
            self.assertIn("(time lock)", log)
        else:
            self.assertEqual(stats["accept_tcp"], "0", "the kernel drops; no SYN is queued")
            if self.sets == "nft":  # ipset hands the daemon a sample of tries at peers
                self.assertEqual(stats["drop_tcp"], "0", "the kernel locks by itself")
            self.assertGreater(kernel_drops(self.lab, "lock", self.sets), 20)
        self.assertGreaterEqual(log.count(f"probe answered by {ROGUE}"), 4)
        while not self.web_ok("rogue", timeout=1):
            self.assertLess(time.monotonic() - quit_at, TIME_LOCK * 1.5 + 3, "lock never released")
            time.sleep(0.2)
        user.wait(60)
        self.assertEqual(self.lab.read_log("user.log").strip(), f"ok={rounds}")

    def test_a_forged_hello_with_the_users_address_locks_nobody(self) -> None:
        """The MAC check reads the neighbour table (NDP) for IPv6 too: a hello from rogue's MAC
        with the user's address teaches nothing; the user's own hello does lock it."""
        from scapy.layers.inet import UDP
        from scapy.layers.inet6 import IPv6

        gateway = self.enforcing("-L", "c", time_lock=30)
        peer = self.lab.peers6[0][0]
        hello = IPv6(src=USER, dst=peer) / UDP(sport=PEER_PORT, dport=PEER_PORT) / HELLO
        self.send_frames("rogue", *[self.forged_from_rogue(hello)] * 5)
        time.sleep(1)
        self.assertTrue(self.web_ok("user"), "the user lost the web")
        self.assertNotIn(f"client {USER} identified", gateway.read_log())
        self.assertGreaterEqual(int(gateway.stats()["forged_source"]), 1)
        send = ["nc", "-u", "-w", "1", "-p", str(PEER_PORT), peer, str(PEER_PORT)]
        self.lab.run("user", send, input=HELLO, capture_output=True)
        self.assertTrue(self.wait_for(gateway, f"client {USER} identified: FastTrack hello"))
        self.assertFalse(self.web_ok("user"), "the user's own hello does lock it")

    def test_a_client_on_a_new_temporary_address_is_identified(self) -> None:
        """An IPv6 host sends from a new address without soliciting the gateway, whose entry
        it has: the daemon has the kernel resolve the address, and the next hellos count."""
        gateway = self.enforcing("-L", "c")
        self.assertTrue(self.web_ok("rogue"), "rogue's entry for the gateway is fresh")
        temporary = v6("198.18.1.11")
        self.lab.run("rogue", ["ip", "addr", "add", f"{temporary}/64", "dev", "eth0"], check=True)
        peers = [f"--peer=[{ip}]:{port}" for ip, port in self.lab.peers6[:8]]
        # Hello rounds 1 s apart: the first round's hellos teach nothing (the address is being
        # resolved; the table is read again at most once a second), the third's surely do.
        report = self.ftclient(*peers, "--ip", temporary, "--scale", "0.5")
        self.assertEqual(report["breakthroughs"], [], "a FastTrack connection got through")
        self.assertIn(f"client {temporary} identified: FastTrack hello", gateway.read_log())

    def test_http_safety_net_learns_bracketed_ipv6_endpoints(self) -> None:
        """Download starts name ``[v6]:port`` in ``X-Kazaa-SupernodeIP``: learned for the client
        that sent them, with the peer it connected to; never the client's own address."""
        supernode = v6("198.19.7.7")
        self.lab.add_public_addr(supernode)
        gateway = self.enforcing("-L", "pc", time_lock=5)
        peers = self.lab.peers6[:3]
        report = self.ftclient(*[f"--peer=[{ip}]:{port}" for ip, port in peers], "--no-udp",
                               "--supernode", f"[{supernode}]:3531", "--scale", "0.2")  # fmt: skip
        self.assertEqual(report["downloads_succeeded"], 0)
        self.assertGreater(report["downloads_tried"], 0)
        log = gateway.read_log()
        self.assertIn(f"client {ROGUE} identified: FastTrack HTTP download", log)
        learned = f"learned (fasttrack-http: x-kazaa-supernodeip) from client {ROGUE}"
        self.assertIn(f"peer [{supernode}]:3531 {learned}", log)
        self.assertIn(f"peer [{peers[0][0]}]:{PEER_PORT} learned (fasttrack-http) from", log)
        self.assertNotIn(f"peer [{ROGUE}]", log, "a green address is never blocked")
        self.assertTrue(self.tcp_ok("user", *peers[0]), "what rogue revealed blocks rogue only")

    def start_dns(self) -> None:
        """dnsmasq with AAAA records, and a listener on each P2P server's address."""
        self.lab.start_dns({
            "www.WinMX.com": WINMX,
            "opennap2.example": OPENNAP,
            "www.example.test": self.addr("web"),
            "chat.example.test": OPENNAP,
        })  # fmt: skip
        for ip in (WINMX, OPENNAP):
            self.listen_http(ip, LISTENER_PORT)

    def dig(self, name: str) -> str:
        done = self.lab.run("user", ["dig", "+short", "+time=2", "+tries=1", f"@{self.addr('dns')}",
                                     "AAAA", name], capture_output=True, text=True)  # fmt: skip
        return done.stdout.strip()

    def reachable(self, ip: str) -> bool:
        return self.tcp_ok("user", ip, LISTENER_PORT)

    def test_dns_training_aaaa_answers_block_winmx_and_wsx_hosts(self) -> None:
        self.start_dns()
        gateway = self.enforcing("-D", str(CONF), "-L", "ptu", "-d", "a")
        self.assertTrue(self.reachable(WINMX), "reachable before any DNS answer")
        self.assertTrue(self.reachable(OPENNAP))
        self.assertEqual(self.dig("www.example.test"), self.addr("web"), "answers always pass")
        self.assertEqual(self.dig("www.winmx.com"), WINMX)
        self.assertFalse(self.reachable(WINMX), "a trained address is dropped")
        self.assertTrue(self.web_ok("user"), "names that match nothing keep working")
        self.assertTrue(self.reachable(OPENNAP), "not trained yet")
        self.assertEqual(self.dig("opennap2.example"), OPENNAP)
        self.assertFalse(self.reachable(OPENNAP), "a wsx host's address is dropped")
        log = gateway.read_log()
        self.assertIn(f"peer {WINMX} learned (dns: www.winmx.com)", log)
        self.assertIn(f"peer {OPENNAP} learned (dns: opennap2.example)", log)
        dumped = gateway.ctl("dump-blocks").stdout
        self.assertIn(f"{WINMX} * * dns ", dumped)
        self.assertNotIn(self.addr("web"), dumped)

    def test_dns_training_banned_name_from_the_control_port(self) -> None:
        self.start_dns()
        gateway = self.enforcing("-D", str(CONF))
        self.assertEqual(gateway.ctl("ban-dns-name chat.example.test").stdout,
                         "OK banned chat.example.test\n")  # fmt: skip
        self.assertEqual(self.dig("chat.example.test"), OPENNAP)
        self.assertFalse(self.reachable(OPENNAP))
        self.assertTrue(self.web_ok("user"))

    def check_restart(self, signal_number: int) -> None:
        """The peer is blocked for the client that revealed it; after a restart (no lock
        survives one) only the stored block can stop that client's connection. The kernel's
        sets keep their blocks while no daemon runs, until the rules are applied anew."""
        store = self.lab.logpath("peers.store")
        gateway = self.enforcing("-f", str(store), "--store-interval", "1", time_lock=2)
        peer = self.lab.peers6[0][0]
        report = self.ftclient(f"--peer=[{peer}]:{PEER_PORT}", "--scale", "0.05")
        self.assertGreater(report["pongs_received"], 0)
        time.sleep(1.5)
        self.assertIn(f"{peer} {PEER_PORT} {ROGUE} ", store.read_text(), "stored with its client")
        self.assertFalse(self.tcp_ok("rogue", peer, PEER_PORT))
        self.assertTrue(self.tcp_ok("user", peer, PEER_PORT), "blocked for its client only")
        gateway.stop(signal_number)
        if self.enforce == "kernel":
            self.assertFalse(self.tcp_ok("rogue", peer, PEER_PORT), "the sets outlive the daemon")
            # As the system service does: the rules go after a stop and come back before a
            # start, with empty sets; only the store file can bring the block back.
            gateway.remove_rules()
            gateway.install_rules()
        self.assertTrue(self.tcp_ok("rogue", peer, PEER_PORT), "--queue-bypass: flows while down")
        self.assertTrue(self.web_ok("user"))
        gateway.start()
        self.assertTrue(self.web_ok("rogue"), "no lock survives a restart")
        self.assertFalse(self.tcp_ok("rogue", peer, PEER_PORT), "a stored peer is blocked again")
        self.assertTrue(self.tcp_ok("user", peer, PEER_PORT))

    def test_restart_after_sigterm(self) -> None:
        self.check_restart(signal.SIGTERM)

    def test_restart_after_sigkill(self) -> None:
        self.check_restart(signal.SIGKILL)


class QueueEnforcementTests(Ipv6Runs, ForgeryCase):
    """The daemon drops what it learned and locks clients itself (SYNs are queued)."""

    enforce = "queue"

    def short_kazaa_run(self, gateway) -> None:
        """A short run to six IPv6 peers: forged pongs, no breakthrough, rogue identified."""
        report = self.ftclient(*[f"--peer=[{ip}]:{port}" for ip, port in self.lab.peers6[:6]],
                               "--scale", "0.2")  # fmt: skip
        self.assertEqual(report["breakthroughs"], [])
        self.assertGreater(report["pongs_received"], 0)
        self.assertIn(f"client {ROGUE} identified: FastTrack hello", gateway.read_log())

    def test_nft_rules_queue_ipv6_through_the_xtables_hand_off(self) -> None:
        """The lab's nft hand-off (``Gateway(rules="nft-xt")``) queues IPv6 with ip6tables."""
        self.short_kazaa_run(self.gateway("-t", "3", "-L", "c", rules="nft-xt"))

    def test_green_if_alone_covers_the_ipv6_prefix(self) -> None:
        """``--green-if green0`` with no ``--green``: the interface's IPv6 prefix is green."""
        gateway = OwnArgvGateway(self.lab, ["--green-if", self.lab.green_if, "-t", "3", "-L", "c"])
        gateway.install_rules()
        self.addCleanup(gateway.close)
        gateway.start()
        self.assertIn("green networks 198.18.1.0/24,2001:2:0:1::/64,fe80::/10;", gateway.read_log())
        self.short_kazaa_run(gateway)


class KernelEnforcementTests(Ipv6Runs, ForgeryCase):
    """nft sets in ``table inet p2pwall`` drop what the daemon learned and lock clients."""

    enforce = "kernel"


class KernelIpsetEnforcementTests(Ipv6Runs, ForgeryCase):
    """ipset sets and iptables chains (for iptables-legacy gateways) do what the nft table does."""

    enforce = "kernel"
    sets = "ipset"
    slow = True
