"""DNS answers reach the queue only from the outside, as replies: a green host's forged answers
are never queued (so they cannot train the block list), real ones are.

Whether a packet was queued is read from the kernel (``id_sequence`` of the daemon's queue in
``/proc/net/netfilter/nfnetlink_queue``), not from the daemon, which checks answers too.
"""

from __future__ import annotations

import sys
import time

from bench.report import parse_nfqueue

from .support import LabCase

GW = "198.18.1.1"
RESOLVER = "198.19.0.53"
QUERY_PORT = 40053
SETTLE = 0.3

# argv: source port, destination ip, destination port: one datagram from the host's own address.
SEND = (
    "import socket, sys\n"
    "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
    "s.bind(('0.0.0.0', int(sys.argv[1])))\n"
    "s.sendto(b'\\x12\\x34\\x81\\x80' + bytes(8), (sys.argv[2], int(sys.argv[3])))\n"
)
# argv: gateway MAC, own ip, query port: the resolver's "answer", routed through the gateway
# (sent to its MAC) back into the host's own query flow.
SPOOF = (
    "import sys\n"
    "from scapy.all import DNS, DNSQR, DNSRR, IP, UDP, Ether, conf, sendp\n"
    "conf.verb = 0\n"
    "answer = DNS(id=1, qr=1, qd=DNSQR(qname='www.winmx.com'),\n"
    "             an=DNSRR(rrname='www.winmx.com', rdata='198.19.0.80'))\n"
    f"packet = IP(src='{RESOLVER}', dst=sys.argv[2]) / UDP(sport=53, dport=int(sys.argv[3]))\n"
    "sendp(Ether(dst=sys.argv[1]) / packet / answer, iface='eth0')\n"
)


class ForgedAnswerTests(LabCase):
    peers = 0

    def setUp(self) -> None:
        super().setUp()
        self.lab.start_dns({"www.example.test": "198.19.0.80"})

    def queued(self) -> int:
        """Packets the kernel has put into the daemon's queue so far."""
        text = self.lab.run("gw", ["cat", "/proc/net/netfilter/nfnetlink_queue"],
                            capture_output=True, text=True).stdout  # fmt: skip
        return parse_nfqueue(text)[0]["id_sequence"]

    def newly_queued(self, host: str, argv: list[str]) -> int:
        before = self.queued()
        done = self.lab.run(host, argv, capture_output=True, text=True)
        self.assertEqual(done.returncode, 0, done.stderr)
        time.sleep(SETTLE)
        return self.queued() - before

    def send(self, sport: int, ip: str, port: int) -> list[str]:
        return [sys.executable, "-c", SEND, str(sport), ip, str(port)]

    def dig(self, *options: str) -> list[str]:
        return ["dig", "+short", "+time=2", "+tries=1", *options, f"@{RESOLVER}",
                "www.example.test"]  # fmt: skip

    def check(self, rules: str) -> None:
        self.gateway(rules=rules)
        rogue = self.lab.addr("rogue")
        self.assertEqual(self.newly_queued("rogue", self.send(40000, GW, 5000)), 1,
                         "control: a probe reply from green is queued")  # fmt: skip
        self.assertEqual(self.newly_queued("rogue", self.send(53, GW, 5001)), 0,
                         "a green host's 'answer' to the gateway is not a probe reply")  # fmt: skip
        self.assertEqual(self.newly_queued("user", self.dig()), 2,
                         "control: a real query (flow start) and its answer")  # fmt: skip
        self.assertEqual(self.newly_queued("rogue", self.dig("-b", f"{rogue}#{QUERY_PORT}")), 2)
        gw_mac = self.lab.run("gw", ["cat", "/sys/class/net/green0/address"],
                              capture_output=True, text=True).stdout.strip()  # fmt: skip
        spoof = [sys.executable, "-c", SPOOF, gw_mac, rogue, str(QUERY_PORT)]
        self.assertEqual(self.newly_queued("rogue", spoof), 0,
                         "a spoofed answer routed through the gateway from green")  # fmt: skip

    def test_iptables(self) -> None:
        self.check("iptables")

    def test_nft(self) -> None:
        self.check("nft-xt")
