"""The real daemon in the lab: ``p2pwall-rules`` output applied in ``gw``, ``twistd -n p2pwall``
started there, stopped by PID, its log read back.

Used by the end-to-end tests, the demo and the benchmark, so all three exercise exactly what an
admin runs: the printed rules through ``sh`` and the ``twistd`` plugin.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from .netlab import GREEN_NET6, Lab, LabError

BIN = Path(sys.executable).parent
CHECKOUT = Path(__file__).resolve().parent.parent
# The console scripts and twistd come from the venv, the code from this checkout: the lab always
# runs the working tree, never a stale installed copy.
ENV = {**os.environ, "PYTHONPATH": str(CHECKOUT)}
GREEN_NET = "198.18.1.0/24"
# The daemon's --green: the green LAN, both families.
GREEN_OPTIONS = ("--green", GREEN_NET, "--green", str(GREEN_NET6))
CONTROL_PORT = 4120


def nft_queue_supported(lab: Lab) -> bool:
    """Whether this kernel has nft's ``queue`` statement (CONFIG_NFT_QUEUE)."""
    probe = "table inet p2pwall_probe { chain c { type filter hook input priority 0; " \
            "udp dport 9 queue num 9 bypass; } }\n"  # fmt: skip
    return (
        lab.run(
            "gw", ["nft", "-c", "-f", "-"], input=probe.encode(), capture_output=True
        ).returncode
        == 0
    )


# Where the kernel has no nft ``queue`` (CONFIG_NFT_QUEUE), the nft rule set still does all the
# choosing: each ``queue`` statement becomes a mark (one for ``bypass``, one without), and
# xtables NFQUEUE rules (iptables and ip6tables), appended to the mangle table's FORWARD and
# INPUT chains (run after the nft chains), hand the marked packets to the daemon. Like the
# printed rules, the hand-off queues from mangle, so a packet the daemon accepts still meets the
# admin's filter rules.
HANDOFF_MARK = 0x70320001
FAIL_CLOSED_MARK = 0x70320002
RULE_SETS = ("iptables", "nft", "nft-xt")
HANDOFF_TABLE = "mangle"
HANDOFF_TOOLS = ("iptables", "ip6tables")


def nft_via_xtables(script: str, queue: int) -> str:
    """``p2pwall-rules --format nft`` output with its queue statements turned into marks,
    in chains that run just before iptables' mangle chains."""
    statement = re.compile(rf"queue num {queue}( bypass)?(?=\n)")
    if not statement.search(script):
        raise LabError(f"no 'queue num {queue}' in the nft rules")

    def mark(match: re.Match[str]) -> str:
        return f"meta mark set {HANDOFF_MARK if match.group(1) else FAIL_CLOSED_MARK:#x} accept"

    marked = statement.sub(mark, script)
    if "queue num" in marked:
        raise LabError(f"the nft rules queue to another queue than {queue}")
    return marked.replace("priority mangle;", "priority mangle - 1;")


def handoff_rules(queue: int) -> list[list[str]]:
    """The mangle-table rules (what follows ``-A``/``-C``/``-D``) that queue marked packets."""
    rules = []
    for chain in ("FORWARD", "INPUT"):
        for mark, bypass in ((HANDOFF_MARK, ["--queue-bypass"]), (FAIL_CLOSED_MARK, [])):
            rules.append([chain, "-m", "mark", "--mark", f"{mark:#x}", "-j", "NFQUEUE",
                          "--queue-num", str(queue), *bypass])  # fmt: skip
    return rules


class Gateway:
    """``twistd -n p2pwall`` plus its queue rules in the lab's ``gw`` namespace; its green
    networks are the lab's green LAN, IPv4 and IPv6."""

    def __init__(
        self,
        lab: Lab,
        options: Sequence[str] = (),
        rules: str = "iptables",
        rule_options: Sequence[str] = (),
        queue: int = 0,
        log: str = "p2pwall.log",
    ) -> None:
        if rules not in RULE_SETS:
            raise LabError(f"rules must be one of {', '.join(RULE_SETS)}, not {rules!r}")
        self.lab = lab
        self.options = list(options)
        self.rules = rules
        self.rule_options = list(rule_options)
        self.queue = queue
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self._rules_installed = False

    def rules_argv(self, delete: bool = False) -> list[str]:
        """``p2pwall-rules`` with this gateway's options (nft-xt prints the nft rules)."""
        rule_format = "nft" if self.rules == "nft-xt" else self.rules
        argv = [str(BIN / "p2pwall-rules"), "--green-if", self.lab.green_if, "--queue",
                str(self.queue), "--format", rule_format, *self.rule_options]  # fmt: skip
        return [*argv, "--delete"] if delete else argv

    def rules_command(self, delete: bool = False) -> str:
        """The admin's command line: ``p2pwall-rules ... | sh -e``."""
        return shlex.join(self.rules_argv(delete)) + " | sh -e"

    def install_rules(self) -> None:
        if self.rules == "nft" and not nft_queue_supported(self.lab):
            raise LabError("this kernel has no nft queue support (CONFIG_NFT_QUEUE not set)")
        if self.rules == "nft-xt":
            self._install_nft_via_xtables()
        else:
            self._gw_shell(self.rules_command())
        self._rules_installed = True

    def _install_nft_via_xtables(self) -> None:
        printed = self.lab.run("gw", self.rules_argv(), capture_output=True, text=True, env=ENV)
        if printed.returncode:
            raise LabError(f"p2pwall-rules failed: {printed.stderr}")
        self._gw_shell(nft_via_xtables(printed.stdout, self.queue))
        for tool in HANDOFF_TOOLS:
            mangle = [tool, "-t", HANDOFF_TABLE]
            for rule in handoff_rules(self.queue):
                check = shlex.join([*mangle, "-C", *rule])
                self._gw_shell(f"{check} 2>/dev/null || {shlex.join([*mangle, '-A', *rule])}")

    def _gw_shell(self, command: str, check: bool = True) -> None:
        done = self.lab.run(
            "gw", ["bash", "-o", "pipefail", "-c", command], capture_output=True, env=ENV
        )
        if check and done.returncode:
            raise LabError(f"installing {self.rules} rules failed: {done.stderr.decode()}")

    def remove_rules(self) -> None:
        if self._rules_installed:
            self._gw_shell(self.rules_command(delete=True), check=False)
            if self.rules == "nft-xt":
                for tool in HANDOFF_TOOLS:
                    for rule in handoff_rules(self.queue):
                        delete = shlex.join([tool, "-t", HANDOFF_TABLE, "-D", *rule])
                        self._gw_shell(f"while {delete} 2>/dev/null; do :; done")
            self._rules_installed = False

    def argv(self, extra: Sequence[str] = ()) -> list[str]:
        """The daemon's command line (a subclass may start it differently)."""
        return [str(BIN / "twistd"), "-n", "--pidfile=", "p2pwall", "--queue", str(self.queue),
                *GREEN_OPTIONS, *self.options, *extra]  # fmt: skip

    def start(self, extra: Sequence[str] = (), wait: float = 20.0) -> None:
        """Start the daemon and wait until it reads the queue."""
        if self.proc is not None and self.proc.poll() is None:
            raise LabError("the daemon is already running")
        start_mark = len(self.read_log())
        self.proc = self.lab.spawn("gw", self.argv(extra), log=self.log, env=ENV)
        deadline = time.monotonic() + wait
        while "reading NFQUEUE" not in self.read_log()[start_mark:]:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise LabError(f"p2pwall did not start:\n{self.read_log()[start_mark:][-3000:]}")
            time.sleep(0.05)

    def stop(self, sig: int = signal.SIGTERM, wait: float = 15.0) -> int | None:
        """Signal the daemon (by the PID we started) and wait for it to exit."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(wait)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(wait)
        code, self.proc = self.proc.returncode, None
        return code

    def read_log(self) -> str:
        return self.lab.read_log(self.log)

    def ctl(self, *command: str, timeout: float = 10.0) -> subprocess.CompletedProcess[str]:
        """Send one control command with plain ``nc``, as an admin would."""
        return self.lab.run(
            "gw",
            ["nc", "-q", "1", "-w", str(int(timeout)), "127.0.0.1", str(CONTROL_PORT)],
            input=" ".join(command) + "\n",
            text=True,
            capture_output=True,
            timeout=timeout + 5,
        )

    def stats(self) -> dict[str, str]:
        """The control port's ``stats`` as a dict (without the closing ``OK`` line)."""
        lines = self.ctl("stats").stdout.splitlines()
        if not lines or lines[-1] != "OK stats":
            raise LabError(f"stats failed: {lines[-1:]}")
        return dict(line.split(" ", 1) for line in lines[:-1])

    def close(self) -> None:
        self.stop()
        self.remove_rules()

    def __enter__(self) -> Gateway:
        self.install_rules()
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
