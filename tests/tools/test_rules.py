"""p2pwall-rules: what gets queued, for iptables and nft, and that the kernel accepts it."""

import io
import os
import shutil
import subprocess
import sys
import uuid

from twisted.trial.unittest import SynchronousTestCase

from p2pwall.tools.rules import Options, RuleSet, main, render


def rendered(*argv: str) -> str:
    options = Options()
    options.parseOptions(list(argv))
    return render(options)


class RuleTextTests(SynchronousTestCase):
    def test_iptables_queues_what_the_daemon_needs(self) -> None:
        text = rendered("-i", "br-green", "-q", "3")
        v4 = [line for line in text.splitlines() if line.startswith("iptables ")]
        self.assertEqual(
            len([line for line in text.splitlines() if line.startswith("ip6tables")]), len(v4)
        )
        joined = "\n".join(v4)
        for fragment in (
            "-A p2pwall-fwd -i br-green -p udp -m connbytes --connbytes 0:3 --connbytes-dir "
            "original --connbytes-mode packets -j NFQUEUE --queue-num 3 --queue-bypass",
            "-A p2pwall-fwd -i br-green -p tcp --syn -j NFQUEUE",
            "-A p2pwall-fwd -i br-green -p tcp ! --syn -m connbytes --connbytes 0:4 "
            "--connbytes-dir original --connbytes-mode packets -j p2pwall-dl",
            "-A p2pwall-dl -m string --algo bm --string X-Kazaa- -j NFQUEUE --queue-num 3",
            "-A p2pwall-dl -m string --algo bm --string 'GET /.hash=' -j NFQUEUE",
            "-A p2pwall-fwd -o br-green -p udp --sport 53 -m conntrack --ctstate ESTABLISHED -j",
            "--string PeerEnabler/",
            "-t raw -A p2pwall-raw -m mark --mark 0x70327077 -j CT --notrack",
            "-t raw -I OUTPUT 1 -j p2pwall-raw",
            "-A p2pwall-in -i br-green -p udp -m connbytes --connbytes 0:3",
            "-I FORWARD 1 -j p2pwall-fwd",
        ):
            self.assertIn(fragment, joined)

    def test_switches(self) -> None:
        every = rendered("-i", "eth1", "--udp-packets", "0")
        self.assertIn(
            "-A p2pwall-fwd -i eth1 -p udp -j NFQUEUE --queue-num 0 --queue-bypass", every
        )
        text = rendered("-i", "eth1", "--no-bypass", "--no-dns", "--no-http", "--no-probes")
        self.assertNotIn("--queue-bypass", text)
        self.assertNotIn("--sport 53", text)
        self.assertNotIn("string", text)
        self.assertNotIn("-j p2pwall-dl", text)
        self.assertNotIn("-A p2pwall-in", text)

    def test_nft_script(self) -> None:
        text = rendered("-i", "eth1", "-F", "nft", "-q", "2")
        self.assertTrue(text.startswith("nft -f - <<'EOF'\n"))
        self.assertIn(
            'iifname "eth1" meta l4proto udp ct original packets <= 3 queue num 2 bypass', text
        )
        self.assertIn("tcp flags & (syn | ack) == syn queue num 2 bypass", text)
        self.assertIn('oifname "eth1" udp sport 53 ct state established queue num 2 bypass', text)
        self.assertIn("type filter hook output priority raw;", text)
        self.assertIn("meta mark 0x70327077 notrack", text)
        self.assertIn("@ih,0,48 0x474554202f2e queue", text)
        self.assertIn("delete table inet p2pwall", rendered("-i", "eth1", "-F", "nft", "--delete"))

    def test_usage_errors(self) -> None:
        for argv, message in (
            ([], "--green-if is required"),
            (["-i", "eth0", "-F", "pf"], "--format must be"),
            (["-i", "eth0", "-q", "70000"], "--queue must be between"),
            (["-i", "eth0", "--udp-packets", "-1"], "--udp-packets must be between"),
            (["-i", "eth0; rm -rf /"], "--green-if: not an interface name"),
        ):
            stderr = io.StringIO()
            self.patch(sys, "stderr", stderr)
            self.assertEqual(main(argv), 2)
            self.assertIn(f"p2pwall-rules: {message}", stderr.getvalue())


class KernelAcceptsRulesTests(SynchronousTestCase):
    """Load the rules into a scratch network namespace (root only)."""

    def setUp(self) -> None:
        if os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("iptables"):
            raise self.skipTest("needs root, ip and iptables to load rules in a namespace")
        self.ns = f"p2pwr-{uuid.uuid4().hex[:6]}"
        subprocess.run(["ip", "netns", "add", self.ns], check=True)
        self.addCleanup(subprocess.run, ["ip", "netns", "del", self.ns], check=False)

    def run_in(self, argv: list[str], stdin: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(["ip", "netns", "exec", self.ns, *argv], input=stdin, text=True,
                              capture_output=True)  # fmt: skip

    def test_iptables_rules_load_and_delete(self) -> None:
        rules = RuleSet("lo", 5)
        for argv in rules.iptables() + rules.iptables("ip6tables"):
            result = self.run_in(argv)
            self.assertEqual(result.returncode, 0, (argv, result.stderr))
        listing = self.run_in(["iptables", "-S", "p2pwall-fwd"]).stdout
        self.assertIn("--queue-num 5", listing)
        self.assertIn("-j p2pwall-dl", listing)
        self.assertEqual(self.run_in(["iptables", "-S", "p2pwall-dl"]).stdout.count("NFQUEUE"), 4)
        for argv in RuleSet.iptables_delete() + RuleSet.iptables_delete("ip6tables"):
            self.assertEqual(self.run_in(argv).returncode, 0, argv)
        self.assertNotIn("p2pwall", self.run_in(["iptables", "-S"]).stdout)

    def test_nft_script_is_valid_apart_from_queue_support(self) -> None:
        if not shutil.which("nft"):
            raise self.skipTest("needs nft")
        script = RuleSet("lo", 5).nft()
        if self.run_in(["nft", "-c", "-f", "-"], script).returncode != 0:
            without_queue = script.replace("queue num 5 bypass", "counter")
            result = self.run_in(["nft", "-c", "-f", "-"], without_queue)
            self.assertEqual(result.returncode, 0, result.stderr)
            raise self.skipTest("this kernel has no nft queue support (CONFIG_NFT_QUEUE); "
                                "the rest of the nft script was validated")  # fmt: skip
