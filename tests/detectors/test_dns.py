"""DNS auto-training: crafted answers, real captures, reload, and the daemon's wiring."""

from __future__ import annotations

import os
import random
import signal
import struct
from ipaddress import ip_address
from pathlib import Path
from unittest import mock

from scapy.layers.dns import DNS, DNSQR, DNSRR
from scapy.layers.inet import IP
from scapy.utils import rdpcap
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from p2pwall import dnswire
from p2pwall.detectors.dns import BANNED, WSX, DnsDetector, cname_chain
from p2pwall.detectors.fasttrack import FastTrackDetector
from p2pwall.detectors.patterns import WSX_HOST, PatternSet
from p2pwall.dnswire import MAX_RECORDS
from p2pwall.options import Options
from p2pwall.packet import Hook, Verdict, decode
from p2pwall.service import makeService
from p2pwall.tables import ANY_CLIENT, ANY_PORT
from p2pwall.testing import (
    FakeKernelQueue,
    MemoryEvents,
    ThreadsReactor,
    make_engine,
    packed,
    tcp,
    udp,
)

CONF = Path(__file__).resolve().parents[2] / "conf"
DATA = Path(__file__).resolve().parents[1] / "data"
WINMX = r"(^|\.)winmx\.com$"
CLIENT, SERVER = "198.18.1.20", "198.51.100.53"
CLIENT6, SERVER6 = "fd00::20", "2001:db8:53::53"
PEER, PEER2, PEER6, OTHER = "198.19.5.1", "198.19.5.2", "2001:db8::5", "198.19.6.6"


def rr(name: str, rtype: str, rdata: str, rclass: int = 1) -> DNSRR:
    return DNSRR(rrname=name, type=rtype, rclass=rclass, ttl=60, rdata=rdata)


def answer(qname: str, *records: DNSRR, compress: bool = False, **header) -> bytes:
    """A DNS response to an A query for ``qname`` (scapy builds it uncompressed by default)."""
    fields = {"id": 7, "qr": 1, "rd": 1, "ra": 1, "qd": [DNSQR(qname=qname)], "an": list(records)}
    fields.update(header)
    message = DNS(**fields)
    return bytes(message.compress() if compress else message)


def record(rtype: int, rdata: bytes, owner: bytes = b"\xc0\x0c") -> bytes:
    """One answer record on the wire, its RDLENGTH that of ``rdata``; owned by the question."""
    return owner + struct.pack("!HHIH", rtype, 1, 60, len(rdata)) + rdata


def raw_answer(qname: str, *records: bytes) -> bytes:
    """A response whose answer records are given as wire bytes, to write malformed ones."""
    return bytes(DNS(id=7, qr=1, qd=[DNSQR(qname=qname)], ancount=len(records))) + b"".join(records)


def key(addr: str, port: int = ANY_PORT) -> tuple[bytes, int, bytes]:
    return packed(addr), port, ANY_CLIENT


class DnsTestCase(SynchronousTestCase):
    green = ("198.18.1.0/24", "10.0.0.0/8", "fd00::/8")

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_000_000)
        self.dns = DnsDetector()
        self.dns.patterns = PatternSet([WINMX])
        self.engine = make_engine(
            self.clock, green=self.green, detectors=[FastTrackDetector(), self.dns]
        )

    def feed(self, data: bytes, hook: Hook = Hook.FORWARD, indev: int = 0) -> Verdict:
        packet = decode(data)
        assert packet is not None
        packet.indev = indev
        return self.engine.verdict(packet, hook)

    def reply(
        self,
        message: bytes,
        hook: Hook = Hook.FORWARD,
        src: str = SERVER,
        dst: str = CLIENT,
        indev: int = 0,
    ) -> Verdict:
        """``message`` from a DNS server to ``dst`` over UDP, come in on ``indev``."""
        return self.feed(udp(src, dst, 53, 40000, message), hook, indev)

    def decided_by(self) -> str:
        """Who accepted the last UDP packet: "dns" (the pass) or "no rule" (generic rules)."""
        return self.engine.events.of("U")[-1].rpartition(" (")[2].rstrip(")")

    def learned(self) -> dict[str, str | None]:
        """Learned address text -> the name it was learned for (DNS-learned blocks only)."""
        return learned(self.engine)


def learned(engine) -> dict[str, str | None]:
    """Address text -> the name it was learned for, of the blocks learned from DNS."""
    return {
        str(ip_address(peer)): block.name
        for (peer, _port, _client), block in engine.blocks.items()
        if block.origin == "dns"
    }


class AnswerTests(DnsTestCase):
    def test_matching_name_learns_its_addresses_and_the_answer_goes_on(self) -> None:
        verdict = self.reply(
            answer(
                "cache0.winmx.com",
                rr("cache0.winmx.com", "A", PEER),
                rr("cache0.winmx.com", "A", PEER2),
            )
        )
        self.assertEqual(verdict, Verdict.ACCEPT)
        self.assertEqual(self.learned(), {PEER: "cache0.winmx.com", PEER2: "cache0.winmx.com"})
        self.assertIn(key(PEER), self.engine.blocks)
        self.assertIn("peer 198.19.5.1 learned (dns: cache0.winmx.com)", self.engine.events.of("p"))
        self.assertEqual(self.engine.stats["dns_answers"], 1)

    def test_name_matching_nothing_learns_nothing(self) -> None:
        self.assertEqual(
            self.reply(answer("www.example.com", rr("www.example.com", "A", PEER))), Verdict.ACCEPT
        )
        self.assertEqual(self.learned(), {})
        self.assertEqual(self.feed(tcp(CLIENT, PEER, 40001, 80)), Verdict.ACCEPT)

    def test_aaaa(self) -> None:
        self.reply(
            answer("www.winmx.com", rr("www.winmx.com", "AAAA", PEER6)), src=SERVER6, dst=CLIENT6
        )
        self.assertEqual(self.learned(), {PEER6: "www.winmx.com"})
        self.assertIn(key(PEER6), self.engine.blocks)

    def test_case_and_trailing_dot_do_not_matter(self) -> None:
        self.reply(answer("Cache0.WinMX.COM.", rr("CACHE0.winmx.com.", "A", PEER)))
        self.assertEqual(self.learned(), {PEER: "cache0.winmx.com"})

    def test_compressed_names(self) -> None:
        message = answer(
            "www.example.org",
            rr("www.example.org", "CNAME", "cache1.winmx.com"),
            rr("cache1.winmx.com", "A", PEER),
            compress=True,
        )
        self.assertIn(b"\xc0\x0c", message)  # the names point back at the question
        self.reply(message)
        self.assertEqual(self.learned(), {PEER: "cache1.winmx.com"})

    def big_answer(self, count: int) -> list[str]:
        """Reply with ``count`` A records for big.winmx.com; their addresses."""
        addrs = [f"198.19.{n // 250 + 10}.{n % 250 + 1}" for n in range(count)]
        message = answer("big.winmx.com", *(rr("big.winmx.com", "A", a) for a in addrs))
        self.assertEqual(self.reply(message), Verdict.ACCEPT)
        return addrs

    def test_an_answer_with_hundreds_of_records(self) -> None:
        """Scapy stops at 100 list items by default; such an answer is not malformed."""
        addrs = self.big_answer(300)
        self.assertEqual(self.learned(), dict.fromkeys(addrs, "big.winmx.com"))
        self.assertEqual(self.engine.stats["dns_malformed"], 0)

    def test_more_records_than_a_real_answer_holds_are_not_read(self) -> None:
        self.big_answer(MAX_RECORDS + 1)
        self.assertEqual(self.learned(), {})
        self.assertEqual(self.engine.stats["dns_malformed"], 1)

    def test_green_addresses_are_never_learned(self) -> None:
        self.reply(answer("www.winmx.com", rr("www.winmx.com", "A", "198.18.1.99")))
        self.assertEqual(self.learned(), {})

    def test_answers_from_input_are_read_other_hooks_are_not(self) -> None:
        self.reply(answer("a.winmx.com", rr("a.winmx.com", "A", PEER)), Hook.INPUT)
        self.reply(answer("b.winmx.com", rr("b.winmx.com", "A", PEER2)), Hook.OUTPUT)
        self.assertEqual(self.learned(), {PEER: "a.winmx.com"})

    def test_other_source_ports_are_not_read(self) -> None:
        message = answer("a.winmx.com", rr("a.winmx.com", "A", PEER))
        self.feed(udp(SERVER, CLIENT, 5353, 40000, message))
        self.assertEqual(self.learned(), {})

    def test_outbound_answers_get_no_free_pass_and_train_nothing(self) -> None:
        """A green host sending a DNS-shaped answer out (from port 53) is not trusted: it cannot
        slip UDP past a block that way, nor teach the daemon."""
        self.engine.learn(packed(OTHER), ANY_PORT, ANY_CLIENT, "udp")
        message = answer("a.winmx.com", rr("a.winmx.com", "A", PEER))
        verdict = self.feed(udp("198.18.1.53", OTHER, 53, 40000, message))
        self.assertEqual(verdict, Verdict.DROP)
        self.feed(udp("198.18.1.53", "198.19.9.9", 53, 40000, message))
        self.assertEqual(self.learned(), {})


class ChainTests(DnsTestCase):
    def test_cname_chain_in_order(self) -> None:
        self.reply(
            answer(
                "www.example.org",
                rr("www.example.org", "CNAME", "peers.winmx.com"),
                rr("peers.winmx.com", "CNAME", "edge.cdn.example.net"),
                rr("edge.cdn.example.net", "A", PEER),
                rr("edge.cdn.example.net", "AAAA", PEER6),
            )
        )
        self.assertEqual(self.learned(), {PEER: "peers.winmx.com", PEER6: "peers.winmx.com"})

    def test_cname_chain_out_of_order(self) -> None:
        self.reply(
            answer(
                "www.example.org",
                rr("edge.cdn.example.net", "A", PEER),
                rr("peers.winmx.com", "CNAME", "edge.cdn.example.net"),
                rr("www.example.org", "CNAME", "peers.winmx.com"),
            )
        )
        self.assertEqual(self.learned(), {PEER: "peers.winmx.com"})

    def test_matching_question_learns_the_cdn_addresses(self) -> None:
        self.reply(
            answer(
                "www.winmx.com",
                rr("www.winmx.com", "CNAME", "edge.cdn.example.net"),
                rr("edge.cdn.example.net", "A", PEER),
            )
        )
        self.assertEqual(self.learned(), {PEER: "www.winmx.com"})

    def test_records_off_the_chain_are_ignored(self) -> None:
        self.reply(
            answer(
                "www.winmx.com",
                rr("www.winmx.com", "A", PEER),
                rr("unrelated.example.net", "A", OTHER),
            )
        )
        self.assertEqual(self.learned(), {PEER: "www.winmx.com"})

    def test_chain_not_matching_learns_nothing(self) -> None:
        self.reply(
            answer(
                "www.example.org",
                rr("www.example.org", "CNAME", "edge.cdn.example.net"),
                rr("edge.cdn.example.net", "A", PEER),
                rr("winmx.com", "A", PEER2),
            )
        )
        self.assertEqual(self.learned(), {})

    def test_cname_loop_ends(self) -> None:
        self.assertEqual(
            cname_chain("a.test", {"a.test": "b.test", "b.test": "a.test"}), ["a.test", "b.test"]
        )
        self.reply(
            answer(
                "a.winmx.com",
                rr("a.winmx.com", "CNAME", "b.example"),
                rr("b.example", "CNAME", "a.winmx.com"),
                rr("b.example", "A", PEER),
            )
        )
        self.assertEqual(self.learned(), {PEER: "a.winmx.com"})


class IgnoredAnswerTests(DnsTestCase):
    """Answers that are read but do not train."""

    def check(self, message: bytes, verdict: Verdict = Verdict.ACCEPT) -> None:
        self.assertEqual(self.reply(message), verdict)
        self.assertEqual(self.learned(), {})
        self.assertEqual(self.engine.stats["dns_malformed"], 0)

    def test_error_rcode(self) -> None:
        self.check(answer("www.winmx.com", rr("www.winmx.com", "A", PEER), rcode=2))

    def test_not_a_standard_query(self) -> None:
        self.check(answer("www.winmx.com", rr("www.winmx.com", "A", PEER), opcode=2))

    def test_query_not_response(self) -> None:
        self.check(answer("www.winmx.com", rr("www.winmx.com", "A", PEER), qr=0))
        self.assertEqual(self.engine.stats["dns_answers"], 0)

    def test_question_not_class_in(self) -> None:
        self.check(
            answer(
                "www.winmx.com",
                rr("www.winmx.com", "A", PEER),
                qd=[DNSQR(qname="www.winmx.com", qclass="CH")],
            )
        )

    def test_record_not_class_in(self) -> None:
        self.check(answer("www.winmx.com", rr("www.winmx.com", "A", PEER, rclass=3)))

    def test_cname_not_class_in_breaks_the_chain(self) -> None:
        self.check(
            answer(
                "www.example.org",
                rr("www.example.org", "CNAME", "peers.winmx.com", rclass=4),
                rr("peers.winmx.com", "A", PEER),
            )
        )


class MalformedTests(DnsTestCase):
    """Nothing that comes from port 53 raises, or trains unless it is a whole DNS answer."""

    def check_malformed(self, message: bytes) -> None:
        before = self.engine.stats["dns_malformed"]
        self.assertEqual(self.reply(message), Verdict.ACCEPT)  # by the generic rules
        self.assertEqual(self.engine.stats["dns_malformed"], before + 1, message.hex())
        self.assertEqual(self.learned(), {}, message.hex())

    def test_every_truncation(self) -> None:
        message = answer(
            "www.example.org",
            rr("www.example.org", "CNAME", "peers.winmx.com"),
            rr("peers.winmx.com", "A", PEER),
            rr("peers.winmx.com", "AAAA", PEER6),
            compress=True,
        )
        for size in range(len(message)):
            self.check_malformed(message[:size])
        self.reply(message)
        self.assertEqual(self.learned(), {PEER: "peers.winmx.com", PEER6: "peers.winmx.com"})

    def test_truncated_name_that_would_match(self) -> None:
        """Cut inside a CNAME target, scapy returns the name so far: here a matching one."""
        message = answer(
            "www.example.org",
            rr("x.winmx.com", "A", PEER),
            rr("www.example.org", "CNAME", "x.winmx.com.example.org"),
        )
        cut = message.index(b"\x05winmx\x03com\x07example") + len(b"\x05winmx\x03com")
        self.check_malformed(message[:cut])

    def test_address_record_of_the_wrong_length(self) -> None:
        address = packed(PEER)
        self.check_malformed(raw_answer("www.winmx.com", record(1, address + b"\x01\x02")))
        self.check_malformed(raw_answer("www.winmx.com", record(1, address[:2])))
        self.check_malformed(raw_answer("www.winmx.com", record(28, address)))
        self.reply(raw_answer("www.winmx.com", record(1, address)))
        self.assertEqual(self.learned(), {PEER: "www.winmx.com"})

    def test_counts_larger_than_the_records(self) -> None:
        self.check_malformed(
            bytes(DNS(qr=1, qd=[DNSQR(qname="www.winmx.com")], ancount=2)) + record(1, packed(PEER))
        )

    def test_compression_loop(self) -> None:
        self.check_malformed(bytes.fromhex("0007818000010000000000000c0c00010001"))

    def test_garbage(self) -> None:
        rng = random.Random(53)
        for size in (0, 1, 11, 12, 40, 300):
            self.check_malformed(bytes(rng.randrange(256) for _ in range(size)))

    def test_training_goes_on_afterwards(self) -> None:
        self.check_malformed(b"\xff" * 30)
        self.reply(answer("www.winmx.com", rr("www.winmx.com", "A", PEER)))
        self.assertEqual(self.learned(), {PEER: "www.winmx.com"})

    def test_hostile_names_are_escaped(self) -> None:
        self.reply(
            answer(
                "www.example.org",
                rr("www.example.org", "CNAME", "evil\n1.2.3.4 * * manual 0.winmx.com"),
                rr("evil\n1.2.3.4 * * manual 0.winmx.com", "A", PEER),
            )
        )
        self.assertEqual(
            self.learned(), {PEER: r"evil\0101.2.3.4\032*\032*\032manual\0320.winmx.com"}
        )


class SourceTests(DnsTestCase):
    """Answers train only when they come from outside: a green host can forge an answer to the
    gateway (INPUT, from port 53) or route a spoofed one through it (FORWARD)."""

    GREEN_IF, RED_IF = 3, 2

    def setUp(self) -> None:
        super().setUp()
        self.engine.green_ifindexes = frozenset({self.GREEN_IF, 7})
        self.message = answer("cache0.winmx.com", rr("cache0.winmx.com", "A", PEER))

    def check_ignored(self, hook: Hook, **where) -> None:
        self.reply(self.message, hook, **where)
        self.assertEqual(self.decided_by(), "no rule")
        self.assertEqual(self.learned(), {})
        self.assertEqual(self.engine.stats["dns_from_green"], 1)
        self.assertEqual(self.engine.stats["dns_answers"], 0)

    def test_input_answer_from_a_green_interface(self) -> None:
        self.check_ignored(Hook.INPUT, dst="198.18.1.1", indev=self.GREEN_IF)

    def test_forward_answer_from_a_green_interface(self) -> None:
        self.check_ignored(Hook.FORWARD, indev=self.GREEN_IF)

    def test_forward_answer_from_a_green_interface_gets_no_pass_past_a_block(self) -> None:
        self.engine.block(packed(CLIENT), 40000)
        self.assertEqual(self.reply(self.message, indev=7), Verdict.DROP)
        self.assertEqual(self.learned(), {})

    def test_answer_from_a_green_address(self) -> None:
        self.check_ignored(Hook.FORWARD, src="198.18.1.53", indev=self.RED_IF)

    def test_answers_from_outside_train_on_both_hooks(self) -> None:
        self.reply(self.message, Hook.INPUT, dst="198.18.1.1", indev=self.RED_IF)
        self.assertEqual(self.decided_by(), "dns")
        other = answer("cache1.winmx.com", rr("cache1.winmx.com", "A", PEER2))
        self.reply(other, indev=self.RED_IF)
        self.assertEqual(self.decided_by(), "dns")
        self.assertEqual(self.learned(), {PEER: "cache0.winmx.com", PEER2: "cache1.winmx.com"})
        self.assertEqual(self.engine.stats["dns_from_green"], 0)

    def test_unknown_interface_is_taken_as_outside(self) -> None:
        """0: the reader could not tell; the address check still applies."""
        self.reply(self.message, indev=0)
        self.assertEqual(self.learned(), {PEER: "cache0.winmx.com"})


class ReadingTests(DnsTestCase):
    """The message is read only when something can train or a DNS debug class is on."""

    def setUp(self) -> None:
        super().setUp()
        self.dns.patterns = PatternSet()
        self.engine.events = MemoryEvents(debug="thp")
        # A whole header, then an A record of 6 bytes: malformed, but only reading can tell.
        self.bad = raw_answer("www.winmx.com", record(1, packed(PEER) + b"\1\2"))

    def read_calls(self, message: bytes, **where) -> int:
        with mock.patch.object(dnswire, "read", wraps=dnswire.read) as read:
            self.reply(message, **where)
        return read.call_count

    def test_nothing_to_train_reads_nothing_and_passes(self) -> None:
        self.assertEqual(self.read_calls(self.bad), 0)
        self.assertEqual(self.decided_by(), "dns")
        self.assertEqual(self.engine.stats["dns_malformed"], 0)
        self.assertEqual(self.engine.stats["dns_answers"], 1)

    def test_each_source_of_names_turns_reading_on(self) -> None:
        def patterns() -> None:
            self.dns.patterns = PatternSet([WINMX])

        def wsx_names() -> None:
            self.dns.patterns = PatternSet(names=["opennap2.example"])

        def banned() -> None:
            self.dns.banned.add("peers.example.net")

        for turn_on in (patterns, wsx_names, banned):
            self.dns.patterns = PatternSet()
            self.dns.banned.discard("peers.example.net")
            self.assertEqual(self.read_calls(self.bad), 0, turn_on.__name__)
            turn_on()
            self.assertEqual(self.read_calls(self.bad), 1, turn_on.__name__)
            self.assertEqual(self.decided_by(), "no rule")

    def test_a_dns_debug_class_turns_reading_on(self) -> None:
        for cls in "daD":
            self.engine.events = MemoryEvents(debug=cls)
            good = answer("www.example.org", rr("www.example.org", "A", PEER))
            self.assertEqual(self.read_calls(good), 1, cls)
            self.assertEqual(len(self.engine.events.of(cls, debug=True)), 1, cls)
        self.assertEqual(self.learned(), {})

    def test_unread_answers_still_need_a_response_header_from_outside_to_green(self) -> None:
        good = answer("www.example.org", rr("www.example.org", "A", PEER))
        for message, where in (
            (answer("www.example.org", qr=0), {}),  # a query
            (good, {"dst": OTHER}),  # not to a green host
            (good, {"src": "198.18.1.53"}),  # from a green host
            (good[:11], {}),  # not even a header
            (bytes(DNS(qr=1, ancount=MAX_RECORDS + 1)), {}),  # more records than read
        ):
            self.assertEqual(self.read_calls(message, **where), 0, message.hex())
            self.assertEqual(self.decided_by(), "no rule", message.hex())
        self.assertEqual(self.engine.stats["dns_malformed"], 2)
        self.assertEqual(self.engine.stats["dns_answers"], 0)
        self.reply(good, Hook.INPUT, dst="198.18.1.1")
        self.assertEqual(self.decided_by(), "dns")


class BudgetTests(DnsTestCase):
    """One host's answers can take only a bounded share of the daemon's time."""

    BUDGET = 1000  # bytes a second; the burst is ten seconds' worth, all hosts eight hosts'

    def setUp(self) -> None:
        super().setUp()
        self.dns = DnsDetector(budget=self.BUDGET)
        self.dns.patterns = PatternSet([WINMX])
        self.engine = make_engine(self.clock, green=self.green, detectors=[self.dns])
        self.big = answer(
            "big.winmx.com", *(rr("big.winmx.com", "A", PEER2) for _ in range(60)), compress=True
        )
        self.assertEqual(len(self.big), 991)
        self.late = answer("late.winmx.com", rr("late.winmx.com", "A", PEER))

    def test_a_host_over_its_budget_gets_the_pass_without_training(self) -> None:
        for _ in range(11):  # charged while the balance is positive: 10,000 - 10 * 991 > 0
            self.assertEqual(self.reply(self.big), Verdict.ACCEPT)
        self.assertEqual(self.engine.stats["dns_over_budget"], 0)
        self.assertEqual(self.reply(self.late), Verdict.ACCEPT)
        self.assertEqual(self.decided_by(), "dns")
        self.assertEqual(self.learned(), {PEER2: "big.winmx.com"})
        self.assertEqual(self.engine.stats["dns_over_budget"], 1)
        self.assertEqual(
            self.engine.events.of("D", debug=True)[-1],
            "DNS answer from 198.51.100.53 to 198.18.1.20 not read: over the budget",
        )
        # Another host is not held up; the host itself reads again once its budget refills.
        other = answer("other.winmx.com", rr("other.winmx.com", "A", OTHER))
        self.reply(other, dst="198.18.1.21")
        self.assertIn(OTHER, self.learned())
        self.clock.advance(1)
        self.reply(self.late)
        self.assertIn(PEER, self.learned())

    def test_the_gateway_has_a_budget_of_its_own(self) -> None:
        for _ in range(12):
            self.reply(self.big, Hook.INPUT, dst="198.18.1.1")
        self.assertEqual(self.engine.stats["dns_over_budget"], 1)
        self.assertEqual(
            self.engine.events.of("D", debug=True)[-1],
            "DNS answer from 198.51.100.53 to the gateway not read: over the budget",
        )
        self.reply(self.late)
        self.assertEqual(self.learned(), {PEER2: "big.winmx.com", PEER: "late.winmx.com"})

    def test_all_hosts_together_have_a_budget(self) -> None:
        """A host asking from many addresses still has only eight hosts' worth."""
        for host in range(1, 9):
            for _ in range(10):
                self.reply(self.big, dst=f"198.18.1.{host}")
        self.assertEqual(self.engine.stats["dns_over_budget"], 0)
        self.reply(self.big, dst="198.18.1.9")  # 80,000 - 80 * 991 > 0 left
        self.reply(self.late, dst="198.18.1.9")
        self.assertEqual(self.engine.stats["dns_over_budget"], 1)
        self.assertNotIn(PEER, self.learned())

    def test_a_flood_is_read_at_the_budget_rate(self) -> None:
        """200 answers of 88 records a second for a minute: what is read stays within the
        burst plus the rate, plus one message; every answer still passes."""
        flood = answer(
            "big.winmx.com", *(rr("big.winmx.com", "A", PEER) for _ in range(88)), compress=True
        )
        data = udp(SERVER, CLIENT, 53, 40000, flood)
        with mock.patch.object(dnswire, "read", wraps=dnswire.read) as reader:
            for _ in range(60 * 200):
                self.assertEqual(self.engine.verdict(decode(data), Hook.FORWARD), Verdict.ACCEPT)
                self.clock.advance(1 / 200)
        read = reader.call_count * len(flood)
        limit = self.BUDGET * (10 + 60) + len(flood)
        self.assertLessEqual(read, limit)
        self.assertGreater(read, limit - 2 * len(flood))
        self.assertEqual(self.engine.stats["dns_answers"], 60 * 200)


class TcpTests(DnsTestCase):
    def segment(self, data: bytes) -> bytes:
        return tcp(SERVER, CLIENT, 53, 40000, "PA", data)

    def test_whole_message_in_one_segment(self) -> None:
        message = answer("www.winmx.com", rr("www.winmx.com", "A", PEER))
        verdict = self.feed(self.segment(struct.pack("!H", len(message)) + message))
        self.assertEqual(verdict, Verdict.ACCEPT)
        self.assertEqual(self.learned(), {PEER: "www.winmx.com"})

    def test_split_messages_are_skipped_not_malformed(self) -> None:
        message = answer("www.winmx.com", rr("www.winmx.com", "A", PEER))
        length = struct.pack("!H", len(message))
        self.feed(self.segment(length + message[:20]))
        self.feed(self.segment(message[20:]))
        self.feed(self.segment(length + message + length + message))
        self.feed(tcp(SERVER, CLIENT, 53, 40000, "SA"))
        self.assertEqual(self.learned(), {})
        self.assertEqual(self.engine.stats["dns_malformed"], 0)


class NameSourceTests(DnsTestCase):
    def test_banned_names_match_exactly(self) -> None:
        self.dns.banned.add("peers.example.net")
        self.assertEqual(self.dns.match("peers.example.net"), BANNED)
        self.reply(answer("x.peers.example.net", rr("x.peers.example.net", "A", PEER2)))
        self.reply(answer("PEERS.example.net.", rr("peers.example.net", "A", PEER)))
        self.assertEqual(self.learned(), {PEER: "peers.example.net"})
        self.dns.banned.discard("peers.example.net")
        self.reply(answer("peers.example.net", rr("peers.example.net", "A", OTHER)))
        self.assertNotIn(OTHER, self.learned())

    def test_shipped_conf_trains_on_winmx_and_blocks_wsx_ips(self) -> None:
        dns = DnsDetector(CONF / "dns-patterns.conf")
        engine = make_engine(self.clock, detectors=[dns])
        self.assertEqual(dns.reload(engine), [])
        self.assertIn(key("198.19.4.20", 8888), engine.blocks)
        self.assertEqual(dns.match("opennap2.example"), WSX_HOST)
        for name, address in (("cache3.winmxgroup.com", PEER), ("opennap2.example", PEER2)):
            message = answer(name, rr(name, "A", address))
            engine.verdict(decode(udp(SERVER, CLIENT, 53, 40000, message)), Hook.FORWARD)
        got = learned(engine)
        self.assertEqual(
            (got["198.19.4.20"], got[PEER], got[PEER2]),
            (WSX, "cache3.winmxgroup.com", "opennap2.example"),
        )


class ReloadTests(DnsTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.path = Path(self.mktemp())
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.dns.path = self.path
        self.logged: list[dict] = []
        globalLogPublisher.addObserver(self.logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.logged.append)

    def test_reload_keeps_learned_blocks_and_picks_up_new_patterns(self) -> None:
        self.path.write_text(WINMX + "\n")
        self.assertEqual(self.dns.reload(self.engine), [])
        self.reply(answer("a.winmx.com", rr("a.winmx.com", "A", PEER)))
        self.path.write_text(r"\.napster\.example$" + "\n")
        self.assertEqual(self.dns.reload(self.engine), [])
        self.reply(answer("b.winmx.com", rr("b.winmx.com", "A", OTHER)))
        self.reply(answer("www.napster.example", rr("www.napster.example", "A", PEER2)))
        self.assertEqual(self.learned(), {PEER: "a.winmx.com", PEER2: "www.napster.example"})

    def test_reload_reports_and_logs_bad_regex_and_loads_the_rest(self) -> None:
        self.path.write_text("# comment\n(unclosed\n" + WINMX + "\n")
        problems = self.dns.reload(self.engine)
        self.assertEqual(len(problems), 1)
        self.assertTrue(problems[0].startswith(f"{self.path}:2: bad regex '(unclosed'"), problems)
        self.assertIn(problems[0], [e.get("problem") for e in self.logged])
        self.assertEqual(self.dns.match("a.winmx.com"), WINMX)

    def test_unreadable_file_keeps_the_patterns(self) -> None:
        self.path.write_text(WINMX + "\n")
        self.dns.reload(self.engine)
        self.path.unlink()
        problems = self.dns.reload(self.engine)
        self.assertEqual(len(problems), 2)
        self.assertIn("cannot read", problems[0])
        self.assertEqual(self.dns.match("a.winmx.com"), WINMX)

    def test_wsx_ips_blocked_at_once(self) -> None:
        (self.path.parent / "servers.wsx").write_text(
            "N: One\nA: 198.19.9.9\nP: 7777\n\nN: Two\nA: nap.example.test\n"
        )
        self.path.write_text("servers.wsx\n")
        self.assertEqual(self.dns.reload(self.engine), [])
        self.assertEqual(self.learned(), {"198.19.9.9": WSX})
        self.assertIn(key("198.19.9.9", 7777), self.engine.blocks)
        self.reply(answer("nap.example.test", rr("nap.example.test", "A", PEER)))
        self.reply(answer("x.nap.example.test", rr("x.nap.example.test", "A", PEER2)))
        self.assertEqual(self.learned(), {"198.19.9.9": WSX, PEER: "nap.example.test"})


class GenericRuleTests(DnsTestCase):
    """What training is for: the client's next connection to a learned address is dropped."""

    def setUp(self) -> None:
        super().setUp()
        self.reply(answer("cache0.winmx.com", rr("cache0.winmx.com", "A", PEER)))

    def test_syn_to_a_learned_address_is_dropped_and_logged(self) -> None:
        self.assertEqual(self.feed(tcp(CLIENT, PEER, 40001, 6699)), Verdict.DROP)
        self.assertEqual(
            self.engine.events.of("t"),
            ["dropped TCP 198.18.1.20:40001 -> 198.19.5.1:6699 (blocked peer (dns))"],
        )

    def test_udp_to_a_learned_address_is_dropped_and_logged(self) -> None:
        self.assertEqual(self.feed(udp(CLIENT, PEER, 40001, 6257, b"x")), Verdict.DROP)
        self.assertEqual(
            self.engine.events.of("u"),
            ["dropped UDP 198.18.1.20:40001 -> 198.19.5.1:6257 (blocked peer (dns))"],
        )

    def test_other_addresses_keep_working(self) -> None:
        self.reply(answer("www.example.com", rr("www.example.com", "A", OTHER)))
        self.assertEqual(self.feed(tcp("198.18.1.30", OTHER, 40001, 80)), Verdict.ACCEPT)


class DebugTests(DnsTestCase):
    def test_questions_answers_and_everything(self) -> None:
        self.reply(
            answer(
                "www.example.org",
                rr("www.example.org", "CNAME", "peers.winmx.com"),
                rr("peers.winmx.com", "A", PEER),
            )
        )
        self.reply(b"\xff" * 13)
        events = self.engine.events
        self.assertEqual(
            events.of("d", debug=True),
            ["DNS question www.example.org A answered by 198.51.100.53, rcode 0"],
        )
        self.assertEqual(
            events.of("a", debug=True),
            [
                "DNS answer www.example.org CNAME peers.winmx.com",
                "DNS answer peers.winmx.com A 198.19.5.1",
            ],
        )
        everything = events.of("D", debug=True)
        self.assertEqual(len(everything), 3, everything)
        self.assertEqual(
            everything[0],
            "DNS answer from 198.51.100.53: id 7 flags 0x8180 opcode 0 rcode 0;"
            " question: www.example.org IN A; answer: www.example.org 60 IN CNAME"
            " peers.winmx.com, peers.winmx.com 60 IN A 198.19.5.1; authority: -; additional: -",
        )
        self.assertEqual(everything[1], rf"peers.winmx.com trains the block list ({WINMX})")
        self.assertEqual(
            everything[2],
            "malformed DNS message from 198.51.100.53, 13 bytes:"
            " more than 512 records in a section",
        )


class CaptureTests(SynchronousTestCase):
    """Real captures (tests/data, see PROVENANCE.md), fed through the engine as queued IP
    packets."""

    # Only the clients are green: bt-dns's resolver 10.0.2.3 (VirtualBox's NAT) stands for the
    # gateway's upstream, ambiguous_names asks 8.8.8.8.
    green = ("10.0.2.15/32", "10.200.2.11/32")

    def run_capture(
        self, name: str, *patterns: str, green: tuple[str, ...] = green
    ) -> dict[str, str | None]:
        dns = DnsDetector()
        dns.patterns = PatternSet(patterns)
        engine = make_engine(green=green, detectors=[FastTrackDetector(), dns])
        for frame in rdpcap(str(DATA / name)):
            packet = decode(bytes(frame[IP]))
            self.assertEqual(engine.verdict(packet, Hook.FORWARD), Verdict.ACCEPT)
        self.assertEqual(engine.stats["dns_malformed"], 0)
        self.stats = engine.stats
        return learned(engine)

    def test_bt_dns_utorrent(self) -> None:
        learned = self.run_capture("ndpi_bt-dns.pcap", r"(^|\.)utorrent\.com$")
        self.assertEqual(learned, {"98.143.146.7": "utorrent.com"})
        self.assertEqual(self.stats["dns_answers"], 1)

    def test_bt_dns_from_a_green_resolver_teaches_nothing(self) -> None:
        learned = self.run_capture(
            "ndpi_bt-dns.pcap", r"(^|\.)utorrent\.com$", green=("10.0.0.0/8",)
        )
        self.assertEqual(learned, {})
        self.assertEqual((self.stats["dns_from_green"], self.stats["dns_answers"]), (1, 0))

    def test_bt_dns_without_a_matching_pattern(self) -> None:
        self.assertEqual(self.run_capture("ndpi_bt-dns.pcap", WINMX), {})

    def test_ambiguous_names_cname_in_the_middle_of_a_chain(self) -> None:
        learned = self.run_capture("ndpi_dns_ambiguous_names.pcap", r"(^|\.)trafficmanager\.net$")
        self.assertEqual(learned, {"52.113.194.131": "teams-afd.trafficmanager.net"})
        self.assertEqual(self.stats["dns_answers"], 10)

    def test_ambiguous_names_cname_target(self) -> None:
        learned = self.run_capture("ndpi_dns_ambiguous_names.pcap", r"\.akadns\.net$")
        apple = {f"17.57.146.{n}" for n in range(132, 140)}
        self.assertEqual(set(learned), apple)
        self.assertEqual(set(learned.values()), {"41.courier-push-apple.com.akadns.net"})

    def test_ambiguous_names_nxdomain_and_no_match(self) -> None:
        self.assertEqual(self.run_capture("ndpi_dns_ambiguous_names.pcap", r"teams\.microsoft"), {})
        self.assertEqual(self.run_capture("ndpi_dns_ambiguous_names.pcap", WINMX), {})


class ServiceTests(SynchronousTestCase):
    """makeService wires the detector, the patterns file, SIGHUP and the control port."""

    def build(self, *argv: str):
        options = Options()
        options.parseOptions(
            ["--green", "198.18.1.0/24", "--control", "tcp:0:interface=127.0.0.1", *argv]
        )
        reactor = ThreadsReactor()
        service = makeService(options, reactor, FakeKernelQueue)
        service.privilegedStartService()
        service.startService()
        self.addCleanup(service.stopService)
        (self.dns,) = [d for d in service.engine.detectors if isinstance(d, DnsDetector)]
        (control,) = [s for s in service if hasattr(s, "factory")]
        self.controller = control.factory.controller
        return service

    def test_last_in_the_registry_and_ban_dns_name_works_without_patterns(self) -> None:
        service = self.build()
        self.assertIsInstance(service.engine.detectors[0], FastTrackDetector)
        self.assertIs(service.engine.detectors[-1], self.dns)
        self.controller.ban_dns_name(["Peers.Example.NET."])
        message = answer("peers.example.net", rr("peers.example.net", "A", PEER))
        service.engine.verdict(decode(udp(SERVER, "198.18.1.5", 53, 4000, message)), Hook.FORWARD)
        self.assertIn(key(PEER), service.engine.blocks)
        self.assertIsNone(self.controller.reload_patterns)

    def test_patterns_loaded_at_start_and_on_sighup(self) -> None:
        path = Path(self.mktemp())
        path.parent.mkdir(parents=True, exist_ok=True)
        (path.parent / "a.wsx").write_text("A: 198.19.9.9\n")
        path.write_text(WINMX + "\na.wsx\n")
        previous = signal.getsignal(signal.SIGHUP)
        service = self.build("-D", str(path))
        self.assertEqual(self.dns.match("x.winmx.com"), WINMX)
        self.assertIn(key("198.19.9.9", 8888), service.engine.blocks)
        path.write_text("(bad\n" + r"\.napster\.example$" + "\n")
        os.kill(os.getpid(), signal.SIGHUP)
        self.assertIsNone(self.dns.match("x.winmx.com"))
        self.assertIsNotNone(self.dns.match("www.napster.example"))
        self.assertIn(key("198.19.9.9", 8888), service.engine.blocks)
        self.assertEqual(self.controller.reload([]).final, "OK reloaded, 1 problems")
        service.stopService()
        self.assertEqual(signal.getsignal(signal.SIGHUP), previous)
