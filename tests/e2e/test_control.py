"""The control port of the real daemon, driven with plain nc (and p2pwall-ctl) in the lab."""

from __future__ import annotations

from lab.gateway import BIN, ENV

from .support import LabCase


class ControlPortTests(LabCase):
    peers = 2

    def test_block_unblock_dump_and_bad_input_with_nc(self) -> None:
        gateway = self.gateway("-t", "2", "-L", "x")
        web = self.lab.addr("web")
        self.assertTrue(self.web_ok("user"))

        reply = gateway.ctl(f"block {web}:80 {self.lab.addr('user')}")
        self.assertEqual(reply.stdout, f"OK blocked {web}:80 for client {self.lab.addr('user')}\n")
        self.assertFalse(self.web_ok("user"), "a manual block drops the user's connections")
        self.assertTrue(self.web_ok("rogue"), "the block names one client only")

        dump = gateway.ctl("dump-blocks").stdout.splitlines()
        self.assertEqual(dump[-1], "OK 1 blocks")
        self.assertTrue(dump[0].startswith(f"{web} 80 {self.lab.addr('user')} manual "))

        for bad, error in (
            ("frobnicate", "ERR unknown command"),
            ("block 300.1.1.1", "ERR"),
            (f"block {web}:70000", "ERR"),
            ("unblock 198.19.9.9", "ERR not blocked"),
        ):
            self.assertTrue(gateway.ctl(bad).stdout.startswith(error), bad)
        self.assertEqual(gateway.ctl("dump-blocks").stdout.splitlines()[-1], "OK 1 blocks")

        self.assertTrue(
            gateway.ctl(f"unblock {web}:80 {self.lab.addr('user')}").stdout.startswith("OK")
        )
        self.assertTrue(self.web_ok("user"))
        self.assertIn("control 127.0.0.1:", gateway.read_log())

    def test_accept_all_and_p2pwall_ctl(self) -> None:
        gateway = self.gateway("-t", "30")
        ctl = [str(BIN / "p2pwall-ctl"), "--control", "tcp:127.0.0.1:4120"]
        blocked = self.lab.run("gw", [*ctl, "block", self.lab.addr("web")], env=ENV,
                               capture_output=True, text=True)  # fmt: skip
        self.assertEqual(
            (blocked.returncode, blocked.stdout.strip()), (0, f"OK blocked {self.lab.addr('web')}")
        )
        self.assertFalse(self.web_ok("user"))
        self.assertEqual(gateway.ctl("accept-all 1").stdout, "OK accept-all 1\n")
        self.assertTrue(self.web_ok("user"), "accept-all lets everything through")
        self.assertEqual(gateway.ctl("accept-all 0").stdout, "OK accept-all 0\n")
        self.assertFalse(self.web_ok("user"))
        refused = self.lab.run("gw", [*ctl, "unblock", "198.19.9.9"], env=ENV, capture_output=True)
        self.assertEqual(refused.returncode, 1)
        gateway.stop()
        down = self.lab.run("gw", [*ctl, "ping"], env=ENV, capture_output=True, text=True)
        self.assertEqual(down.returncode, 2)
        self.assertTrue(down.stderr)
