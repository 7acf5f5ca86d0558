"""The nft table of kernel enforcement, as p2pwall-rules prints it."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from p2pwall.kernel import nftrules


def chain(name: str, lock_established: bool = False) -> list[str]:
    return next(rules for n, _, rules in nftrules.chains('"g0"', lock_established) if n == name)


class NftRulesTests(SynchronousTestCase):
    def test_lock_sets_time_out_after_the_lock(self) -> None:
        lines = nftrules.declarations(90)
        locked = [line for line in lines if " set locked" in line]
        self.assertEqual(len(locked), 8)
        self.assertTrue(all("timeout 90s" in line and "dynamic" in line for line in locked))

    def test_locks_on_ethernet_are_bound_to_the_mac(self) -> None:
        lines = nftrules.declarations(90)
        self.assertIn("set locked4 { type ipv4_addr . ether_addr;", "\n".join(lines))
        self.assertIn("set locked_ip6 { type ipv6_addr;", "\n".join(lines))

    def test_new_flows_meet_every_shape_of_both_families(self) -> None:
        rules = chain("new_from_green")
        vmaps = [rule.split("@")[1] for rule in rules if "vmap" in rule]
        self.assertEqual(
            sorted(vmaps),
            sorted(f"{s}{f}" for s in nftrules.SHAPES.values() for f in (4, 6)),
        )

    def test_only_new_flows_are_matched_unless_established_are_locked(self) -> None:
        self.assertEqual(chain("from_green"), ["ct state new jump new_from_green"])
        established = chain("from_green", lock_established=True)
        self.assertIn(
            "ip saddr . ether saddr @locked4 ct state != new tcp dport != 53 counter drop",
            established,
        )
        self.assertIn(
            "meta iiftype != ether ip6 saddr @locked_flows_ip6 ct state != new udp dport != 53 "
            "counter drop",
            established,
        )
        # Coming in, only the daemon's checked locks, by bare address.
        self.assertIn(
            "ip daddr @locked_ip4 tcp sport != 53 counter drop",
            chain("to_green", lock_established=True),
        )

    def test_locking_chains_restart_the_lock_and_drop(self) -> None:
        lock = chain("lock_flows")
        self.assertIn(
            "meta nfproto ipv4 meta iiftype ether update @locked_flows4 { ip saddr . ether saddr }",
            lock,
        )
        self.assertIn(
            "meta nfproto ipv6 meta iiftype != ether update @locked_flows_ip6 { ip6 saddr }", lock
        )
        self.assertEqual(lock[-1], "counter drop")
        # A FastTrack peer keeps a BitTorrent client's UDP lock running, never starts one.
        self.assertIn(
            "meta nfproto ipv4 meta iiftype ether ip saddr . ether saddr @locked_flows4 "
            "update @locked_flows4 { ip saddr . ether saddr }",
            chain("lock"),
        )
        self.assertEqual(chain("block"), ["counter drop"])
        self.assertEqual(chain("lock_udp_passes")[-2:], ["meta l4proto udp accept", "counter drop"])

    def test_locked_clients_keep_dns(self) -> None:
        rules = chain("new_from_green")
        self.assertIn(
            "ip saddr . ether saddr @locked_flows4 udp dport != 53 update @sampled4 "
            "{ ip saddr limit rate over 10/second } counter drop",
            rules,
        )
        self.assertIn("ip saddr . ether saddr @locked4 meta l4proto tcp counter drop", rules)
        self.assertIn(
            "meta iiftype != ether ip saddr @locked_ip4 meta l4proto tcp counter drop", rules
        )

    def test_allowed_networks_skip_everything_first(self) -> None:
        enforce = chain("enforce")
        self.assertEqual(enforce[0], "ip saddr @allowed4 accept")
        self.assertTrue(enforce[-2].startswith('iifname "g0"'))
