"""See why, undo, allow: explain, unlock, allow and dry-run on the real daemon in the lab, after
the simulated Kazaa client has locked itself."""

from __future__ import annotations

from lab.netlab import PEER_PORT

from .support import LabCase

ROGUE = "198.18.1.10"


class SeeWhyUndoAllowTests(LabCase):
    peers = 2

    def stat(self, gateway, key: str) -> int:
        lines = gateway.ctl("stats").stdout.splitlines()[:-1]
        return int(dict(line.split(None, 1) for line in lines)[key])

    def test_explain_unlock_allow_and_dry_run(self) -> None:
        gateway = self.gateway("-t", "120")
        peer = self.lab.peers[0][0]
        report = self.ftclient(f"--peer={peer}:{PEER_PORT}", "--scale", "0.05")
        self.assertGreater(report["pongs_received"], 0)
        self.assertFalse(self.web_ok("rogue"), "the client is locked")

        explained = gateway.ctl(f"explain {ROGUE}").stdout.splitlines()
        self.assertEqual(explained[0], f"address {ROGUE} green allowed=no")
        self.assertTrue(explained[1].startswith("lock locked until="), explained)
        self.assertIn('reason="FastTrack hello"', explained[2])
        self.assertIn(f"-> {peer}:{PEER_PORT}", explained[2])
        self.assertIn(
            f"block {peer}:{PEER_PORT} client={ROGUE} origin=fasttrack-udp", "\n".join(explained)
        )
        self.assertTrue(explained[-1].startswith(f"OK {ROGUE}: locked until "), explained)
        outside = gateway.ctl(f"explain {peer}").stdout.splitlines()
        self.assertEqual(outside[0], f"address {peer} outside allowed=no")
        self.assertIn(f"revealed-by={ROGUE}", outside[1])

        self.assertEqual(gateway.ctl("dry-run 1").stdout, "OK dry-run 1\n")
        self.assertTrue(self.web_ok("rogue"), "dry run: still locked, nothing dropped")
        self.assertTrue(self.tcp_ok("rogue", peer, PEER_PORT))
        self.assertIn(f"{ROGUE} locked", gateway.ctl("clients").stdout)
        self.assertEqual(gateway.ctl("dry-run 0").stdout, "OK dry-run 0\n")
        self.assertFalse(self.web_ok("rogue"))

        self.assertEqual(gateway.ctl(f"unlock {ROGUE}").stdout, f"OK unlocked {ROGUE}\n")
        self.assertTrue(self.web_ok("rogue"), "unlocked now, not at the lock's end")
        self.assertFalse(self.tcp_ok("rogue", peer, PEER_PORT), "its learned block stays")
        self.assertFalse(self.web_ok("rogue"), "and trying it locked the client again")

        self.assertEqual(
            gateway.ctl(f"allow {ROGUE}").stdout, f"OK allowed {ROGUE}/32, 1 clients released\n"
        )
        self.assertTrue(self.tcp_ok("rogue", peer, PEER_PORT), "an allowed host is not filtered")
        spoofs = self.stat(gateway, "spoofs")
        report = self.ftclient(f"--peer={peer}:{PEER_PORT}", "--scale", "0.05")
        self.assertGreater(report["pongs_received"], 0, "the real peer answered")
        self.assertEqual(self.stat(gateway, "spoofs"), spoofs, "no pong forged for it")
        self.assertTrue(self.web_ok("rogue"), "an allowed host is never locked")
        self.assertEqual(gateway.ctl("clients").stdout, "OK 0 clients\n")
