"""The ipset sets and iptables chains of kernel enforcement by ipset, as p2pwall-rules prints
them (the kernel takes them: tests/tools/test_rules.py; they block: tests/e2e)."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from p2pwall.kernel import ipsetrules
from p2pwall.kernel.elements import ACTIONS, SHAPES


def chains(lock_established: bool = False, family: int = 4) -> dict[str, list[str]]:
    found = ipsetrules.chains(("g0", "g1"), family, 7, lock_established)
    return {name: [" ".join(rule) for rule in rules] for name, rules in found.items()}


class IpsetRulesTests(SynchronousTestCase):
    def test_names_fit_ipset_and_iptables(self) -> None:
        for family in (4, 6):
            self.assertTrue(all(len(name) <= 31 for name in ipsetrules.set_names(family)))
        self.assertTrue(all(len(name) <= 28 for name in ipsetrules.chain_names()))
        self.assertEqual(len(set(ipsetrules.set_names(4))), 3 + len(SHAPES) * (1 + len(ACTIONS)))

    def test_sets_of_each_shape_and_the_lock_sets(self) -> None:
        sets = {name: (kind, options) for name, kind, options in ipsetrules.sets(6, 90)}
        lock = ["family", "inet6", "timeout", "90", "maxelem", "65536"]
        self.assertEqual(sets["p2pwall-locked6"], ("hash:ip", lock))
        self.assertEqual(sets["p2pwall-locked_flows6"][0], "hash:ip")
        self.assertEqual(sets["p2pwall-allowed6"], ("hash:net", ["family", "inet6"]))
        self.assertEqual(sets["p2pwall-ppc-flows-up6"][0], "hash:ip,port,ip")
        self.assertEqual(sets["p2pwall-pp-block6"][0], "hash:ip,port")
        self.assertEqual(sets["p2pwall-pc-lock6"][0], "hash:ip,port,ip")
        self.assertEqual(sets["p2pwall-p-lock-up6"][0], "hash:ip")
        self.assertEqual(sets["p2pwall-ppc6"], sets["p2pwall-ppc-lock6"])
        self.assertNotIn("timeout", sets["p2pwall-p-lock-up6"][1], "blocks last until removed")

    def test_allowed_networks_leave_before_anything_and_green_enters_by_goto(self) -> None:
        kernel = chains()[ipsetrules.CHAIN_KERNEL]
        self.assertEqual(kernel, [
            "-m set --match-set p2pwall-allowed4 src -j RETURN",
            "-m set --match-set p2pwall-allowed4 dst -j RETURN",
            "-i g0 -p tcp -g p2pwall-kgreen", "-i g0 -p udp -g p2pwall-kgreen",
            "-i g1 -p tcp -g p2pwall-kgreen", "-i g1 -p udp -g p2pwall-kgreen",
            "-o g0 -p tcp -g p2pwall-kto", "-o g0 -p udp -g p2pwall-kto",
            "-o g1 -p tcp -g p2pwall-kto", "-o g1 -p udp -g p2pwall-kto",
        ])  # fmt: skip

    def test_new_flows_meet_every_shape_in_nfts_order_then_the_locks(self) -> None:
        rules = chains(family=6)[ipsetrules.CHAIN_NEW]
        # A flow to no learned peer skips the actions' sets: 4 look-ups, not 24.
        self.assertEqual(rules[0], " ".join([
            "-m set ! --match-set p2pwall-ppc6 dst,dst,src",
            "-m set ! --match-set p2pwall-pp6 dst,dst",
            "-m set ! --match-set p2pwall-pc6 dst,dst,src",
            "-m set ! --match-set p2pwall-p6 dst -g p2pwall-klocked",
        ]))  # fmt: skip
        self.assertEqual(rules[-1], "-g p2pwall-klocked")
        shapes = [rule.split()[3] for rule in rules[1:-1]]
        self.assertEqual(shapes, [ipsetrules.block_set(shape, action, 6)
                                  for shape in SHAPES.values() for action in ACTIONS])  # fmt: skip
        self.assertIn("-m set --match-set p2pwall-ppc-lock6 dst,dst,src -g p2pwall-klock", rules)
        self.assertIn("-m set --match-set p2pwall-pc-block6 dst,dst,src -g p2pwall-kblock", rules)
        self.assertIn("-m set --match-set p2pwall-pp-flows-up6 dst,dst -g p2pwall-kflows-up",
                      rules)  # fmt: skip
        self.assertEqual(chains(family=6)[ipsetrules.CHAIN_LOCKED], [
            "-p tcp -m set --match-set p2pwall-locked6 src -j DROP",
            # What is under the rate goes on to the queue rules: the daemon reads the DHT.
            "-p udp ! --dport 53 -m set --match-set p2pwall-locked_flows6 src -m hashlimit "
            "--hashlimit-above 10/sec --hashlimit-burst 10 --hashlimit-mode srcip "
            "--hashlimit-srcmask 64 --hashlimit-name p2pwall-flows6 -j DROP",
        ])  # fmt: skip

    def test_only_new_flows_unless_established_are_locked(self) -> None:
        self.assertEqual(chains()[ipsetrules.CHAIN_GREEN],
                         ["-m conntrack --ctstate NEW -g p2pwall-knew"])  # fmt: skip
        self.assertEqual(chains()[ipsetrules.CHAIN_TO_GREEN], [
            "-m conntrack --ctstate NEW -m set --match-set p2pwall-locked_flows4 dst -j DROP",
        ])  # fmt: skip
        established = chains(lock_established=True)
        self.assertEqual(established[ipsetrules.CHAIN_GREEN][1:], [
            "-p tcp ! --dport 53 -m set --match-set p2pwall-locked4 src -j DROP",
            "-p udp ! --dport 53 -m set --match-set p2pwall-locked_flows4 src -j DROP",
        ])  # fmt: skip
        self.assertEqual(established[ipsetrules.CHAIN_TO_GREEN][1:], [
            "-p tcp ! --sport 53 -m set --match-set p2pwall-locked4 dst -j DROP",
            "-p udp ! --sport 53 -m set --match-set p2pwall-locked_flows4 dst -j DROP",
        ])  # fmt: skip

    def test_tries_at_locking_peers_go_to_the_daemon_sampled(self) -> None:
        """Without MAC-bound sets the kernel locks nobody: the daemon gets a sender's tries
        (10 a second, no bypass) and locks it when its MAC owns the address."""
        found = chains()
        sample = ("-m hashlimit --hashlimit-upto 10/sec --hashlimit-burst 10 --hashlimit-mode "
                  "srcip --hashlimit-name p2pwall-try4 -j NFQUEUE --queue-num 7")  # fmt: skip
        self.assertEqual(found["p2pwall-kblock"], ["-j DROP"])
        self.assertEqual(found["p2pwall-kblock-up"], ["-p udp -j RETURN", "-j DROP"])
        self.assertEqual(found["p2pwall-klock"], [sample, "-j DROP"])
        self.assertEqual(found["p2pwall-kflows-up"], ["-p udp -j RETURN", sample, "-j DROP"])
        rules = [rule for rules in found.values() for rule in rules]
        self.assertFalse([rule for rule in rules if "--add-set" in rule or "bypass" in rule])

    def test_every_action_has_its_chain_and_nothing_accepts(self) -> None:
        found = chains(lock_established=True)
        self.assertEqual(set(found), set(ipsetrules.chain_names()))
        accepts = [rule for rules in found.values() for rule in rules if "ACCEPT" in rule]
        self.assertEqual(accepts, [], "an ACCEPT would skip the queue and the admin's mangle rules")

    def test_family_of_command(self) -> None:
        self.assertEqual([ipsetrules.family_of_command(c) for c in
                          ("iptables", "ip6tables", "iptables-legacy", "ip6tables-legacy")],
                         [4, 6, 4, 6])  # fmt: skip
