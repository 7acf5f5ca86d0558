"""p2pwall-rules: what gets queued and from where, for iptables and nft, and that the kernel
accepts it, applied twice, upgraded and deleted."""

import io
import os
import re
import shutil
import subprocess
import sys
import uuid

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from p2pwall.fragments import FORWARD, INPUT, Rules
from p2pwall.fragments.dns import DnsRules
from p2pwall.kernel import ipsetrules
from p2pwall.registry import REGISTRY
from p2pwall.tools.rules import Options, RuleSet, main, render


def rendered(*argv: str) -> str:
    options = Options()
    options.parseOptions(list(argv))
    return render(options)


# Option sets that change the rules' text, each loaded into the kernel by the tests below.
VARIANTS = (
    ("--udp-packets", "0"),
    ("--no-bypass", "--per-source-limit", "0"),
    *[(f"--{name}",) for entry in REGISTRY for name, _ in entry.rules.flags],
    tuple(f"--{name}" for entry in REGISTRY for name, _ in entry.rules.flags),
    ("--enforce", "kernel"),
    ("--enforce", "kernel", "--lock-established", "--lock-time", "60"),
)


def v4_lines(text: str) -> list[str]:
    """The IPv4 lines (and none of those for both families: the ipset sets' removal)."""
    return [line for line in text.splitlines() if "ip6tables" not in line and "ipset" not in line]


class RuleTextTests(SynchronousTestCase):
    def test_iptables_queues_what_the_daemon_needs(self) -> None:
        text = rendered("-i", "br-green", "-q", "3")
        v4 = v4_lines(text)
        both = [line for line in text.splitlines() if "ipset" in line]
        self.assertEqual(len(text.splitlines()), 2 * len(v4) + len(both), "and for ip6tables")
        joined = "\n".join(v4)
        m = "iptables -t mangle -A"
        for fragment in (
            f"{m} p2pwall-fwd -i br-green -p udp -m connbytes --connbytes 0:3 --connbytes-dir "
            "original --connbytes-mode packets -m conntrack --ctdir ORIGINAL -j p2pwall-lim",
            f"{m} p2pwall-fwd -i br-green -p tcp --syn -j p2pwall-lim",
            f"{m} p2pwall-fwd -i br-green -p tcp ! --syn -m connbytes --connbytes 0:4 "
            "--connbytes-dir original --connbytes-mode packets -m conntrack --ctdir ORIGINAL "
            "-j p2pwall-dl",
            f"{m} p2pwall-dl -m string --algo bm --string X-Kazaa- --icase -j p2pwall-lim",
            f"{m} p2pwall-dl -m string --algo bm --string 'GIVE ' -j p2pwall-lim",
            f"{m} p2pwall-lim -j NFQUEUE --queue-num 3 --queue-bypass",
            "iptables -t raw -A p2pwall-raw -m mark --mark 0x70327077 -j CT --notrack",
            "iptables -t raw -C OUTPUT -j p2pwall-raw 2>/dev/null || "
            "iptables -t raw -I OUTPUT 1 -j p2pwall-raw",
        ):
            self.assertIn(fragment, joined)
        self.assertNotIn("/.hash=", joined, "a path alone teaches the daemon nothing")
        self.assertNotIn("PeerEnabler", joined, "nor does a user agent")

    def test_hooks_are_appended_in_mangle_never_in_filter(self) -> None:
        """An accepted packet leaves the chain it was queued from: from filter it would skip the
        admin's later filter rules; from the end of mangle it skips nothing of theirs."""
        v4 = v4_lines(rendered("-i", "eth1"))
        hooks = [line for line in v4 if " -j p2pwall-fwd" in line or " -j p2pwall-in" in line]
        self.assertEqual(hooks[:2], [
            "iptables -t mangle -C FORWARD -j p2pwall-fwd 2>/dev/null || "
            "iptables -t mangle -A FORWARD -j p2pwall-fwd",
            "iptables -t mangle -C INPUT -j p2pwall-in 2>/dev/null || "
            "iptables -t mangle -A INPUT -j p2pwall-in",
        ])  # fmt: skip
        self.assertEqual([line for line in hooks[2:] if not line.startswith("while ")], [],
                         "the filter table only loses jumps")  # fmt: skip
        self.assertFalse([line for line in v4 if "NFQUEUE" in line and "-t mangle" not in line])
        self.assertFalse([line for line in v4 if " -I " in line and "-t raw" not in line])

    def test_chains_are_created_or_flushed_so_a_second_run_changes_nothing(self) -> None:
        v4 = v4_lines(rendered("-i", "eth1"))
        for chain in ("p2pwall-fwd", "p2pwall-in", "p2pwall-dl", "p2pwall-lim"):
            self.assertIn(f"iptables -t mangle -N {chain} 2>/dev/null || "
                          f"iptables -t mangle -F {chain}", v4)  # fmt: skip
        raw = "iptables -t raw"
        self.assertIn(f"{raw} -N p2pwall-raw 2>/dev/null || {raw} -F p2pwall-raw", v4)
        first_rule = min(index for index, line in enumerate(v4) if " -A p2pwall-" in line)
        self.assertFalse([line for line in v4[first_rule:] if " -N " in line],
                         "every chain exists before a rule jumps to it")  # fmt: skip

    def test_an_upgrade_removes_the_filter_table_hooks_of_older_versions(self) -> None:
        for argv in (["-i", "eth1"], ["-i", "eth1", "--delete"]):
            v4 = v4_lines(rendered(*argv))
            for builtin, chain in (("FORWARD", "p2pwall-fwd"), ("INPUT", "p2pwall-in")):
                self.assertIn(f"while iptables -t filter -D {builtin} -j {chain} 2>/dev/null; "
                              "do :; done", v4)  # fmt: skip
            for chain in ("p2pwall-fwd", "p2pwall-in", "p2pwall-dl"):
                self.assertIn(f"iptables -t filter -X {chain} 2>/dev/null || true", v4)

    def test_delete_removes_every_jump_then_every_chain(self) -> None:
        v4 = v4_lines(rendered("-i", "eth1", "--delete"))
        self.assertEqual(v4[:3], [
            "while iptables -t mangle -D FORWARD -j p2pwall-fwd 2>/dev/null; do :; done",
            "while iptables -t mangle -D INPUT -j p2pwall-in 2>/dev/null; do :; done",
            "while iptables -t raw -D OUTPUT -j p2pwall-raw 2>/dev/null; do :; done",
        ])  # fmt: skip
        flushes = [index for index, line in enumerate(v4) if " -t mangle -F " in line]
        removals = [index for index, line in enumerate(v4) if " -t mangle -X " in line]
        # fwd, in, dl, BitTorrent's bt, lim; and the chains of kernel enforcement by ipset.
        self.assertEqual(len(flushes), 5 + len(ipsetrules.chain_names()))
        self.assertLess(max(flushes), min(removals), "no chain is removed while one jumps to it")

    def test_dns_answers_only_from_outside_in_the_reply_direction(self) -> None:
        chains = RuleSet(("g0", "g1"), fragments=(DnsRules(),)).iptables_chains()
        for chain in ("p2pwall-fwd", "p2pwall-in"):
            rules = chains[chain]
            answers = [index for index, rule in enumerate(rules) if "REPLY" in rule]
            returns = [index for index, rule in enumerate(rules) if rule[-2:] == ["-j", "RETURN"]]
            self.assertLessEqual({"g0", "g1"}, {rules[index][1] for index in returns}, chain)
            self.assertLess(max(returns), min(answers), "green packets return before answers")
            for index in answers:
                self.assertIn("--sport 53 ", " ".join(rules[index]))
                self.assertIn("-m conntrack --ctstate ESTABLISHED --ctdir REPLY -j NFQUEUE",
                              " ".join(rules[index]))  # fmt: skip
        self.assertEqual(len([rule for rule in chains["p2pwall-fwd"] if "REPLY" in rule]), 4)
        self.assertIn(["-i", "lo", "-j", "RETURN"], chains["p2pwall-in"])

    def test_green_flow_starts_only_of_flows_green_opened(self) -> None:
        """A packet in on green in a flow's reply direction (a resolver's "answer" routed back
        into the sender's own query flow) is nobody's flow start."""
        chains = RuleSet(("g0",)).iptables_chains()
        rules = chains["p2pwall-fwd"] + chains["p2pwall-in"]
        from_green = [rule for rule in rules if rule[:2] == ["-i", "g0"]
                      and rule[-1] != "RETURN" and rule[4] != "--syn"]  # fmt: skip
        self.assertEqual(len(from_green), 5, "UDP, early data, marked, both probe replies")
        for rule in from_green:
            self.assertIn("-m conntrack --ctdir ORIGINAL -j", " ".join(rule))

    def test_probe_replies_are_not_dns_answers_and_not_the_gateways_own_services(self) -> None:
        probe = RuleSet(("g0",)).iptables_chains()["p2pwall-in"][0]
        self.assertEqual(probe[:6], ["-i", "g0", "-p", "udp", "!", "--sport"])
        self.assertEqual(probe[6], "53")
        self.assertEqual(probe[7:11], ["-m", "multiport", "--dports", "80,1024:65535"],
                         "DNS 53, DHCP 67, NTP 123 on the gateway are never queued")  # fmt: skip

    def test_answers_pass_while_no_daemon_runs_even_without_bypass(self) -> None:
        """The daemon never drops an answer: queuing them fail-closed would only stop DNS."""
        chains = RuleSet(("g0",), bypass=False).iptables_chains()
        answers = [rule for rule in chains["p2pwall-fwd"] + chains["p2pwall-in"]
                   if "REPLY" in rule]  # fmt: skip
        self.assertEqual(len(answers), 5, "DNS's 3, BitTorrent's 2")
        self.assertTrue(all(rule[-1] == "--queue-bypass" for rule in answers))
        self.assertEqual(chains["p2pwall-lim"][-1], ["-j", "NFQUEUE", "--queue-num", "0"])

    def test_everything_a_green_host_can_have_queued_passes_the_per_source_limit(self) -> None:
        chains = RuleSet(("g0",)).iptables_chains()
        limit = chains["p2pwall-lim"]
        self.assertEqual(limit[0], ["-m", "hashlimit", "--hashlimit-above", "1000/sec",
                                    "--hashlimit-burst", "2000", "--hashlimit-mode", "srcip",
                                    "--hashlimit-name", "p2pwall", "-j", "DROP"])  # fmt: skip
        self.assertEqual(limit[1][:2], ["-j", "NFQUEUE"])
        self.assertIn(["--hashlimit-srcmask", "64"],
                      [rule[8:10] for rule in RuleSet(("g0",)).iptables_chains(ipv6=True)
                       ["p2pwall-lim"]])  # fmt: skip
        for chain in ("p2pwall-fwd", "p2pwall-in", "p2pwall-dl", "p2pwall-bt"):
            for rule in chains[chain]:
                if rule[:2] == ["-i", "g0"] or chain in ("p2pwall-dl", "p2pwall-bt"):
                    target = rule[rule.index("-j") + 1]
                    self.assertIn(target, ("p2pwall-lim", "p2pwall-dl", "p2pwall-bt", "RETURN",
                                           "CONNMARK"), rule)  # fmt: skip
        self.assertEqual(chains["p2pwall-bt"][-1], ["-j", "p2pwall-lim"], "marked, then limited")
        unlimited = RuleSet(("g0",), per_source_limit=0).iptables_chains()["p2pwall-lim"]
        self.assertEqual(unlimited, [["-j", "NFQUEUE", "--queue-num", "0", "--queue-bypass"]])
        text = rendered("-i", "eth1", "--per-source-limit", "250/s")
        self.assertIn("--hashlimit-above 250/sec --hashlimit-burst 500", text)
        self.assertNotIn("hashlimit", rendered("-i", "eth1", "--per-source-limit", "0"))

    def test_several_green_interfaces(self) -> None:
        text = rendered("-i", "lan0", "--green-if", "lan1", "-i", "lan0")
        for green in ("lan0", "lan1"):
            self.assertEqual(text.count(f"-A p2pwall-fwd -i {green} -p tcp --syn"), 2)
            self.assertEqual(text.count(f"-A p2pwall-fwd -o {green} -p udp --sport 53"), 2)
        nft = rendered("-i", "lan0", "-i", "lan1", "-F", "nft")
        self.assertIn('iifname { "lan0", "lan1" } tcp flags & (syn | ack) == syn jump limited',
                      nft)  # fmt: skip
        self.assertIn('iifname != { "lan0", "lan1" } oifname { "lan0", "lan1" } udp sport 53 ',
                      nft)  # fmt: skip
        self.assertIn('iifname != { "lan0", "lan1", "lo" } udp sport 53', nft)

    def test_switches(self) -> None:
        every = rendered("-i", "eth1", "--udp-packets", "0")
        self.assertIn("-A p2pwall-fwd -i eth1 -p udp -m conntrack --ctdir ORIGINAL -j p2pwall-lim",
                      every)  # fmt: skip
        text = rendered("-i", "eth1", "--no-bypass", "--no-dns", "--no-http", "--no-probes",
                        "--no-bittorrent")  # fmt: skip
        self.assertNotIn("--queue-bypass", text)
        self.assertNotIn("--sport 53", text)
        self.assertNotIn("RETURN", text)
        self.assertNotIn("string", text)
        self.assertNotIn("-j p2pwall-dl", text)
        self.assertNotIn("-j p2pwall-bt", text)
        self.assertNotIn("CONNMARK", text)
        self.assertNotIn("-A p2pwall-in", text)

    def test_nft_script(self) -> None:
        text = rendered("-i", "eth1", "-F", "nft", "-q", "2")
        self.assertTrue(text.startswith("nft -f - <<'EOF'\n"))
        for fragment in (
            'iifname "eth1" meta l4proto udp ct original packets <= 3 ct direction original '
            "jump limited",
            "tcp flags & (syn | ack) == syn jump limited",
            'iifname != "eth1" oifname "eth1" udp sport 53 ct state established '
            "ct direction reply queue num 2 bypass",
            'iifname "eth1" udp sport != 53 udp dport { 80, 1024-65535 } ct original packets <= 3'
            " ct direction original jump limited",
            "ct original packets < 5 ct direction original @ih,0,40 0x4749564520 jump limited",
            "type filter hook forward priority mangle;",
            "type filter hook input priority mangle;",
            "type filter hook output priority raw;",
            "meta mark 0x70327077 notrack",
            "@ih,0,48 0x474554202f2e jump limited",
            "update @sources4 { ip saddr limit rate over 1000/second burst 2000 packets } "
            "counter drop",
            "update @sources6 { ip6 saddr & ffff:ffff:ffff:ffff:: limit rate over",
        ):
            self.assertIn(fragment, text)
        self.assertNotIn("priority filter", text)
        limited = text[text.index("chain limited {") : text.index("chain forward {")]
        self.assertTrue(limited.rstrip().rstrip("}").rstrip().endswith("queue num 2 bypass"))
        self.assertIn("delete table inet p2pwall", rendered("-i", "eth1", "-F", "nft", "--delete"))
        self.assertNotIn("update @", rendered("-i", "eth1", "-F", "nft", "--per-source-limit", "0"))

    def test_usage_errors(self) -> None:
        for argv, message in (
            ([], "--green-if is required"),
            (["-i", "eth0", "-F", "pf"], "--format must be"),
            (["-i", "eth0", "-q", "70000"], "--queue must be between"),
            (["-i", "eth0", "--udp-packets", "-1"], "--udp-packets must be between"),
            (["-i", "eth0; rm -rf /"], "--green-if: not an interface name"),
            (["-i", "eth0", "-i", "$(reboot)"], "--green-if: not an interface name"),
            (["-i", "eth0", "--per-source-limit", "fast"], "--per-source-limit: want N or N/s"),
            (["-i", "eth0", "--per-source-limit", "100001"], "--per-source-limit: want N or"),
        ):
            stderr = io.StringIO()
            self.patch(sys, "stderr", stderr)
            self.assertEqual(main(argv), 2)
            self.assertIn(f"p2pwall-rules: {message}", stderr.getvalue())


class KernelEnforcementRuleTests(SynchronousTestCase):
    """``--enforce kernel``: SYNs stay in the kernel, which drops by p2pwall's sets."""

    def test_syns_are_not_queued(self) -> None:
        for argv in (("-i", "g0"), ("-i", "g0", "-F", "nft")):
            queued = rendered(*argv)
            kernel = rendered(*argv, "--enforce", "kernel")
            self.assertTrue("--syn -j p2pwall-lim" in queued or "== syn jump limited" in queued)
            self.assertNotIn("--syn -j p2pwall-lim", kernel)
            self.assertNotIn("== syn jump limited", kernel)
            # Everything else is queued as before: the daemon still learns.
            self.assertEqual(queued.count("NFQUEUE") + queued.count("queue num"),
                             kernel.count("NFQUEUE") + kernel.count("queue num"))  # fmt: skip

    def test_iptables_queue_rules_come_with_the_nft_table_of_the_sets(self) -> None:
        text = rendered("-i", "g0", "--enforce", "kernel", "--lock-time", "45")
        iptables, script = text.split("nft -f - <<'EOF'\n")
        self.assertIn("iptables -t mangle", iptables)
        self.assertIn("set locked_ip4 { type ipv4_addr; size 65536; flags dynamic,timeout; "
                      "timeout 45s; }", script)  # fmt: skip
        self.assertIn("type filter hook forward priority mangle - 10;", script)
        self.assertNotIn("queue", script)
        self.assertTrue(script.endswith("}\nEOF\n"))

    def test_nft_format_holds_queue_rules_and_sets_in_one_table(self) -> None:
        script = rendered("-i", "g0", "-F", "nft", "--enforce", "kernel")
        self.assertEqual(script.count("table inet p2pwall {"), 1)
        self.assertIn("map peer_port_client6", script)
        self.assertIn("queue num 0", script)

    def test_delete_removes_the_sets_table_too(self) -> None:
        self.assertIn("nft delete table inet p2pwall", rendered("-i", "g0", "--delete"))

    def test_sets_by_ipset_come_with_iptables_chains_instead_of_the_nft_table(self) -> None:
        lines = rendered("-i", "g0", "--enforce", "kernel", "--sets", "ipset").splitlines()
        self.assertNotIn("nft -f - <<'EOF'", lines)
        self.assertIn("nft delete table inet p2pwall 2>/dev/null || true", lines, "nft's go")
        spec = "p2pwall-locked6 hash:ip family inet6 timeout 120 maxelem 65536"
        create = f"ipset create -exist {spec} 2>/dev/null || {{ ipset destroy p2pwall-locked6 " \
                 f"2>/dev/null || true; ipset create {spec}; }}"  # fmt: skip
        self.assertIn(create, lines)
        hook = "iptables -t mangle -C FORWARD -j p2pwall-kern 2>/dev/null || iptables -t mangle " \
               "-I FORWARD 1 -j p2pwall-kern"  # fmt: skip
        self.assertIn(hook, lines)
        # Sets are made once our chains hold nothing, and before a rule names them.
        flushed = lines.index("ip6tables -t mangle -N p2pwall-knew 2>/dev/null || "
                              "ip6tables -t mangle -F p2pwall-knew")  # fmt: skip
        first_use = min(i for i, line in enumerate(lines) if "--match-set p2pwall-" in line
                        and line.startswith("ip6tables"))  # fmt: skip
        self.assertLess(flushed, lines.index(create))
        self.assertLess(lines.index(create), first_use)
        self.assertFalse([line for line in lines if 'ipset destroy "$set"' in line])

    def test_without_sets_by_ipset_their_chains_and_sets_go(self) -> None:
        ipset = ("--enforce", "kernel", "--sets", "ipset")
        for argv in (("-i", "g0"), ("-i", "g0", "--enforce", "kernel"), ("-i", "g0", "--delete"),
                     ("-i", "g0", *ipset, "--delete")):  # fmt: skip
            with self.subTest(argv=argv):
                lines = rendered(*argv).splitlines()
                for command in ("iptables", "ip6tables"):
                    self.assertIn(f"while {command} -t mangle -D FORWARD -j p2pwall-kern "
                                  "2>/dev/null; do :; done", lines)  # fmt: skip
                    self.assertIn(f"{command} -t mangle -X p2pwall-kflows-up 2>/dev/null || true",
                                  lines)  # fmt: skip
                (destroy,) = [line for line in lines if "ipset destroy" in line]
                self.assertIn(" p2pwall-locked4 ", destroy)
                self.assertIn(" p2pwall-p-flows-up6;", destroy)
                last_chain_removal = max(
                    i for i, line in enumerate(lines) if " -X p2pwall-k" in line
                )
                self.assertLess(last_chain_removal, lines.index(destroy))

    def test_sets_option_is_checked(self) -> None:
        self.assertEqual(rendered("-i", "g0", "--enforce", "kernel", "--sets", "nft"),
                         rendered("-i", "g0", "--enforce", "kernel"))  # fmt: skip
        for argv in (("--sets", "ipset"), ("--sets", "nft"),
                     ("--enforce", "kernel", "--sets", "ipset", "-F", "nft"),
                     ("--enforce", "kernel", "--sets", "pf")):  # fmt: skip
            with self.subTest(argv=argv), self.assertRaises(usage.UsageError):
                rendered("-i", "g0", *argv)

    def test_lock_options_need_kernel_enforcement(self) -> None:
        for argv in (
            ("--lock-established",),
            ("--enforce", "sets"),
            ("--enforce", "kernel", "--lock-time", "0"),
        ):
            with self.subTest(argv=argv), self.assertRaises(usage.UsageError):
                rendered("-i", "g0", *argv)


class Probe:
    """A fragment with one rule in every place, each naming where it went."""

    name = "probe"
    flags = ()
    chains = ("p2pwall-probe",)

    def __init__(self, tag: str = "a", chains: tuple[str, ...] = chains) -> None:
        self.tag = tag
        self.filled = chains

    def iptables(self, context):
        def rule(where: str) -> list[str]:
            return ["-m", "comment", "--comment", f"{self.tag}-{where}", *context.limit]

        return Rules(green={FORWARD: [rule("green-fwd")], INPUT: [rule("green-in")]},
                     early=[rule("early")],
                     outside={FORWARD: [rule("out-fwd")], INPUT: [rule("out-in")]},
                     chains={name: [rule("own")] for name in self.filled})  # fmt: skip

    def nft(self, context):
        tag = self.tag
        return Rules(green={FORWARD: [f"{tag}-green-fwd"], INPUT: [f"{tag}-green-in"]},
                     early=[f"{tag}-early"],
                     outside={FORWARD: [f"{tag}-out-fwd"], INPUT: [f"{tag}-out-in"]})  # fmt: skip


def comments(rules: list[list[str]]) -> list[str]:
    """Each rule as its interface match and the probe's tag, or its target for the core's."""
    return [" ".join([*rule[:2], rule[rule.index("--comment") + 1] if "--comment" in rule
                      else rule[-1]]) for rule in rules]  # fmt: skip


class CompositionTests(SynchronousTestCase):
    """How the core places what fragments give it, with probe fragments."""

    def test_iptables_order_interfaces_and_guards(self) -> None:
        chains = RuleSet(("g0", "g1"), fragments=(Probe("a"), Probe("b"))).iptables_chains()
        self.assertEqual(comments(chains["p2pwall-fwd"]), [
            "-i g0 p2pwall-lim", "-i g0 p2pwall-lim", "-i g0 p2pwall-dl",
            "-i g0 a-green-fwd", "-i g0 b-green-fwd",
            "-i g1 p2pwall-lim", "-i g1 p2pwall-lim", "-i g1 p2pwall-dl",
            "-i g1 a-green-fwd", "-i g1 b-green-fwd",
            "-i g0 RETURN", "-i g1 RETURN",
            "-o g0 a-out-fwd", "-o g0 b-out-fwd", "-o g1 a-out-fwd", "-o g1 b-out-fwd",
        ])  # fmt: skip
        self.assertEqual(comments(chains["p2pwall-in"]), [
            "-i g0 a-green-in", "-i g0 b-green-in", "-i g1 a-green-in", "-i g1 b-green-in",
            "-i g0 RETURN", "-i g1 RETURN", "-i lo RETURN", "-m comment a-out-in",
            "-m comment b-out-in",
        ])  # fmt: skip
        self.assertEqual(comments(chains["p2pwall-dl"]), ["-m comment a-early",
                                                          "-m comment b-early"])  # fmt: skip

    def test_no_guard_and_no_early_jump_without_rules_for_them(self) -> None:
        chains = RuleSet(("g0",), fragments=()).iptables_chains()
        self.assertEqual(comments(chains["p2pwall-fwd"]), ["-i g0 p2pwall-lim"] * 2)
        self.assertEqual((chains["p2pwall-in"], chains["p2pwall-dl"]), ([], []))
        self.assertNotIn("jump", RuleSet(("g0",), fragments=()).nft().split("policy accept;")[2]
                         .split("}")[0])  # fmt: skip

    def test_fragment_chains_are_created_filled_and_deleted(self) -> None:
        rules = RuleSet(("g0",), fragments=(Probe(),))
        lines = rules.iptables()
        create = "iptables -t mangle -N p2pwall-probe 2>/dev/null || iptables -t mangle -F " \
                 "p2pwall-probe"  # fmt: skip
        first_rule = min(index for index, line in enumerate(lines) if " -A " in line)
        self.assertLess(lines.index(create), first_rule)
        self.assertIn("iptables -t mangle -A p2pwall-probe -m comment --comment a-own "
                      "-j p2pwall-lim", lines)  # fmt: skip
        delete = rules.iptables_delete()
        self.assertIn("iptables -t mangle -X p2pwall-probe 2>/dev/null || true", delete)

    def test_every_registered_chain_is_kept_and_deleted_whatever_is_turned_off(self) -> None:
        """Re-applied or deleted with other options, no chain of an earlier run is left."""
        nothing = RuleSet(("g0",), fragments=())
        registered = [chain for entry in REGISTRY for chain in entry.rules.chains]
        self.assertIn("p2pwall-bt", registered)
        for chain in registered:
            self.assertEqual(nothing.iptables_chains()[chain], [])
            self.assertIn(f"iptables -t mangle -X {chain} 2>/dev/null || true",
                          nothing.iptables_delete())  # fmt: skip

    def test_a_chain_a_fragment_does_not_declare_is_refused(self) -> None:
        stray = RuleSet(("g0",), fragments=(Probe(chains=("p2pwall-stray",)),))
        self.assertRaises(ValueError, stray.iptables_chains)

    def test_nft_order_and_interfaces(self) -> None:
        text = RuleSet(("g0", "g1"), queue=2, fragments=(Probe("a"), Probe("b"))).nft()
        forward = text[text.index("chain forward {") : text.index("chain input {")]
        greens = '{ "g0", "g1" }'
        early = f"iifname {greens} tcp flags & (syn | ack) == ack ct original packets < 5 " \
                "ct direction original"  # fmt: skip
        self.assertEqual([line.strip() for line in forward.splitlines()[4:-2]], [
            f"{early} a-early", f"{early} b-early",
            f"iifname {greens} a-green-fwd", f"iifname {greens} b-green-fwd",
            f"iifname != {greens} oifname {greens} a-out-fwd",
            f"iifname != {greens} oifname {greens} b-out-fwd",
        ])  # fmt: skip
        inbound = text[text.index("chain input {") : text.index("chain spoofed {")]
        self.assertEqual([line.strip() for line in inbound.splitlines()[2:-2]], [
            f"iifname {greens} a-green-in", f"iifname {greens} b-green-in",
            'iifname != { "g0", "g1", "lo" } a-out-in', 'iifname != { "g0", "g1", "lo" } b-out-in',
        ])  # fmt: skip


class FlagTests(SynchronousTestCase):
    """Each registered fragment's flags are p2pwall-rules flags, and each removes only rules
    that its fragment brings (with the guards and jumps that only they needed)."""

    def test_every_fragment_flag_is_an_option(self) -> None:
        flags = {row[0] for row in Options.optFlags}
        for entry in REGISTRY:
            self.assertLessEqual({name for name, _ in entry.rules.flags}, flags, entry.name)

    def test_each_flag_removes_exactly_its_fragments_rules(self) -> None:
        core = {*rendered("-i", "g0", "-i", "g1", *[f"--{name}" for entry in REGISTRY
                                                     for name, _ in entry.rules.flags])
                .splitlines()}  # fmt: skip
        for output in ("iptables", "nft"):
            every = rendered("-i", "g0", "-i", "g1", "-F", output).splitlines()
            for entry in REGISTRY:
                alone = RuleSet(("g0", "g1"), fragments=(entry.rules(),))
                text = alone.nft() if output == "nft" else "\n".join(
                    alone.iptables() + alone.iptables("ip6tables"))  # fmt: skip
                own = set(text.splitlines()) - core
                for name, _ in entry.rules.flags:
                    with self.subTest(output=output, flag=name):
                        less = rendered("-i", "g0", "-i", "g1", "-F", output, f"--{name}")
                        removed = [line for line in every if line not in less.splitlines()]
                        self.assertTrue(removed, "the flag removes something")
                        self.assertLessEqual(set(removed), own)
                        self.assertEqual([line for line in less.splitlines() if line in every],
                                         less.splitlines(), "and adds nothing")  # fmt: skip


class KernelAcceptsRulesTests(SynchronousTestCase):
    """Run the printed rules with ``sh -e`` in a scratch network namespace (root only)."""

    def setUp(self) -> None:
        if os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("iptables"):
            raise self.skipTest("needs root, ip and iptables to load rules in a namespace")
        self.ns = f"p2prt{uuid.uuid4().hex[:8]}"
        subprocess.run(["ip", "netns", "add", self.ns], check=True)
        self.addCleanup(subprocess.run, ["ip", "netns", "del", self.ns], check=False)

    def run_in(self, argv: list[str], stdin: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(["ip", "netns", "exec", self.ns, *argv], input=stdin, text=True,
                              capture_output=True)  # fmt: skip

    def sh(self, script: str) -> None:
        result = self.run_in(["sh", "-e"], script)
        self.assertEqual(result.returncode, 0, result.stderr)

    def saved(self) -> str:
        """Both families' rules without the packet counters."""
        return "".join(
            line.split(" [")[0] + "\n"
            for command in ("iptables-save", "ip6tables-save")
            for line in self.run_in([command]).stdout.splitlines()
            if not line.startswith("#")
        )

    def test_apply_twice_changes_nothing_and_delete_removes_everything(self) -> None:
        self.sh(rendered("-i", "lo", "-i", "eth9", "-q", "5"))
        once = self.saved()
        self.assertIn("-A FORWARD -j p2pwall-fwd", once)
        self.assertIn("--hashlimit-srcmask 64", once)
        rules = RuleSet(("lo", "eth9"), 5)
        for command, chains in (("iptables", rules.iptables_chains()),
                                ("ip6tables", rules.iptables_chains(ipv6=True))):  # fmt: skip
            for chain in ("p2pwall-dl", "p2pwall-bt"):
                listing = self.run_in([command, "-t", "mangle", "-S", chain]).stdout
                self.assertEqual(listing.count(f"-A {chain} "), len(chains[chain]), chain)
        handshake = self.run_in(["ip6tables", "-t", "mangle", "-S", "p2pwall-dl"]).stdout
        self.assertIn("--from 60 --to 120", handshake)
        self.assertIn("CONNMARK --set-xmark 0x1000000/0x1000000", once)
        self.sh(rendered("-i", "lo", "-i", "eth9", "-q", "5"))
        self.assertEqual(self.saved(), once)
        self.sh(rendered("-i", "lo", "--delete"))
        self.assertNotIn("p2pwall", self.saved())

    def test_a_second_run_with_other_options_replaces_the_rules(self) -> None:
        self.sh(rendered("-i", "lo"))
        self.sh(rendered("-i", "eth9", "--no-bypass"))
        listing = self.run_in(["iptables", "-t", "mangle", "-S"]).stdout
        self.assertNotIn("-i lo -p tcp", listing)
        self.assertIn("-i eth9 -p tcp", listing)
        self.assertEqual(listing.count("-A FORWARD -j p2pwall-fwd"), 1)

    def test_upgrade_removes_the_filter_table_hooks_of_older_versions(self) -> None:
        old = ["iptables -N p2pwall-fwd", "iptables -N p2pwall-in", "iptables -N p2pwall-dl",
               "iptables -A p2pwall-fwd -p tcp -j p2pwall-dl",
               "iptables -A p2pwall-fwd -p tcp --syn -j NFQUEUE --queue-bypass",
               "iptables -I FORWARD 1 -j p2pwall-fwd", "iptables -I FORWARD 1 -j p2pwall-fwd",
               "iptables -I INPUT 1 -j p2pwall-in"]  # fmt: skip
        for delete in (False, True):
            self.sh("\n".join(old) + "\n")
            self.sh(rendered("-i", "lo", *(["--delete"] if delete else [])))
            filter_rules = self.run_in(["iptables", "-t", "filter", "-S"]).stdout
            self.assertNotIn("p2pwall", filter_rules)
            self.sh(rendered("-i", "lo", "--delete"))

    def test_every_switch_gives_rules_the_kernel_takes_and_delete_removes(self) -> None:
        for argv in VARIANTS:
            with self.subTest(argv=argv):
                self.sh(rendered("-i", "lo", "-i", "eth9", *argv))
                self.sh(rendered("-i", "lo", "-i", "eth9", *argv, "--delete"))
                self.assertNotIn("p2pwall", self.saved())
                self.assertNotIn("p2pwall", self.run_in(["nft", "list", "tables"]).stdout)

    def ipsets(self) -> str:
        return self.run_in(["ipset", "save"]).stdout

    def test_sets_by_ipset_apply_twice_the_same_change_and_go(self) -> None:
        if not shutil.which("ipset"):
            raise self.skipTest("needs ipset")
        ipset = ("-i", "lo", "-i", "eth9", "--enforce", "kernel", "--sets", "ipset")
        for argv in (ipset, (*ipset, "--lock-established")):
            with self.subTest(argv=argv):
                self.sh(rendered(*argv))
                once = (self.saved(), self.ipsets())
                self.assertIn("-A FORWARD -j p2pwall-kern\n-A FORWARD -j p2pwall-fwd", once[0])
                self.assertIn("create p2pwall-ppc-lock6 hash:ip,port,ip family inet6", once[1])
                self.sh(rendered(*argv))
                self.assertEqual((self.saved(), self.ipsets()), once)
        # Another lock time: the lock sets are made anew with it.
        self.sh(rendered(*ipset, "--lock-time", "60"))
        self.assertIn("create p2pwall-locked4 hash:ip family inet hashsize 1024 maxelem 65536 "
                      "timeout 60", self.ipsets())  # fmt: skip
        # Sets by nft instead: nothing of ipset's is left.
        self.sh(rendered("-i", "lo", "--enforce", "kernel"))
        self.assertNotIn("p2pwall-k", self.saved())
        self.assertEqual(self.ipsets(), "")
        self.sh(rendered(*ipset))
        self.sh(rendered(*ipset, "--delete"))
        self.assertNotIn("p2pwall", self.saved())
        self.assertEqual(self.ipsets(), "")

    def test_nft_script_is_valid_apart_from_queue_support(self) -> None:
        if not shutil.which("nft"):
            raise self.skipTest("needs nft")
        queue = True
        for argv in [(), *VARIANTS]:
            with self.subTest(argv=argv):
                script = rendered("-i", "lo", "-i", "eth9", "-q", "5", "-F", "nft", *argv)
                script = script.removeprefix("nft -f - <<'EOF'\n").removesuffix("EOF\n")
                if self.run_in(["nft", "-c", "-f", "-"], script).returncode != 0:
                    queue = False
                    script = re.sub(r"queue num 5( bypass)?", "counter", script)
                result = self.run_in(["nft", "-c", "-f", "-"], script)
                self.assertEqual(result.returncode, 0, result.stderr)
        if not queue:
            raise self.skipTest("this kernel has no nft queue support (CONFIG_NFT_QUEUE); "
                                "the rest of the nft scripts was validated")  # fmt: skip
