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

from ..test_install_service import CONFIG, PREFIX, PYTHON, SCRIPT, UNIT
from ..test_packaging import command_words, settings, unit_values
from .daemons import wait_for
from .support import LabCase

CAPABILITIES = 1 << 12 | 1 << 13  # CAP_NET_ADMIN, CAP_NET_RAW
EVENTS = "/var/log/p2pwall/events.json"
# PR_SET_MDWE with PR_MDWE_REFUSE_EXEC_GAIN (Linux 6.3), kept across execve.
MDWE = (
    "import ctypes, os, sys\n"
    "libc = ctypes.CDLL(None, use_errno=True)\n"
    "if libc.prctl(65, 1, 0, 0, 0):\n"
    "    sys.exit(f'PR_SET_MDWE: {os.strerror(ctypes.get_errno())}')\n"
    "os.execv(sys.argv[1], sys.argv[1:])\n"
)
# Fresh, empty, writable in the sandbox (the unit's state and runtime directories go there).
HIDDEN = ("/run", "/var/lib", "/var/log")
SANDBOX = f"""
for dir in {" ".join(HIDDEN)}; do mount -t tmpfs -o mode=0755 tmpfs "$dir"; done
mkdir -m 0700 /run/p2pwall /var/lib/p2pwall /var/log/p2pwall
mount -o remount,bind,ro /
mount --bind /proc/sys /proc/sys && mount -o remount,bind,ro /proc/sys
umask 0077
exec setpriv --bounding-set=-all,+net_admin,+net_raw --no-new-privs -- "$@"
"""

# A system call in ``strace -f`` output: "PID name(".
SYSCALL = re.compile(r"\d+ +(\w+)\(")


def syscall_set(name: str) -> set[str]:
    """The system calls of a systemd filter group (``@system-service``) or name, expanded."""
    if not name.startswith("@"):
        return {name}
    listing = subprocess.run(
        ["systemd-analyze", "syscall-filter", name],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout  # fmt: skip
    words = [line.strip() for line in listing.splitlines()[1:]]
    return set().union(*(syscall_set(w) for w in words if w and not w.startswith("#")))


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
        # The admin's edit: write the store file every second, show control commands, and
        # write events as JSON where the unit's LogsDirectory is.
        options = f"-L cpx --store-interval 1 --json-events {EVENTS}"
        config.write_text(
            config.read_text().replace('DAEMON_OPTS="-L cp"', f'DAEMON_OPTS="{options}"')
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

    def start(self, *wrapper: str) -> tuple[subprocess.Popen[bytes], int]:
        """Apply the rules, start ``ExecStart`` in the sandbox (under ``wrapper``, outside it);
        the process and twistd's PID once it reads the queue."""
        start = self.rules("ExecStartPre")
        self.addCleanup(self.rules, "ExecStopPost")
        self.assertEqual(start.returncode, 0, start.stderr)
        self.assertIn("p2pwall-fwd", self.mangle())
        argv = [*wrapper, "unshare", "--mount", "--propagation", "private", "--", "/bin/sh",
                "-ec", SANDBOX, "sandbox", PYTHON, "-c", MDWE, *self.line("ExecStart")]  # fmt: skip
        daemon = self.lab.spawn("gw", argv, log="service.log", env=self.environ)
        self.addCleanup(self.stop, daemon)
        started = wait_for(lambda: "reading NFQUEUE" in self.log() or daemon.poll(), 30)
        self.assertTrue(started and daemon.poll() is None, self.log()[-3000:])
        pid = daemon.pid
        if wrapper:
            (pid,) = map(int, Path(f"/proc/{pid}/task/{pid}/children").read_text().split())
        self.assertIn("twistd", Path(f"/proc/{pid}/cmdline").read_text())
        return daemon, pid

    def log(self) -> str:
        return self.lab.read_log("service.log")

    def serve(self, pid: int) -> None:
        """What the daemon must still do in the sandbox: decide, take commands, write."""
        socket = Path(f"/proc/{pid}/root/run/p2pwall/control.sock")
        self.assertEqual(socket.stat().st_mode & 0o777, 0o600)
        web = self.lab.addr("web")
        self.assertTrue(self.web_ok("user"), "accepted through the queue")
        ctl = [str(BIN / "p2pwall-ctl"), "--control", f"unix:{socket}", "block", f"{web}:80"]
        blocked = subprocess.run(ctl, capture_output=True, text=True, timeout=30)
        self.assertEqual(blocked.returncode, 0, blocked.stdout + blocked.stderr)
        self.assertFalse(self.web_ok("user"), "dropped by the queue")
        store = Path(f"/proc/{pid}/root/var/lib/p2pwall/peers")
        self.assertTrue(wait_for(lambda: store.exists() and web in store.read_text(), 10))
        # logrotate's way with the events file: move it, then ExecReload (HUP) reopens it.
        events = Path(f"/proc/{pid}/root{EVENTS}")
        self.assertIn(f"block {web}:80", events.read_text())
        events.rename(events.with_name("events.json.1"))
        os.kill(pid, signal.SIGHUP)
        self.assertTrue(wait_for(events.exists, 10), "reopened on HUP")
        subprocess.run([*ctl[:3], "unblock", f"{web}:80"], capture_output=True, timeout=30)
        self.assertTrue(wait_for(lambda: "unblock" in events.read_text(), 10))

    def test_daemon_serves_under_the_sandbox(self) -> None:
        daemon, pid = self.start()
        status = dict(
            line.split(":\t", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        )
        self.assertEqual(int(status["CapBnd"], 16), CAPABILITIES)
        self.assertEqual(int(status["CapEff"], 16), CAPABILITIES)
        self.assertEqual(status["NoNewPrivs"].strip(), "1")
        mounts = {
            fields[4]: fields[5].split(",")
            for fields in map(str.split, Path(f"/proc/{pid}/mountinfo").read_text().splitlines())
        }
        for read_only in ("/", "/proc/sys"):
            self.assertIn("ro", mounts[read_only], read_only)
        for writable in ("/run", "/var/lib"):
            self.assertIn("rw", mounts[writable], writable)

        self.serve(pid)
        self.assertIsNone(daemon.poll())
        # twistd ends by its stop signal again once stopped; systemd counts SIGTERM as clean.
        self.assertEqual(self.stop(daemon), -signal.SIGTERM)
        self.assertIn("released NFQUEUE", self.log())
        self.assertEqual(self.rules("ExecStopPost").returncode, 0)
        self.assertNotIn("p2pwall", self.mangle())
        self.assertTrue(self.web_ok("user"), "no rules, no daemon: traffic flows")
        self.assertNotIn("Traceback", self.log())
        # The install wrote twistd's plugin cache: read-only here, it is not rewritten.
        self.assertNotIn("Unable to write to plugin cache", self.log())

    def test_system_calls_stay_in_the_units_filter(self) -> None:
        """Every system call of the daemon (and of what it runs) from twistd's start to its
        exit is in the unit's ``SystemCallFilter``, as systemd-analyze expands it."""
        for tool in ("strace", "systemd-analyze"):
            if shutil.which(tool) is None:
                raise self.skipTest(f"needs {tool}")
        (allowed,) = unit_values(self.unit, "SystemCallFilter")
        trace = self.root / "trace"
        daemon, pid = self.start("strace", "-f", "-qq", "-o", str(trace), "--")
        self.serve(pid)
        os.kill(pid, signal.SIGTERM)
        self.assertEqual(daemon.wait(30), -signal.SIGTERM)  # strace ends as its tracee did
        self.assertIn("released NFQUEUE", self.log())
        lines = trace.read_text().splitlines()
        twistd = f'execve("{self.root / PREFIX}/bin/twistd"'
        begin = next(i for i, line in enumerate(lines) if twistd in line)
        used = {m.group(1) for line in lines[begin:] if (m := SYSCALL.match(line))}
        # The queue's bind, packets and verdicts: the trace is the daemon's.
        self.assertLessEqual({"socket", "bind", "recvfrom", "sendto"}, used)
        self.assertEqual(used - syscall_set(allowed), set())

    def test_kernel_enforcement_under_the_sandbox_and_its_filter(self) -> None:
        """ENFORCE=kernel: the rules bring the sets, the daemon fills them through libnftables
        (ctypes, no writable executable memory) with the unit's system calls only."""
        if shutil.which("strace") is None or shutil.which("systemd-analyze") is None:
            raise self.skipTest("needs strace and systemd-analyze")
        config = self.root / CONFIG
        config.write_text(config.read_text().replace("ENFORCE=queue", "ENFORCE=kernel"))
        self.environ = {**self.environ, **settings(config.read_text())}
        (allowed,) = unit_values(self.unit, "SystemCallFilter")
        trace = self.root / "trace"
        daemon, pid = self.start("strace", "-f", "-qq", "-o", str(trace), "--")
        self.assertIn("enforced by the kernel (nft sets)", self.log())
        self.serve(pid)
        os.kill(pid, signal.SIGTERM)
        self.assertEqual(daemon.wait(30), -signal.SIGTERM)
        self.assertNotIn("Traceback", self.log())
        lines = trace.read_text().splitlines()
        twistd = f'execve("{self.root / PREFIX}/bin/twistd"'
        begin = next(i for i, line in enumerate(lines) if twistd in line)
        used = {m.group(1) for line in lines[begin:] if (m := SYSCALL.match(line))}
        self.assertEqual(used - syscall_set(allowed), set())
        self.assertEqual(self.rules("ExecStopPost").returncode, 0)
        tables = self.lab.run("gw", ["nft", "list", "tables"], capture_output=True, text=True)
        self.assertNotIn("p2pwall", tables.stdout)

    def stop(self, daemon: subprocess.Popen[bytes]) -> int | None:
        if daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(20)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait(20)
        return daemon.returncode
