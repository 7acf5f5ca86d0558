"""BitTorrent's fragment, rule by rule in both formats: tracker announces (marking their
connection) and handshakes in early data, the rest of what green sends on a marked connection,
probe replies to the gateway's PROBE_PORT, and from outside the first reply packets of green's
UDP flows (DNS's port left out) and of announce connections, always with bypass."""

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from p2pwall.detectors.bittorrent import PROBE_PORT
from p2pwall.fragments import FORWARD, INPUT, IRuleFragment, Rules
from p2pwall.fragments.bittorrent import ANNOUNCE_MARK, BitTorrentRules
from p2pwall.tools.rules import RuleSet

from .support import IP6TABLES, IPTABLES, NFT

LIMIT = ["-j", "p2pwall-lim"]
REPLY = ["-m", "conntrack", "--ctstate", "ESTABLISHED", "--ctdir", "REPLY"]
ANSWER = ["-j", "NFQUEUE", "--queue-num", "2", "--queue-bypass"]
NFT_REPLY = "ct state established ct direction reply"


class BitTorrentIptablesTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.rules = BitTorrentRules().iptables(IPTABLES)

    def test_provides_the_fragment_interface(self) -> None:
        verifyObject(IRuleFragment, BitTorrentRules())

    def test_announces_mark_their_connection_then_pass_the_limit(self) -> None:
        announce = self.rules.early[0]
        self.assertEqual(announce, ["-m", "string", "--algo", "bm", "--string", "info_hash=",
                                    "-j", "p2pwall-bt"])  # fmt: skip
        self.assertEqual(list(self.rules.chains["p2pwall-bt"]), [
            ["-j", "CONNMARK", "--or-mark", "0x1000000"], LIMIT])  # fmt: skip
        self.assertEqual(bin(ANNOUNCE_MARK).count("1"), 1, "one bit: the admin's marks stay")
        self.assertEqual(BitTorrentRules.chains, ("p2pwall-bt",))

    def test_handshake_where_the_tcp_payload_can_start(self) -> None:
        """IPv4: 20-60 bytes of IP header, 20-60 of TCP; IPv6: 40 and 20-60; the string
        match counts from the IP header and wants all 20 bytes inside the range."""
        handshake = ["-m", "string", "--algo", "bm", "--from", "40", "--to", "140",
                     "--hex-string", "|13|BitTorrent protocol", *LIMIT]  # fmt: skip
        self.assertEqual(self.rules.early[1], handshake)
        v6 = BitTorrentRules().iptables(IP6TABLES).early[1]
        self.assertEqual(v6[4:8], ["--from", "60", "--to", "120"])

    def test_every_probe_reply_to_the_gateways_probe_port(self) -> None:
        """Not only a flow's first packets: one client's answers are one long-lived flow."""
        self.assertEqual(PROBE_PORT, 6881)
        self.assertEqual(list(self.rules.green[INPUT]), [
            ["-p", "udp", "!", "--sport", "53", "--dport", "6881", *IPTABLES.opened_by_sender,
             *LIMIT]
        ])  # fmt: skip

    def test_every_later_packet_green_sends_on_a_marked_connection(self) -> None:
        """The announce's retransmissions too, past the early-data window: the daemon's drop
        holds. Only in the original direction: in on green as a reply, it is a forgery."""
        self.assertEqual(list(self.rules.green[FORWARD]), [
            ["-p", "tcp", "-m", "connmark", "--mark", "0x1000000/0x1000000", "-m", "conntrack",
             "--ctdir", "ORIGINAL", *LIMIT]])  # fmt: skip

    def test_replies_from_outside_first_packets_only_always_bypass(self) -> None:
        udp, tracker = self.rules.outside[FORWARD]
        first = ["-m", "connbytes", "--connbytes", "0:3", "--connbytes-dir", "reply",
                 "--connbytes-mode", "packets"]  # fmt: skip
        self.assertEqual(udp, ["-p", "udp", "!", "--sport", "53", *first, *REPLY, *ANSWER])
        self.assertEqual(tracker, [
            "-p", "tcp", "-m", "connmark", "--mark", "0x1000000/0x1000000", "-m", "connbytes",
            "--connbytes", "0:8", "--connbytes-dir", "reply", "--connbytes-mode", "packets",
            *REPLY, *ANSWER])  # fmt: skip
        self.assertNotIn(INPUT, self.rules.outside, "the gateway itself runs no BitTorrent")

    def test_udp_packets_0_queues_every_reply_packet_as_every_flow_packet(self) -> None:
        every = RuleSet(("g0",), queue=2, udp_packets=0).iptables_context(ipv6=False)
        udp = BitTorrentRules().iptables(every).outside[FORWARD][0]
        self.assertEqual(udp, ["-p", "udp", "!", "--sport", "53", *REPLY, *ANSWER])

    def test_replies_bypass_even_when_the_rest_fails_closed(self) -> None:
        closed = RuleSet(("g0",), queue=2, bypass=False).iptables_context(ipv6=False)
        for rule in BitTorrentRules().iptables(closed).outside[FORWARD]:
            self.assertEqual(rule[-5:], ANSWER)


class BitTorrentNftTests(SynchronousTestCase):
    def test_rules(self) -> None:
        rules = BitTorrentRules().nft(NFT)
        self.assertEqual(list(rules.early), [
            "@ih,0,104 0x474554202f616e6e6f756e6365 ct mark set ct mark or 0x01000000 "
            "jump limited",
            "@ih,0,128 0x13426974546f7272656e742070726f74 @ih,128,32 0x6f636f6c jump limited",
        ])  # fmt: skip
        self.assertEqual(list(rules.green[INPUT]), [
            "udp sport != 53 udp dport 6881 ct direction original jump limited"])  # fmt: skip
        self.assertEqual(list(rules.green[FORWARD]), [
            "meta l4proto tcp ct mark & 0x01000000 == 0x01000000 ct direction original "
            "jump limited"])  # fmt: skip
        self.assertEqual(list(rules.outside[FORWARD]), [
            f"udp sport != 53 {NFT_REPLY} ct reply packets <= 3 queue num 2 bypass",
            f"meta l4proto tcp ct mark & 0x01000000 == 0x01000000 {NFT_REPLY} "
            "ct reply packets <= 8 queue num 2 bypass",
        ])  # fmt: skip
        self.assertEqual(dict(rules.chains), {})

    def test_udp_packets_0(self) -> None:
        every = RuleSet(("g0",), queue=2, udp_packets=0).nft_context()
        udp = BitTorrentRules().nft(every).outside[FORWARD][0]
        self.assertEqual(udp, f"udp sport != 53 {NFT_REPLY} queue num 2 bypass")


class NoBitTorrentTests(SynchronousTestCase):
    def test_the_flag_turns_every_rule_off(self) -> None:
        off = BitTorrentRules(frozenset({"no-bittorrent"}))
        self.assertEqual((off.iptables(IPTABLES), off.nft(NFT)), (Rules(), Rules()))
        self.assertEqual([name for name, _ in BitTorrentRules.flags], ["no-bittorrent"])
