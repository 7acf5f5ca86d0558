"""dnswire against scapy's reading, real captures, and hostile messages."""

from __future__ import annotations

import random
import struct
from ipaddress import ip_address
from pathlib import Path
from unittest import mock

from scapy.layers.dns import DNS, DNSQR, DNSRR, DNSRRMX, DNSRROPT, DNSRRSOA, DNSRRSRV
from scapy.layers.inet import UDP
from scapy.utils import rdpcap
from twisted.trial.unittest import SynchronousTestCase

from p2pwall import dnswire
from p2pwall.dnswire import MAX_HOPS, MAX_NAME, MAX_RECORDS, Malformed

DATA = Path(__file__).resolve().parent / "data"
CAPTURES = ("ndpi_bt-dns.pcap", "ndpi_dns_ambiguous_names.pcap")
HEADER = struct.Struct("!6H")
RECORD = struct.Struct("!HHIH")


def message(questions: bytes, *records: bytes, counts: tuple[int, ...] | None = None) -> bytes:
    """A response with one question (wire bytes) and ``records`` as answers."""
    qd, an, ns, ar = counts or (1, len(records), 0, 0)
    return HEADER.pack(7, 0x8180, qd, an, ns, ar) + questions + b"".join(records)


def wire_name(*labels: bytes) -> bytes:
    return b"".join(bytes([len(label)]) + label for label in labels) + b"\0"


def question(name: bytes = wire_name(b"www", b"example", b"org")) -> bytes:
    return name + b"\0\x01\0\x01"


def a_record(owner: bytes = b"\xc0\x0c", address: bytes = b"\xc6\x13\x05\x01") -> bytes:
    return owner + RECORD.pack(1, 1, 60, len(address)) + address


def pointer(offset: int) -> bytes:
    return struct.pack("!H", 0xC000 | offset)


def scapy_text(name: bytes) -> str:
    return name.decode("ascii").lower().removesuffix(".")


def scapy_messages() -> list[bytes]:
    """Responses of many shapes, built by scapy, each uncompressed and compressed."""
    mixed = DNS(
        id=1,
        qr=1,
        aa=1,
        qd=[
            DNSQR(qname="WWW.Example.org", qtype="AAAA"),
            DNSQR(qname="_svc._tcp.local", qtype="SRV", unicastresponse=1),
        ],
        an=[
            DNSRR(rrname="www.example.org", type="CNAME", ttl=300, rdata="Edge.example.NET"),
            DNSRR(rrname="edge.example.net", type="AAAA", rdata="2001:db8::1", cacheflush=1),
            DNSRRMX(rrname="example.org", preference=10, exchange="mx.example.org"),
            DNSRR(rrname="example.org", type="TXT", rdata=["v=spf1 -all", "x"]),
            DNSRRSRV(rrname="_svc._tcp.local", target="host.local", port=80),
            DNSRR(rrname="1.2.0.192.in-addr.arpa", type="PTR", rdata="host.example.org"),
            DNSRR(rrname="www.example.org", type="A", rclass=3, rdata="198.51.100.7"),
        ],
        ns=[
            DNSRR(rrname="example.net", type="NS", rdata="ns1.example.net"),
            DNSRRSOA(rrname="example.org", mname="ns.example.org", rname="h.example.org"),
        ],
        ar=[DNSRR(rrname="ns1.example.net", type="A", rdata="198.51.100.1"), DNSRROPT(rclass=1232)],
    )
    big = DNS(
        id=2,
        qr=1,
        qd=[DNSQR(qname="big.winmx.com")],
        an=[
            DNSRR(rrname="big.winmx.com", type="A", ttl=60, rdata=f"198.19.{n // 250}.{n % 250}")
            for n in range(88)
        ],
    )
    error = DNS(id=3, qr=1, rcode=3, opcode=0, qd=[DNSQR(qname="nx.example")])
    query = DNS(id=4, qr=0, rd=1, qd=[DNSQR(qname="q.example", qtype="A")])
    return [bytes(m) for m in (mixed, big, error, query)] + [
        bytes(m.compress()) for m in (mixed, big)
    ]


def capture_messages() -> list[bytes]:
    return [bytes(frame[UDP].payload) for name in CAPTURES for frame in rdpcap(str(DATA / name))]


class AgreesWithScapyTests(SynchronousTestCase):
    """Every field training and the debug classes use, as scapy reads it."""

    def check(self, data: bytes) -> None:
        ours, theirs = dnswire.read(data), DNS(data)
        head = ours.header
        self.assertEqual(
            (head.id, head.qr, head.opcode, head.rcode),
            (theirs.id, theirs.qr, theirs.opcode, theirs.rcode),
        )
        self.assertEqual(
            [(q.name, q.qtype, q.qclass, q.unicast) for q in ours.questions],
            [(scapy_text(q.qname), q.qtype, q.qclass, bool(q.unicastresponse)) for q in theirs.qd],
        )
        for mine, section in (
            (ours.answers, theirs.an),
            (ours.authority, theirs.ns),
            (ours.additional, theirs.ar),
        ):
            self.assertEqual(len(mine), len(section))
            for record, rr in zip(mine, section, strict=True):
                self.assertEqual(
                    (record.owner, record.rtype, record.rclass),
                    (scapy_text(rr.rrname), rr.type, rr.rclass),
                )
                if record.rtype != dnswire.OPT:  # scapy splits an OPT record's TTL field
                    self.assertEqual(record.ttl, rr.ttl)
                self.assertEqual(record.cache_flush, bool(getattr(rr, "cacheflush", 0)))
                if record.rtype in (dnswire.A, dnswire.AAAA):
                    self.assertEqual(record.data, ip_address(rr.rdata).packed)
                elif record.rtype in (dnswire.CNAME, dnswire.NS, dnswire.PTR):
                    self.assertEqual(record.data, scapy_text(rr.rdata))

    def test_scapy_built_messages(self) -> None:
        for data in scapy_messages():
            with self.subTest(data=data.hex()):
                self.check(data)

    def test_real_captures(self) -> None:
        messages = capture_messages()
        self.assertEqual(len(messages), 22)
        for data in messages:
            with self.subTest(data=data.hex()):
                self.check(data)

    def test_a_real_answer_in_detail(self) -> None:
        (answer,) = [m for m in capture_messages()[:2] if m[2] & 0x80]
        dns = dnswire.read(answer)
        self.assertEqual(
            dnswire.describe(dns),
            "id 28657 flags 0x8180 opcode 0 rcode 0; question: utorrent.com IN A;"
            " answer: utorrent.com 743 IN A 98.143.146.7; authority: -; additional: -",
        )

    def test_bytes_after_the_last_record_are_ignored(self) -> None:
        data = scapy_messages()[0]
        self.assertEqual(dnswire.read(data + b"junk"), dnswire.read(data))

    def test_bytearray(self) -> None:
        data = scapy_messages()[-1]
        self.assertEqual(dnswire.read(bytearray(data)), dnswire.read(data))
        self.assertIs(type(dnswire.read(bytearray(data)).answers[0].data), bytes)


class NameTests(SynchronousTestCase):
    def first_answer_owner(self, data: bytes) -> str:
        return dnswire.read(data).answers[0].owner

    def test_pointer_into_the_middle_of_a_name(self) -> None:
        # "example.org" starts 4 bytes into the question's name (after "\x03www").
        data = message(question(), a_record(pointer(16)), a_record(b"\x04mail" + pointer(16)))
        self.assertEqual(
            [r.owner for r in dnswire.read(data).answers], ["example.org", "mail.example.org"]
        )

    def test_pointer_to_a_pointer(self) -> None:
        first = 12 + len(question())
        owner = b"\x02ns" + pointer(12)
        data = message(question(), a_record(owner), a_record(pointer(first)))
        self.assertEqual(dnswire.read(data).answers[1].owner, "ns.www.example.org")

    def test_escaping_and_case(self) -> None:
        name = wire_name(b"A b\n\\", b"Win\x00MX", b"c.m")
        data = message(question(name), a_record())
        self.assertEqual(self.first_answer_owner(data), r"a\032b\010\092.win\000mx.c.m")

    def test_root_name(self) -> None:
        data = message(question(b"\0"), a_record())
        self.assertEqual(self.first_answer_owner(data), "")

    def test_longest_name(self) -> None:
        """255 bytes on the wire is the most RFC 1035 allows, pointers or not."""
        labels = [b"a" * 63] * 3 + [b"b" * 61]
        self.assertEqual(len(wire_name(*labels)), MAX_NAME)
        data = message(question(wire_name(*labels)), a_record())
        self.assertEqual(len(self.first_answer_owner(data)), MAX_NAME - 2)
        with self.assertRaisesRegex(Malformed, "label too long"):
            dnswire.read(message(question(wire_name(*labels[:3], b"b" * 62)), a_record()))
        # Too long only once a pointer adds the question's 255 bytes to a label.
        with self.assertRaisesRegex(Malformed, "name too long"):
            dnswire.read(message(question(wire_name(*labels)), a_record(b"\x01x" + pointer(12))))

    def test_most_pointers(self) -> None:
        """A chain of pointers to pointers: MAX_HOPS are followed, one more is refused."""

        def chained(hops: int) -> bytes:
            records, offset = [], 12 + len(question())
            target = 12
            for _ in range(hops):
                records.append(a_record(pointer(target)))
                target, offset = offset, offset + len(records[-1])
            return message(question(), *records, a_record(pointer(target)))

        self.assertEqual(dnswire.read(chained(MAX_HOPS - 1)).answers[-1].owner, "www.example.org")
        with self.assertRaisesRegex(Malformed, "too many|name too long"):
            dnswire.read(chained(MAX_HOPS))

    def test_each_offset_is_worked_out_once(self) -> None:
        """Pointers to every label of a long name cost a lookup each, not a walk each."""
        labels = [bytes([97 + n % 26]) for n in range(100)]
        records = [a_record(pointer(12 + 2 * n)) for n in range(len(labels))]
        data = message(question(wire_name(*labels)), *records)
        with mock.patch.object(dnswire, "_walk", wraps=dnswire._walk) as walk:
            answers = dnswire.read(data).answers
        self.assertEqual(walk.call_count, 1)
        self.assertEqual(answers[98].owner, "u.v")


class HostileTests(SynchronousTestCase):
    """Only ``Malformed`` comes out, whatever goes in."""

    def malformed(self, data: bytes, why: str = "") -> None:
        with self.assertRaisesRegex(Malformed, why):
            dnswire.read(data)

    def test_pointer_loops(self) -> None:
        self.malformed(message(pointer(12) + b"\0\x01\0\x01"), "pointer")  # to itself
        # A label, then a pointer back to it: each turn adds the label until the name is too long.
        self.malformed(message(b"\x01a" + pointer(12) + b"\0\x01\0\x01"), "pointer|too long")
        # Labels, then a pointer back into them: strictly backwards, and still a loop.
        self.malformed(message(b"\x01a\x01b" + pointer(14) + b"\0\x01\0\x01"), "pointer|too long")
        self.malformed(message(pointer(13) + b"\0\x01\0\x01"), "pointer")  # into itself

    def test_forward_pointer(self) -> None:
        self.malformed(message(question(), a_record(pointer(200))), "pointer")

    def test_label_past_the_end(self) -> None:
        self.malformed(message(b"\x3fabc"), "label")

    def test_pointer_cut_at_the_end(self) -> None:
        self.malformed(message(b"\xc0"), "pointer cut")

    def test_reserved_label_types(self) -> None:
        for first in (0x40, 0x80):
            self.malformed(message(bytes([first, 1]) + b"\0\x01\0\x01"), "label type")

    def test_huge_counts_are_refused_before_reading(self) -> None:
        for counts in ((MAX_RECORDS + 1, 0, 0, 0), (1, 0, 0, 0xFFFF), (1, 0xFFFF, 0, 0)):
            self.malformed(message(question(), counts=counts), "more than")
        records = [a_record()] * MAX_RECORDS
        self.assertEqual(len(dnswire.read(message(question(), *records)).answers), MAX_RECORDS)

    def test_counts_larger_than_the_records(self) -> None:
        self.malformed(message(question(), a_record(), counts=(1, 2, 0, 0)), "past the end")
        self.malformed(message(question(), a_record(), counts=(1, 1, 1, 0)), "past the end")

    def test_wrong_data_lengths(self) -> None:
        self.malformed(message(question(), a_record(address=bytes(6))), "wrong length")
        self.malformed(message(question(), a_record(address=bytes(2))), "wrong length")
        aaaa = b"\xc0\x0c" + RECORD.pack(28, 1, 60, 4) + bytes(4)
        self.malformed(message(question(), aaaa), "wrong length")
        cname = b"\xc0\x0c" + RECORD.pack(5, 1, 60, 3) + pointer(12) + b"\0"
        self.malformed(message(question(), cname), "wrong length")
        past = b"\xc0\x0c" + RECORD.pack(16, 1, 60, 100) + b"txt"
        self.malformed(message(question(), past), "past the end")

    def test_every_truncation_of_real_answers(self) -> None:
        for data in capture_messages() + scapy_messages():
            for size in range(len(data)):
                with self.assertRaises(Malformed, msg=f"{data.hex()} cut at {size}"):
                    dnswire.read(data[:size])

    def test_mutations_raise_nothing_else(self) -> None:
        rng = random.Random(9)
        seeds = capture_messages() + scapy_messages()
        outcomes = {"read": 0, "malformed": 0}
        for _ in range(20_000):
            data = bytearray(rng.choice(seeds))
            for _ in range(rng.randint(1, 6)):
                data[rng.randrange(len(data))] = rng.choice((0, 0xC0, 0x3F, rng.randrange(256)))
            try:
                dnswire.read(data)
                outcomes["read"] += 1
            except Malformed:
                outcomes["malformed"] += 1
        self.assertGreater(min(outcomes.values()), 2000, outcomes)

    def test_header(self) -> None:
        self.malformed(bytes(11), "shorter than a header")
        head = dnswire.header(message(question(), counts=(1, 2, 3, 4)) + bytes(4))
        self.assertEqual((head.qr, head.opcode, head.rcode, head.records), (True, 0, 0, 10))
        self.assertEqual(dnswire.header(HEADER.pack(1, 0x2803, 0, 0, 0, 0)).opcode, 5)


class RenderingTests(SynchronousTestCase):
    def test_describe_names_everything(self) -> None:
        text = dnswire.describe(dnswire.read(scapy_messages()[4]))
        for part in (
            "question: www.example.org IN AAAA, _svc._tcp.local IN QU SRV",
            "www.example.org 300 IN CNAME edge.example.net",
            "edge.example.net 0 IN flush AAAA 2001:db8::1",
            "example.org 0 IN MX 000a026d78c0",
            "www.example.org 0 CH A 198.51.100.7",
            "authority: example.net 0 IN NS ns1.example.net",
            "additional: ns1.example.net 0 IN A 198.51.100.1, . 32768 CLASS1232 OPT ",
        ):
            self.assertIn(part, text)

    def test_long_data_is_cut(self) -> None:
        txt = b"\xc0\x0c" + RECORD.pack(16, 1, 60, 100) + bytes(100)
        (record,) = dnswire.read(message(question(), txt)).answers
        self.assertEqual(dnswire.data_text(record), "00" * 32 + "...")
        self.assertEqual(dnswire.type_name(99), "TYPE99")
