"""scripts/install-service.sh end to end in a throw-away root: a real virtualenv built from this
checkout, the rendered unit verified, the upgrade keeping the admin's settings, and the
uninstall leaving exactly what was there before. Nothing outside the temporary root is touched
(``--root`` never calls systemctl)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from .test_packaging import command_words, environment, unit_values

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "install-service.sh"
PYTHON = "/usr/bin/python3"
PREFIX = "opt/p2pwall"
UNIT = "etc/systemd/system/p2pwall.service"
CONFIG = "etc/default/p2pwall"


# Stand-ins for the package tools, over a list of installed packages ($FAKE_STATE), logging
# every change to $FAKE_LOG; apt-get install also brings a dependency (cpp) and the runtime
# library of libnetfilter-queue-dev, as apt does.
FAKE_TOOLS = {
    "dpkg-query": """#!/bin/sh
if [ $# -ge 3 ]; then grep -qx "$3" "$FAKE_STATE" && printf 'install ok installed'; exit 0; fi
sed 's/^/install ok installed /' "$FAKE_STATE"
""",
    "apt-get": """#!/bin/sh
echo "apt-get $*" >> "$FAKE_LOG"
action=$(printf '%s\\n' "$@" | grep -xE 'install|purge')
for arg; do
  case $arg in -*|install|purge) continue ;; esac
  grep -vx "$arg" "$FAKE_STATE" > "$FAKE_STATE.new"; mv "$FAKE_STATE.new" "$FAKE_STATE"
  [ "$action" = purge ] || echo "$arg" >> "$FAKE_STATE"
done
[ "$action" = purge ] || printf 'cpp\\nlibnetfilter-queue1\\n' >> "$FAKE_STATE"
""",
    "apt-mark": '#!/bin/sh\necho "apt-mark $*" >> "$FAKE_LOG"\n',
    "systemctl": '#!/bin/sh\necho "systemctl $*" >> "$FAKE_LOG"\n',
    "dpkg": """#!/bin/sh
[ "$1" = -S ] || exit 2
shift
for name; do
  case $name in libnetfilter_queue.so*) echo "libnetfilter-queue1:amd64: /usr/lib/$name" ;; esac
done
""",
}


def tree(root: Path) -> dict[str, str | None]:
    """Every path under ``root``, with each file's text (None for a directory)."""
    return {
        str(path.relative_to(root)): None if path.is_dir() else path.read_text()
        for path in sorted(root.rglob("*"))
    }


class InstallTests(SynchronousTestCase):
    def setUp(self) -> None:
        check = subprocess.run([PYTHON, "-c", "import ensurepip, venv"], capture_output=True)
        if check.returncode:
            raise SkipTest(f"{PYTHON} cannot build a virtualenv (apt-get install python3-venv)")
        self.base = Path(self.mktemp()).resolve()
        self.base.mkdir()

    def script(self, *args: str | Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(SCRIPT), "--python", PYTHON, *map(str, args)],
            capture_output=True,
            text=True,
            timeout=600,
        )

    def succeed(self, *args: str | Path) -> str:
        result = self.script(*args)
        self.assertEqual(result.returncode, 0, result.stderr)
        return result.stdout

    def test_install_upgrade_uninstall_in_an_empty_root(self) -> None:
        root = self.base / "root"  # created by the install, so removed by the uninstall
        self.succeed("--root", root, "--green-if", "eth1")
        prefix = root / PREFIX

        help = subprocess.run(
            [prefix / "bin/twistd", "--help"], capture_output=True, text=True, timeout=120
        )
        self.assertRegex(help.stdout, r"(?m)^\s+p2pwall\s")
        rules = subprocess.run(
            [prefix / "bin/p2pwall-rules", "--help"], capture_output=True, text=True, timeout=120
        )
        self.assertEqual(rules.returncode, 0, rules.stderr)
        self.assertIn("--green-if", rules.stdout)

        unit = (root / UNIT).read_text()
        self.assertNotRegex(unit, r"@[A-Z]+@")
        self.assertEqual(unit_values(unit, "EnvironmentFile"), [str(root / CONFIG)])
        (start,) = unit_values(unit, "ExecStart")
        self.assertEqual(command_words(start, environment())[0], str(prefix / "bin/twistd"))
        if shutil.which("systemd-analyze"):
            verify = subprocess.run(
                ["systemd-analyze", "verify", root / UNIT],
                capture_output=True,
                text=True,
                timeout=60,
            )
            self.assertEqual((verify.returncode, verify.stdout + verify.stderr), (0, ""))

        config = root / CONFIG
        self.assertIn("\nGREEN_IF=eth1\n", config.read_text())
        edited = config.read_text().replace("TIME_LOCK=120", "TIME_LOCK=300")
        config.write_text(edited)
        self.succeed("--root", root)  # the upgrade keeps the admin's settings
        self.assertEqual(config.read_text(), edited)

        out = self.succeed("--root", root, "--uninstall")
        self.assertEqual(out, "p2pwall: removed\n")
        self.assertEqual(list(self.base.iterdir()), [])

    def test_uninstall_keeps_what_was_there_before(self) -> None:
        root = self.base
        (root / "etc/default").mkdir(parents=True)
        (root / "etc/default/other").write_text("keep me\n")
        (root / CONFIG).write_text("GREEN_IF=br0\nQUEUE=3\n")
        (root / "var/lib/p2pwall").mkdir(parents=True)
        (root / "var/lib/p2pwall/peers").write_text("198.18.5.5 1214 * manual 0\n")
        (root / "var/log/p2pwall").mkdir(parents=True)
        (root / "var/log/p2pwall/events.json").write_text("{}\n")
        before = tree(root)

        self.succeed("--root", root)
        self.assertEqual((root / CONFIG).read_text(), "GREEN_IF=br0\nQUEUE=3\n")
        self.assertTrue((root / UNIT).exists())
        out = self.succeed("--root", root, "--uninstall")
        for data in ("var/lib/p2pwall", "var/log/p2pwall"):
            self.assertIn(f"p2pwall: kept {root / data} (--purge removes it)\n", out)
        self.assertEqual(tree(root), before)

        self.succeed("--root", root)
        self.succeed("--root", root, "--uninstall", "--purge")
        for data in ("var/lib/p2pwall", "var/lib/p2pwall/peers", "var/log/p2pwall",
                     "var/log/p2pwall/events.json"):  # fmt: skip
            del before[data]
        self.assertEqual(tree(root), before)

    def test_refuses_a_prefix_that_is_not_an_install(self) -> None:
        (self.base / PREFIX / "bin").mkdir(parents=True)
        result = self.script("--root", self.base)
        self.assertEqual(result.returncode, 1)
        self.assertEqual(
            result.stderr,
            f"p2pwall: {self.base / PREFIX} exists and is not a p2pwall install: "
            "choose another --prefix\n",
        )
        result = self.script("--root", self.base, "--uninstall")
        self.assertEqual(result.returncode, 1)
        self.assertIn("no p2pwall install at", result.stderr)
        self.assertEqual(tree(self.base), {"opt": None, PREFIX: None, f"{PREFIX}/bin": None})

    def test_bad_arguments_are_one_line(self) -> None:
        for args, message in [
            (("--green-if", "eth 1"), "p2pwall: --green-if: not an interface name: 'eth 1'\n"),
            (("--prefix", "opt"), "p2pwall: not an absolute path of plain characters: 'opt'\n"),
            (("--purge",), "p2pwall: --purge goes with --uninstall\n"),
            (("--root",), "p2pwall: --root needs a value\n"),
        ]:
            result = self.script("--root", self.base, *args)
            self.assertEqual((result.returncode, result.stderr), (1, message), args)
        self.assertEqual(tree(self.base), {})

    def test_help_and_unknown_options(self) -> None:
        help = self.script("--help")
        self.assertEqual((help.returncode, help.stderr), (0, ""))
        self.assertIn("install-service.sh --uninstall [--purge] [PATHS]", help.stdout)
        self.assertIn(
            "--purge also removes the daemon's data (/var/lib/p2pwall,\n/var/log", help.stdout
        )
        unknown = self.script("--root", self.base, "--prefx", "/opt/x")
        self.assertEqual((unknown.returncode, unknown.stdout), (2, ""))
        self.assertEqual(unknown.stderr, "p2pwall: unknown option --prefx\n" + help.stdout)
        self.assertEqual(tree(self.base), {})


class BuildPackagesTests(SynchronousTestCase):
    """On the real system (no ``--root``) a package without wheels is compiled with build
    packages installed for it and purged after it, but for its runtime library; the package
    tools are stand-ins, so nothing is installed or removed for real."""

    def setUp(self) -> None:
        if os.geteuid() != 0:
            raise SkipTest("the build packages are installed only as root")
        if shutil.which("gcc") is None:
            raise SkipTest("NetfilterQueue is really compiled: needs gcc (make test installs it)")
        self.base = Path(self.mktemp()).resolve()
        tools = self.base / "tools"
        tools.mkdir(parents=True)
        for name, text in FAKE_TOOLS.items():
            (tools / name).write_text(text)
            (tools / name).chmod(0o755)
        self.state, self.log = self.base / "packages", self.base / "log"
        self.state.write_text("libc6\n")
        self.env = {**os.environ, "PATH": f"{tools}:{os.environ['PATH']}",
                    "FAKE_STATE": str(self.state), "FAKE_LOG": str(self.log)}  # fmt: skip
        self.paths = [
            *("--prefix", str(self.base / "opt/p2pwall")),
            *("--unit-dir", str(self.base / "units")),
            *("--config", str(self.base / "p2pwall.conf")),
        ]

    def script(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(SCRIPT), "--python", PYTHON, *self.paths, *args],
            capture_output=True, text=True, timeout=600, env=self.env,
        )  # fmt: skip

    def test_build_packages_come_and_go_the_runtime_library_stays(self) -> None:
        done = self.script()
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertIn("no wheel for netfilterqueue: building from source", done.stdout)
        version = [PYTHON, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"]
        headers = f"python{subprocess.check_output(version, text=True).strip()}-dev"
        build = sorted(["gcc", headers, "libnetfilter-queue-dev"])
        self.assertEqual(
            self.log.read_text().splitlines(),
            [
                "apt-get install -y -qq --no-install-recommends gcc "
                f"{headers} libnetfilter-queue-dev",
                "apt-mark manual libnetfilter-queue1",
                "apt-get purge -y -qq " + " ".join(sorted(["cpp", *build])),
            ],
        )
        self.assertEqual(self.state.read_text().split(), ["libc6", "libnetfilter-queue1"])
        manifest = (self.base / "opt/p2pwall/install-manifest").read_text().splitlines()
        self.assertIn("apt:libnetfilter-queue1", manifest)

        self.log.write_text("")
        done = self.script("--uninstall")
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertIn("libnetfilter-queue1 now removable (apt-get autoremove)", done.stdout)
        self.assertEqual(self.log.read_text(), "apt-mark auto libnetfilter-queue1\n")
        self.assertEqual(sorted(p.name for p in self.base.iterdir()), ["log", "packages", "tools"])
