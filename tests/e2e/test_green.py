"""--green-if protects a LAN outside the private ranges (the lab's 198.18.1.0/24) with no
--green at all; with neither option the start line says what is (not) protected."""

from __future__ import annotations

from .daemons import OwnArgvGateway
from .support import LabCase

TIME_LOCK = 3.0


class GreenInterfaceTests(LabCase):
    peers = 8

    def gateway(self, *options: str) -> OwnArgvGateway:
        gateway = OwnArgvGateway(self.lab, options)
        gateway.install_rules()
        self.addCleanup(gateway.close)
        gateway.start()
        return gateway

    def kazaa(self) -> dict:
        peers = [f"--peer={ip}:{port}" for ip, port in self.lab.peers]
        return self.ftclient(*peers, "--scale", "0.3")

    def test_green_if_alone_blocks_the_kazaa_client(self) -> None:
        gateway = self.gateway("--green-if", self.lab.green_if, "-t", str(TIME_LOCK), "-L", "c")
        log = gateway.read_log()
        self.assertIn("green networks 198.18.1.0/24,2001:2:0:1::/64,fe80::/10;", log)
        self.assertIn("green interfaces green0 (--green-if)", log)
        self.assertNotIn("WARNING", log)
        report = self.kazaa()
        self.assertEqual(report["breakthroughs"], [], "a FastTrack connection got through")
        self.assertGreater(sum(report["connects_tried"].values()), 0)
        self.assertIn("client 198.18.1.10 identified: FastTrack hello", gateway.read_log())

    def test_defaults_only_warn_and_do_not_protect_the_lab_lan(self) -> None:
        gateway = self.gateway("-t", str(TIME_LOCK))
        log = gateway.read_log()
        self.assertIn("WARNING: no --green-if and no --green: protecting only the private", log)
        self.assertIn("green interfaces none found;", log)
        report = self.kazaa()
        self.assertNotEqual(report["breakthroughs"], [], "the warning is true: nothing blocks")
