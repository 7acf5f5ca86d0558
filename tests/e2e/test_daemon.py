"""The real ``twistd p2pwall`` fails and lives like a Unix daemon: SIGHUP does not kill it, a
start failure ends it with one line and a non-zero status (daemonised too, never a hang, never
a traceback), ``--uid`` keeps the verdicts working, and the start line states ``-n``."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from lab.gateway import BIN, ENV

from .daemons import TWISTD, OwnArgvGateway, wait_for
from .support import LabCase

# A start failure must end the twistd parent within seconds (it used to wait for ever).
EXIT_WITHIN = 15.0


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


class DaemonCase(LabCase):
    peers = 0

    def twistd(self, *argv: str):
        """Run twistd in gw to its end (daemonised: until the parent exits), bounded."""
        started = time.monotonic()
        done = self.lab.run(
            "gw", [TWISTD, *argv], capture_output=True, text=True, env=ENV, timeout=EXIT_WITHIN
        )
        return done, time.monotonic() - started

    def daemon_argv(self, name: str, *options: str) -> tuple[list[str], Path, Path]:
        """Daemonised twistd (no -n) with a pidfile and a logfile in the lab's workdir; no
        control port unless ``options`` name one."""
        pidfile, logfile = self.lab.logpath(f"{name}.pid"), self.lab.logpath(f"{name}.log")
        argv = [f"--pidfile={pidfile}", f"--logfile={logfile}", "p2pwall", "--green-if",
                self.lab.green_if, "--control", "", *options]  # fmt: skip
        return argv, pidfile, logfile


class HangupTests(DaemonCase):
    def test_sighup_without_patterns_neither_stops_nor_loses_the_store(self) -> None:
        store = self.lab.logpath("peers")
        control = "tcp:4120:interface=127.0.0.1"
        argv, pidfile, logfile = self.daemon_argv("hup", "-f", str(store), "--control", control)
        done, _ = self.twistd(*argv)
        self.assertEqual(done.returncode, 0, done.stderr)
        pid = int(pidfile.read_text())
        self.assertTrue(wait_for(lambda: "reading NFQUEUE" in logfile.read_text(), 20))
        blocked = self.lab.run("gw", [str(BIN / "p2pwall-ctl"), "block", "198.19.9.9:1214"],
                               env=ENV, capture_output=True, text=True)  # fmt: skip
        self.assertEqual(blocked.returncode, 0, blocked.stdout + blocked.stderr)
        os.kill(pid, signal.SIGHUP)
        self.assertTrue(wait_for(lambda: "nothing to reload" in logfile.read_text(), 5))
        time.sleep(0.5)
        self.assertTrue(alive(pid), "SIGHUP stopped the daemon")
        os.kill(pid, signal.SIGTERM)
        self.assertTrue(wait_for(lambda: not alive(pid), 15))
        self.assertFalse(pidfile.exists(), "pidfile left behind")
        self.assertIn("198.19.9.9 1214", store.read_text(), "store not written at the stop")


class StartFailureTests(DaemonCase):
    def test_daemonised_bind_failure_exits_non_zero_with_the_message(self) -> None:
        first = OwnArgvGateway(self.lab, ["--green-if", self.lab.green_if])
        self.addCleanup(first.close)
        first.start()
        argv, pidfile, logfile = self.daemon_argv("second")
        done, took = self.twistd(*argv)  # the same queue, 0
        self.assertNotEqual(done.returncode, 0)
        self.assertLess(took, EXIT_WITHIN)
        line = ("cannot bind NFQUEUE 0: Operation not permitted (another program reads that "
                "queue, or no CAP_NET_ADMIN)")  # fmt: skip
        self.assertIn(f"p2pwall: {line}\n", done.stderr)
        self.assertTrue(wait_for(lambda: line in logfile.read_text(), 5))
        self.assertFalse(pidfile.exists())
        self.assertIsNone(first.proc.poll(), "the first daemon goes on")

    def test_start_error_is_one_line_with_and_without_n(self) -> None:
        store = self.lab.logpath("missing") / "peers"
        message = f"store file {store}: directory {store.parent} does not exist"
        done, _ = self.twistd("-n", "--pidfile=", "p2pwall", "--green-if", "green0",
                              "--control", "", "-f", str(store))  # fmt: skip
        self.assertEqual(done.returncode, 1)
        self.assertIn(message, done.stdout + done.stderr)
        self.assertNotIn("Traceback", done.stdout + done.stderr)
        argv, pidfile, logfile = self.daemon_argv("daemonised", "-f", str(store))
        done, _ = self.twistd(*argv)
        self.assertEqual(done.returncode, 1)
        self.assertIn(f"p2pwall: {message}\n", done.stderr)  # whole, not twistd's 100 bytes
        # The daemon logs it as it exits, just after the parent.
        self.assertTrue(wait_for(lambda: message in logfile.read_text(), 5))
        self.assertNotIn("Traceback", logfile.read_text())
        self.assertFalse(pidfile.exists())


class PrivilegeTests(DaemonCase):
    def test_uid_switch_keeps_the_verdicts_working(self) -> None:
        gateway = OwnArgvGateway(
            self.lab,
            ["--green-if", self.lab.green_if],
            twistd_options=["-n", "--pidfile=", "--uid", "nobody", "--gid", "nogroup"],
        )
        gateway.install_rules()
        self.addCleanup(gateway.close)
        gateway.start()
        for host in ("user", "rogue"):
            self.assertTrue(self.web_ok(host, timeout=3), f"{host} blackholed after --uid")
        stats = gateway.ctl("stats").stdout
        self.assertIn("reader_errors 0\n", stats)
        self.assertNotIn("accept_tcp 0\n", stats)
        self.assertIn("running as uid 65534 with CAP_NET_ADMIN and CAP_NET_RAW", gateway.read_log())


class StartLineTests(DaemonCase):
    def test_no_udp_block_is_stated_and_warned(self) -> None:
        gateway = OwnArgvGateway(self.lab, ["--green-if", self.lab.green_if, "-n"])
        self.addCleanup(gateway.close)
        gateway.start()
        log = gateway.read_log()
        self.assertIn("UDP blocking off (-n)", log)
        self.assertIn("WARNING: UDP blocking is OFF", log)
        for part in ("green networks 198.18.1.0/24", "time lock 120 s", "queue 0",
                     "detectors fasttrack, bittorrent, dns;", "store file none"):  # fmt: skip
            self.assertIn(part, log)
