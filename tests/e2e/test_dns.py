"""DNS auto-training against a real DNS server (dnsmasq) and a real resolver client (dig)."""

from __future__ import annotations

from pathlib import Path

from .support import LabCase

CONF = Path(__file__).resolve().parents[2] / "conf" / "dns-patterns.conf"
WINMX = "198.19.2.1"
OPENNAP = "198.19.2.2"
ORDINARY = "198.19.0.80"
PORT = 8888


class DnsTrainingTests(LabCase):
    peers = 0

    def setUp(self) -> None:
        super().setUp()
        self.lab.start_dns({
            "www.WinMX.com": WINMX,
            "opennap2.example": OPENNAP,
            "www.example.test": ORDINARY,
            "chat.example.test": OPENNAP,
        })  # fmt: skip
        for ip in (WINMX, OPENNAP):
            self.listen_http(ip, PORT)

    def dig(self, name: str) -> str:
        done = self.lab.run("user", ["dig", "+short", "+time=2", "+tries=1", "@198.19.0.53", name],
                            capture_output=True, text=True)  # fmt: skip
        return done.stdout.strip()

    def test_answers_for_winmx_and_wsx_hosts_block_their_addresses(self) -> None:
        gateway = self.gateway("-D", str(CONF), "-L", "ptu", "-d", "a")
        self.assertTrue(self.tcp_ok("user", WINMX, PORT), "reachable before any DNS answer")
        self.assertTrue(self.tcp_ok("user", OPENNAP, PORT))

        self.assertEqual(self.dig("www.example.test"), ORDINARY, "answers always pass")
        self.assertEqual(self.dig("www.winmx.com"), WINMX)
        self.assertFalse(self.tcp_ok("user", WINMX, PORT), "a trained address is dropped")
        self.assertTrue(self.web_ok("user"), "names that match nothing keep working")
        self.assertTrue(self.tcp_ok("user", OPENNAP, PORT), "not trained yet")

        self.assertEqual(self.dig("opennap2.example"), OPENNAP)
        self.assertFalse(self.tcp_ok("user", OPENNAP, PORT), "a wsx host's address is dropped")

        log = gateway.read_log()
        self.assertIn(f"peer {WINMX} learned (dns: www.winmx.com)", log)
        self.assertIn(f"peer {OPENNAP} learned (dns: opennap2.example)", log)
        self.assertIn("dropped TCP 198.18.1.20", log)
        self.assertIn("198.18.7.1", gateway.ctl("dump-blocks").stdout, "wsx literal IPs at start")

    def test_banned_name_from_the_control_port(self) -> None:
        gateway = self.gateway("-D", str(CONF))
        self.assertEqual(gateway.ctl("ban-dns-name chat.example.test").stdout,
                         "OK banned chat.example.test\n")  # fmt: skip
        self.assertIn("chat.example.test", gateway.ctl("dump-dns-names").stdout)
        self.assertEqual(self.dig("chat.example.test"), OPENNAP)
        self.assertFalse(self.tcp_ok("user", OPENNAP, PORT))
        self.assertTrue(self.web_ok("user"))
