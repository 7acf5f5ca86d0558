"""The installed service's command lines in the lab, under the unit's sandbox as far as it can
be built without systemd: the rules lines (``ExecStartPre``/``ExecStopPost``) through bash in
``gw``; the daemon (``ExecStart``, from a virtualenv that ``install-service.sh --root`` built on
the system Python) in a mount namespace where everything is read-only but its state and runtime
directories (``ProtectSystem=strict``, ``ProtectKernelTunables``), with only CAP_NET_ADMIN and
CAP_NET_RAW in its bounding set, no new privileges, and no writable executable memory
(``PR_SET_MDWE``, what ``MemoryDenyWriteExecute`` enforces). It must bind the queue, decide
packets, take commands on its 0600 control socket, write its store file, survive
``ExecReload``'s HUP and stop cleanly.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

from lab.gateway import BIN

from ..test_install_service import CONFIG, PYTHON, SCRIPT, UNIT
from ..test_packaging import command_words, settings, unit_values
from .daemons import wait_for
from .support import LabCase

CAPABILITIES = 1 << 12 | 1 << 13  # CAP_NET_ADMIN, CAP_NET_RAW
# PR_SET_MDWE with PR_MDWE_REFUSE_EXEC_GAIN (Linux 6.3), kept across execve.
MDWE = (
    "import ctypes, os, sys\n"
    "libc = ctypes.CDLL(None, use_errno=True)\n"
    "if libc.prctl(65, 1, 0, 0, 0):\n"
    "    sys.exit(f'PR_SET_MDWE: {os.strerror(ctypes.get_errno())}')\n"
    "os.execv(sys.argv[1], sys.argv[1:])\n"
)
# Fresh, empty, writable in the sandbox (the unit's state and runtime directories go there).
HIDDEN = ("/run", "/var/lib")
SANDBOX = f"""
for dir in {" ".join(HIDDEN)}; do mount -t tmpfs -o mode=0755 tmpfs "$dir"; done
mkdir -m 0700 /run/p2pwall /var/lib/p2pwall
mount -o remount,bind,ro /
mount --bind /proc/sys /proc/sys && mount -o remount,bind,ro /proc/sys
umask 0077
exec setpriv --bounding-set=-all,+net_admin,+net_raw --no-new-privs -- "$@"
"""


class SandboxedServiceTests(LabCase):
    peers = 0

    def setUp(self) -> None:
        super().setUp()
        for tool in ("unshare", "setpriv"):
            if shutil.which(tool) is None:
                raise self.skipTest(f"needs {tool} (util-linux)")
        version = re.match(r"(\d+)\.(\d+)", os.uname().release)
        if version is None or tuple(map(int, version.groups())) < (6, 3):
            raise self.skipTest("PR_SET_MDWE (MemoryDenyWriteExecute's rule) needs Linux 6.3")
        self.root = Path(self.mktemp()).resolve()
        if any(self.root.is_relative_to(hidden) for hidden in HIDDEN):
            raise self.skipTest(
                f"the checkout is under {', '.join(HIDDEN)}, which the sandbox hides"
            )
        done = subprocess.run(
            ["bash", str(SCRIPT), "--root", str(self.root), "--python", PYTHON,
             "--green-if", self.lab.green_if],
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        if done.returncode:
            raise self.skipTest(f"install-service.sh could not build the venv: {done.stderr}")
        config = self.root / CONFIG
        # The admin's edit: write the store file every second, show control commands.
        config.write_text(
            config.read_text().replace(
                'DAEMON_OPTS="-L cp"', 'DAEMON_OPTS="-L cpx --store-interval 1"'
            )
        )
        self.unit = (self.root / UNIT).read_text()
        self.environ = {
            **settings(config.read_text()),
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        }

    def line(self, key: str) -> list[str]:
        (value,) = unit_values(self.unit, key)
        return command_words(value, self.environ)

    def rules(self, key: str) -> subprocess.CompletedProcess[str]:
        return self.lab.run(
            "gw", self.line(key), env=self.environ, capture_output=True, text=True, timeout=60
        )

    def mangle(self) -> str:
        return self.lab.run(
            "gw", ["iptables", "-t", "mangle", "-S"], capture_output=True, text=True, timeout=30
        ).stdout

    def test_daemon_serves_under_the_sandbox(self) -> None:
        start = self.rules("ExecStartPre")
        self.addCleanup(self.rules, "ExecStopPost")
        self.assertEqual(start.returncode, 0, start.stderr)
        self.assertIn("p2pwall-fwd", self.mangle())

        argv = ["unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-ec",
                SANDBOX, "sandbox", PYTHON, "-c", MDWE, *self.line("ExecStart")]  # fmt: skip
        daemon = self.lab.spawn("gw", argv, log="service.log", env=self.environ)
        self.addCleanup(self.stop, daemon)
        log = self.lab.logpath("service.log")
        started = wait_for(lambda: "reading NFQUEUE" in log.read_text() or daemon.poll(), 30)
        self.assertTrue(started and daemon.poll() is None, log.read_text()[-3000:])

        status = dict(
            line.split(":\t", 1)
            for line in Path(f"/proc/{daemon.pid}/status").read_text().splitlines()
        )
        self.assertIn("twistd", Path(f"/proc/{daemon.pid}/cmdline").read_text())
        self.assertEqual(int(status["CapBnd"], 16), CAPABILITIES)
        self.assertEqual(int(status["CapEff"], 16), CAPABILITIES)
        self.assertEqual(status["NoNewPrivs"].strip(), "1")

        mounts = {
            fields[4]: fields[5].split(",")
            for fields in map(
                str.split, Path(f"/proc/{daemon.pid}/mountinfo").read_text().splitlines()
            )
        }
        for read_only in ("/", "/proc/sys"):
            self.assertIn("ro", mounts[read_only], read_only)
        for writable in ("/run", "/var/lib"):
            self.assertIn("rw", mounts[writable], writable)

        inside = Path(f"/proc/{daemon.pid}/root")
        socket = inside / "run/p2pwall/control.sock"
        self.assertEqual(socket.stat().st_mode & 0o777, 0o600)
        web = self.lab.addr("web")
        self.assertTrue(self.web_ok("user"), "accepted through the queue")
        ctl = [str(BIN / "p2pwall-ctl"), "--control", f"unix:{socket}", "block", f"{web}:80"]
        blocked = subprocess.run(ctl, capture_output=True, text=True, timeout=30)
        self.assertEqual(blocked.returncode, 0, blocked.stdout + blocked.stderr)
        self.assertFalse(self.web_ok("user"), "dropped by the queue")
        store = inside / "var/lib/p2pwall/peers"
        self.assertTrue(wait_for(lambda: store.exists() and web in store.read_text(), 10))

        os.kill(daemon.pid, signal.SIGHUP)  # ExecReload
        self.assertTrue(wait_for(lambda: "SIGHUP" in log.read_text(), 10))
        self.assertIsNone(daemon.poll())
        # twistd ends by its stop signal again once stopped; systemd counts SIGTERM as clean.
        self.assertEqual(self.stop(daemon), -signal.SIGTERM)
        self.assertIn("released NFQUEUE", log.read_text())
        self.assertEqual(self.rules("ExecStopPost").returncode, 0)
        self.assertNotIn("p2pwall", self.mangle())
        self.assertTrue(self.web_ok("user"), "no rules, no daemon: traffic flows")
        self.assertNotIn("Traceback", log.read_text())

    def stop(self, daemon: subprocess.Popen[bytes]) -> int | None:
        if daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(20)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait(20)
        return daemon.returncode
