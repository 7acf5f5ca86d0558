"""Issue 9's forgeries, replayed in the lab against the real daemon and rules: a green host
(``rogue``) and a web page try to get services blocked for the other green host (``user``), or
to get ``user`` locked. Each test also shows the daemon does learn from honest evidence, so a
pass cannot come from a daemon that learns nothing."""

from __future__ import annotations

import json
import sys
import time

from lab.netlab import PEER_PORT

from .support import LabCase

HELLO = b"\x27\x00\x00\x00\x29\x80KaZaA\x00"
RESOLVER = "198.19.0.53"
WINMX = "198.19.7.9"
# Sends each hex argument as one raw Ethernet frame out of eth0 (the green host's link).
SEND_FRAMES = (
    "import socket, sys\n"
    "s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)\n"
    "s.bind(('eth0', 0))\n"
    "for frame in sys.argv[1:]:\n"
    "    s.send(bytes.fromhex(frame))\n"
)
# Sends a UDP datagram from a given port (argv: src port, dst ip, dst port, payload hex, count).
SEND_UDP = (
    "import socket, sys, time\n"
    "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
    "s.bind(('0.0.0.0', int(sys.argv[1])))\n"
    "for _ in range(int(sys.argv[5])):\n"
    "    s.sendto(bytes.fromhex(sys.argv[4]), (sys.argv[2], int(sys.argv[3])))\n"
    "    time.sleep(0.05)\n"
)


def dns_answer(name: str, address: str, ident: int = 0x4242) -> bytes:
    from scapy.layers.dns import DNS, DNSQR, DNSRR

    return bytes(
        DNS(id=ident, qr=1, aa=1, qd=DNSQR(qname=name), an=DNSRR(rrname=name, rdata=address))
    )


class ForgeryCase(LabCase):
    """Helpers: frames and datagrams sent from inside a green host."""

    def mac(self, host: str, link: str) -> str:
        done = self.lab.run(host, ["ip", "-j", "link", "show", link], capture_output=True)
        return json.loads(done.stdout)[0]["address"]

    def send_frames(self, host: str, *frames: bytes) -> None:
        argv = [sys.executable, "-c", SEND_FRAMES, *(frame.hex() for frame in frames)]
        self.assertEqual(self.lab.run(host, argv).returncode, 0)

    def send_udp(self, host: str, sport: int, ip: str, port: int, payload: bytes, count: int = 3):
        argv = [
            sys.executable,
            "-c",
            SEND_UDP,
            str(sport),
            ip,
            str(port),
            payload.hex(),
            str(count),
        ]
        self.assertEqual(self.lab.run(host, argv).returncode, 0)

    def forged_from_rogue(self, layers) -> bytes:
        """``layers`` (IP and up) in a frame from rogue's own MAC to the gateway's."""
        from scapy.layers.l2 import Ether

        return bytes(Ether(src=self.mac("rogue", "eth0"), dst=self.mac("gw", "green0")) / layers)

    def wait_for(self, gateway, text: str, seconds: float = 3.0) -> bool:
        deadline = time.monotonic() + seconds
        while text not in gateway.read_log():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True

    def assert_user_untouched(self, gateway) -> None:
        for _ in range(3):
            self.assertTrue(self.web_ok("user"), "the user lost the web")
        self.assertNotIn("client 198.18.1.20 identified", gateway.read_log())


class PoisoningTests(ForgeryCase):
    peers = 2

    def test_a_hello_with_the_users_address_locks_nobody(self) -> None:
        from scapy.layers.inet import IP, UDP

        gateway = self.gateway("-t", "30", "-L", "c")
        peer = self.lab.peers[0][0]
        forged = self.forged_from_rogue(
            IP(src=self.lab.addr("user"), dst=peer) / UDP(sport=1214, dport=PEER_PORT) / HELLO
        )
        self.send_frames("rogue", *[forged] * 5)
        time.sleep(0.5)
        self.assert_user_untouched(gateway)
        self.assertGreaterEqual(int(gateway.stats()["forged_source"]), 1)
        self.send_udp("user", 1214, peer, PEER_PORT, HELLO)
        self.assertTrue(self.wait_for(gateway, "client 198.18.1.20 identified: FastTrack hello"))
        self.assertFalse(self.web_ok("user"), "the user's own hello does lock it")

    def test_kazaa_headers_sent_to_a_web_server_block_nothing_for_the_user(self) -> None:
        """``printf 'GET / ...X-Kazaa-IP: <resolver>' | nc <web> 80``, over a real connection
        and as one raw segment with no handshake."""
        from scapy.layers.inet import IP, TCP

        self.lab.start_dns({"www.example.test": self.lab.addr("web")})
        gateway = self.gateway("-t", "30", "-L", "cp")
        web = self.lab.addr("web")
        for header in (f"X-Kazaa-IP: {RESOLVER}", f"X-Kazaa-SupernodeIP: {RESOLVER}:53"):
            request = f"GET / HTTP/1.1\r\nHost: w\r\n{header}\r\n\r\n"
            self.lab.run(
                "rogue", ["nc", "-w", "2", web, "80"], input=request.encode(), capture_output=True
            )
        segment = IP(src=self.lab.addr("rogue"), dst=web) / TCP(
            sport=40999, dport=80, flags="PA", seq=1, ack=1
        )
        payload = f"GET / HTTP/1.1\r\nX-Kazaa-IP: {RESOLVER}\r\n\r\n".encode()
        self.send_frames("rogue", self.forged_from_rogue(segment / payload))
        self.assertTrue(self.wait_for(gateway, "client 198.18.1.10 identified"))
        self.assertNotIn(RESOLVER, gateway.ctl("dump-blocks").stdout)
        for _ in range(3):
            answer = self.lab.run(
                "user",
                ["dig", "+short", "+time=1", "+tries=1", f"@{RESOLVER}", "www.example.test"],
                capture_output=True,
                text=True,
            )
            self.assertEqual(answer.stdout.strip(), web)
        self.assert_user_untouched(gateway)

    def test_a_hash_url_fetched_like_an_image_teaches_nothing(self) -> None:
        gateway = self.gateway("-t", "30", "-L", "cp")
        url = f"http://{self.lab.addr('web')}/.hash=0123456789abcdef0123456789abcdef01234567"
        for _ in range(3):
            self.lab.run("user", ["curl", "-s", "-o", "/dev/null", "-m", "2", url])
        self.assertEqual(gateway.ctl("dump-blocks").stdout.splitlines()[-1], "OK 0 blocks")
        self.assert_user_untouched(gateway)

    def test_a_hello_to_the_web_server_locks_no_visitor(self) -> None:
        gateway = self.gateway("-t", "30", "-L", "c")
        self.send_udp("rogue", 1214, self.lab.addr("web"), 80, HELLO)
        self.assertTrue(self.wait_for(gateway, "client 198.18.1.10 identified"))
        self.assertFalse(self.web_ok("rogue"), "the sender of the hello is locked")
        for _ in range(5):
            self.assertTrue(self.web_ok("user"))
        self.assert_user_untouched(gateway)


class DnsForgeryTests(ForgeryCase):
    """A green host forges DNS answers for a trained name, naming the web server."""

    peers = 0

    def setUp(self) -> None:
        super().setUp()
        self.lab.start_dns({"www.winmx.com": WINMX, "www.example.test": self.lab.addr("web")})
        patterns = self.lab.logpath("patterns.conf")
        patterns.write_text("(^|\\.)winmx\\.com$\n")
        self.daemon = self.gateway("-t", "30", "-L", "p", "-D", str(patterns))

    def trained(self) -> str:
        return self.daemon.ctl("dump-blocks").stdout

    def test_an_answer_sent_to_the_gateway_from_port_53_trains_nothing(self) -> None:
        answer = dns_answer("www.winmx.com", self.lab.addr("web"))
        self.send_udp("rogue", 53, self.lab.addr("gw"), 5353, answer)
        time.sleep(0.5)
        self.assertNotIn(self.lab.addr("web"), self.trained())
        self.assertTrue(self.web_ok("user"))

    def test_a_spoofed_resolver_answer_routed_through_the_gateway_trains_nothing(self) -> None:
        from scapy.layers.inet import IP, UDP

        query = self.lab.run(
            "rogue",
            ["dig", "+short", "-b", "198.18.1.10#40053", f"@{RESOLVER}", "www.example.test"],
            capture_output=True,
            text=True,
        )
        self.assertEqual(query.stdout.strip(), self.lab.addr("web"), query.stderr)
        forged = self.forged_from_rogue(
            IP(src=RESOLVER, dst=self.lab.addr("rogue"))
            / UDP(sport=53, dport=40053)
            / dns_answer("www.winmx.com", self.lab.addr("web")),
        )
        self.send_frames("rogue", forged, forged)
        time.sleep(0.5)
        self.assertNotIn(self.lab.addr("web"), self.trained())
        self.assertTrue(self.web_ok("user"))

    def test_a_real_answer_from_the_resolver_still_trains(self) -> None:
        answer = self.lab.run(
            "user",
            ["dig", "+short", "+time=1", "+tries=1", f"@{RESOLVER}", "www.winmx.com"],
            capture_output=True,
            text=True,
        )
        self.assertEqual(answer.stdout.strip(), WINMX)
        self.assertIn(f"peer {WINMX} learned (dns: www.winmx.com)", self.daemon.read_log())
