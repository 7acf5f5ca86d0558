"""The systemd unit and its settings file, read the way systemd reads them.

Each command line of ``packaging/p2pwall.service.in`` is split and expanded as systemd does
(``systemd.service(5)``, "Command lines": a word ``$NAME`` becomes the value's words,
``${NAME}`` is replaced inside a word, a leading ``+`` only changes privileges) with the values of
``packaging/p2pwall.default``, then given to the parser that will read it: twistd's (with the
p2pwall plugin's options) for ``ExecStart``, ``p2pwall-rules``' for the rules, run through
bash with a stand-in ``p2pwall-rules`` that records its arguments.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path, PurePosixPath

from twisted.python import usage
from twisted.scripts.twistd import ServerOptions
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from p2pwall.tools import rules

PACKAGING = Path(__file__).resolve().parents[1] / "packaging"
UNIT = PACKAGING / "p2pwall.service.in"
DEFAULTS = PACKAGING / "p2pwall.default"
PREFIX = "/opt/p2pwall"
CONFIG = "/etc/default/p2pwall"
# What install-service.sh --green-if eth1 sets; the shipped file leaves it to the admin.
GREEN_IF = "eth1"
# Set by systemd itself, not by the settings file.
MANAGER_VARIABLES = {"MAINPID"}
VARIABLE = re.compile(r"\$\{(\w+)\}|\$(\w+)")


def render(text: str, prefix: str = PREFIX, config: str = CONFIG) -> str:
    return text.replace("@PREFIX@", prefix).replace("@CONFIG@", config)


def unit_entries(text: str) -> list[tuple[str, str, str]]:
    """(section, key, value) for each assignment, in order; comments skipped."""
    entries, section = [], ""
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        entries.append((section, key.strip(), value.strip()))
    return entries


def unit_values(text: str, key: str) -> list[str]:
    return [value for _, name, value in unit_entries(text) if name == key]


def settings(text: str) -> dict[str, str]:
    """An EnvironmentFile's assignments: quotes removed, nothing expanded."""
    values = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = " ".join(shlex.split(value))
    return values


def command_words(line: str, environ: dict[str, str]) -> list[str]:
    """A unit's command line as the argv systemd executes."""
    words = []
    for word in shlex.split(line.lstrip("+-@:!")):
        whole = re.fullmatch(r"\$(\w+)", word)
        if whole:
            words += environ.get(whole.group(1), "").split()
        else:
            words.append(re.sub(r"\$\{(\w+)\}", lambda m: environ.get(m.group(1), ""), word))
    return words


def environment(**changes: str) -> dict[str, str]:
    return {**settings(DEFAULTS.read_text()), "GREEN_IF": GREEN_IF, **changes}


class UnitCommandTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.unit = render(UNIT.read_text())

    def daemon(self, **changes: str) -> ServerOptions:
        (start,) = unit_values(self.unit, "ExecStart")
        argv = command_words(start, environment(**changes))
        self.assertEqual(argv[0], f"{PREFIX}/bin/twistd")
        config = ServerOptions()
        config.parseOptions(argv[1:])
        return config

    def test_exec_start_parses_with_twistd_and_the_daemon_options(self) -> None:
        config = self.daemon()
        self.assertEqual(config.subCommand, "p2pwall")
        self.assertTrue(config["nodaemon"])
        self.assertEqual(config["pidfile"], "")
        options = config.subOptions
        self.assertEqual(options["green-if"], [GREEN_IF])
        self.assertEqual((options["queue"], options["time-lock"]), (0, 120.0))
        self.assertEqual(options["stderr-classes"], frozenset("cp"))

    def test_extra_daemon_options_reach_the_daemon(self) -> None:
        extra = "-L c --green-if eth2 -d t --dry-run --allow 198.18.0.5/32"
        options = self.daemon(DAEMON_OPTS=extra, TIME_LOCK="30").subOptions
        self.assertEqual(options["green-if"], [GREEN_IF, "eth2"])
        self.assertTrue(options["dry-run"])
        self.assertEqual([str(net) for net in options["allow"]], ["198.18.0.5/32"])
        self.assertEqual(options["debug-classes"], frozenset("t"))
        self.assertEqual(options["time-lock"], 30.0)

    def test_bad_setting_is_refused_by_the_daemon(self) -> None:
        self.assertRaises(usage.UsageError, self.daemon, TIME_LOCK="soon")

    def test_store_file_and_control_socket_are_in_the_daemon_directories(self) -> None:
        """The only writable places under ProtectSystem=strict; the socket's own mode is 0600."""
        options = self.daemon().subOptions
        (state,) = unit_values(self.unit, "StateDirectory")
        (runtime,) = unit_values(self.unit, "RuntimeDirectory")
        store = PurePosixPath(options["store-file"])
        self.assertEqual(store.parent, PurePosixPath("/var/lib", state))
        kind, path = options["control"].split(":", 1)
        self.assertEqual(
            (kind, PurePosixPath(path).parent), ("unix", PurePosixPath("/run", runtime))
        )
        self.assertNotIn("mode=", options["control"])  # control.py's default: 0600
        self.assertEqual(unit_values(self.unit, "RuntimeDirectoryMode"), ["0700"])

    def test_reload_sends_hup_to_the_daemon(self) -> None:
        (reload,) = unit_values(self.unit, "ExecReload")
        self.assertEqual(command_words(reload, {"MAINPID": "42"}), ["/bin/kill", "-HUP", "42"])

    def test_every_setting_is_used_and_nothing_else_is(self) -> None:
        used = {a or b for a, b in VARIABLE.findall(self.unit)} - MANAGER_VARIABLES
        self.assertEqual(used, set(settings(DEFAULTS.read_text())))

    def test_settings_file_leaves_the_green_interface_to_the_admin(self) -> None:
        shipped = settings(DEFAULTS.read_text())
        self.assertEqual(shipped["GREEN_IF"], "")
        self.assertEqual(unit_values(self.unit, "EnvironmentFile"), [CONFIG])


class RulesCommandTests(SynchronousTestCase):
    """The rules lines run by bash against a stand-in p2pwall-rules: what it was given must be
    what the real one accepts, and its output must be run, or the start fail."""

    def setUp(self) -> None:
        self.prefix = Path(self.mktemp()).resolve()
        (self.prefix / "bin").mkdir(parents=True)
        self.argv = self.prefix / "argv"
        self.unit = render(UNIT.read_text(), prefix=str(self.prefix))

    def stand_in(self, output: str = "", status: int = 0) -> None:
        script = self.prefix / "bin" / "p2pwall-rules"
        script.write_text(
            '#!/bin/sh\nprintf "%s\\0" "$@" > "$ARGV"\n'
            f"printf '%s' {shlex.quote(output)}\nexit {status}\n"
        )
        script.chmod(0o755)

    def run_line(self, key: str, **changes: str) -> subprocess.CompletedProcess[str]:
        (line,) = unit_values(self.unit, key)
        self.assertTrue(line.startswith("+"), "rules run outside the sandbox")
        environ = environment(**changes)
        return subprocess.run(
            command_words(line, environ),
            env={**environ, "ARGV": str(self.argv), "PATH": os.environ["PATH"]},
            capture_output=True,
            text=True,
            timeout=60,
        )

    def recorded(self) -> list[str]:
        return self.argv.read_text().split("\0")[:-1]

    def accepted(self, argv: list[str]) -> rules.Options:
        options = rules.Options()
        options.parseOptions(argv)
        return options

    def test_start_and_stop_give_the_rules_the_daemon_settings(self) -> None:
        self.stand_in()
        self.assertEqual(self.run_line("ExecStartPre").returncode, 0)
        start = self.accepted(self.recorded())
        self.assertEqual(self.run_line("ExecStopPost").returncode, 0)
        stop = self.accepted(self.recorded())
        self.assertEqual((start["delete"], stop["delete"]), (False, True))
        for options in (start, stop):
            self.assertEqual((options["green-if"], options["queue"]), ([GREEN_IF], 0))

    def test_queue_and_extra_options_reach_the_rules(self) -> None:
        self.stand_in()
        self.run_line("ExecStartPre", QUEUE="7", RULES_OPTS="--format nft --no-bypass")
        options = self.accepted(self.recorded())
        self.assertEqual((options["queue"], options["format"], options["no-bypass"]), (7, "nft", 1))
        self.assertIn("queue num 7", rules.render(options))

    def test_output_is_run_by_sh_e(self) -> None:
        marks = self.prefix / "marks"
        self.stand_in(f"echo first >> {marks}\nfalse\necho second >> {marks}\n")
        self.assertNotEqual(self.run_line("ExecStartPre").returncode, 0)
        self.assertEqual(marks.read_text(), "first\n")

    def test_failing_rules_fail_the_start(self) -> None:
        """Without pipefail, sh -e reading no rules would succeed and the daemon run unfed."""
        self.stand_in(status=2)
        self.assertEqual(self.run_line("ExecStartPre").returncode, 2)
        self.assertEqual(self.run_line("ExecStopPost").returncode, 2)

    def test_empty_green_interface_is_refused_with_one_line(self) -> None:
        self.assertRaises(usage.UsageError, self.accepted, ["--green-if", ""])


class VerifyTests(SynchronousTestCase):
    """``systemd-analyze verify`` on the rendered unit, with the commands it names present."""

    def setUp(self) -> None:
        if shutil.which("systemd-analyze") is None:
            raise SkipTest("systemd-analyze is not installed (apt-get install systemd)")
        self.prefix = Path(self.mktemp()).resolve()
        (self.prefix / "bin").mkdir(parents=True)
        for name in ("twistd", "p2pwall-rules"):
            (self.prefix / "bin" / name).write_text("#!/bin/sh\n")
            (self.prefix / "bin" / name).chmod(0o755)

    def verify(self, text: str) -> subprocess.CompletedProcess[str]:
        unit = self.prefix / "p2pwall.service"
        unit.write_text(render(text, prefix=str(self.prefix)))
        return subprocess.run(
            ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
        )

    def test_unit_verifies_without_a_warning(self) -> None:
        result = self.verify(UNIT.read_text())
        self.assertEqual((result.returncode, result.stdout + result.stderr), (0, ""))

    def test_verify_reports_a_mistake(self) -> None:
        """What the test above relies on: a misspelt key is reported."""
        result = self.verify(UNIT.read_text().replace("ProtectHome=", "ProtectHomes="))
        self.assertIn("Unknown key 'ProtectHomes'", result.stderr)
