"""scripts/install-service.sh end to end in a throw-away root: a real virtualenv built from this
checkout, the rendered unit verified, the upgrade keeping the admin's settings, and the
uninstall leaving exactly what was there before. Nothing outside the temporary root is touched
(``--root`` never calls systemctl)."""

from __future__ import annotations

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
        self.assertNotIn("@", unit.replace("$MAINPID", ""))
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
        before = tree(root)

        self.succeed("--root", root)
        self.assertEqual((root / CONFIG).read_text(), "GREEN_IF=br0\nQUEUE=3\n")
        self.assertTrue((root / UNIT).exists())
        out = self.succeed("--root", root, "--uninstall")
        self.assertIn("kept the learned peers", out)
        self.assertEqual(tree(root), before)

        self.succeed("--root", root)
        self.succeed("--root", root, "--uninstall", "--purge")
        del before["var/lib/p2pwall"], before["var/lib/p2pwall/peers"]
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
        self.assertIn("--purge also removes the learned peers", help.stdout)
        unknown = self.script("--root", self.base, "--prefx", "/opt/x")
        self.assertEqual((unknown.returncode, unknown.stdout), (2, ""))
        self.assertEqual(unknown.stderr, "p2pwall: unknown option --prefx\n" + help.stdout)
        self.assertEqual(tree(self.base), {})
