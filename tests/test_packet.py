"""Header decoding: whole UDP/TCP over IPv4/IPv6 decodes; anything else is unknown, not an error."""

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrFragment
from twisted.trial.unittest import SynchronousTestCase

from p2pwall.packet import TCP as TCP_PROTO
from p2pwall.packet import TCP_ACK, TCP_SYN, decode, endpoint_text
from p2pwall.packet import UDP as UDP_PROTO
from p2pwall.testing import packed, tcp, udp


class DecodeTests(SynchronousTestCase):
    def test_ipv4_udp(self) -> None:
        packet = decode(udp("198.18.1.10", "198.19.1.1", 1214, 2000, b"hello"))
        assert packet is not None
        self.assertEqual(
            (packet.version, packet.src, packet.dst, packet.proto, packet.sport, packet.dport),
            (4, packed("198.18.1.10"), packed("198.19.1.1"), UDP_PROTO, 1214, 2000),
        )
        self.assertEqual(bytes(packet.payload), b"hello")

    def test_ipv4_tcp_syn_and_payload(self) -> None:
        syn = decode(tcp("198.18.1.10", "198.19.1.1", 40000, 80))
        data = decode(tcp("198.18.1.10", "198.19.1.1", 40000, 80, "PA", b"GET / HTTP/1.1\r\n"))
        assert syn is not None and data is not None
        self.assertEqual((syn.flags, data.flags), (TCP_SYN, TCP_ACK | 0x08))
        self.assertEqual(data.proto, TCP_PROTO)
        self.assertEqual(bytes(data.payload), b"GET / HTTP/1.1\r\n")

    def test_syn_ack_is_not_a_connection_attempt(self) -> None:
        packet = decode(tcp("198.19.1.1", "198.18.1.10", 80, 40000, "SA"))
        assert packet is not None
        self.assertEqual(packet.flags, TCP_SYN | TCP_ACK)

    def test_ipv6_udp_and_extension_header(self) -> None:
        plain = decode(udp("fd00::10", "2001:db8::1", 1214, 2000, b"x"))
        ext = decode(
            bytes(
                IPv6(src="fd00::10", dst="2001:db8::1")
                / IPv6ExtHdrDestOpt()
                / UDP(sport=5, dport=6)
                / b"yz"
            )
        )
        assert plain is not None and ext is not None
        self.assertEqual((plain.version, plain.sport, bytes(plain.payload)), (6, 1214, b"x"))
        self.assertEqual((ext.proto, ext.dport, bytes(ext.payload)), (UDP_PROTO, 6, b"yz"))

    def test_ethernet_padding_is_not_payload(self) -> None:
        data = udp("198.18.1.10", "198.19.1.1", 1, 2, b"ab") + b"\0" * 6
        packet = decode(data)
        assert packet is not None
        self.assertEqual(bytes(packet.payload), b"ab")

    def test_unknown_things_decode_to_none(self) -> None:
        whole = udp("198.18.1.10", "198.19.1.1", 1214, 2000, b"0123456789")
        cases = {
            "empty": b"",
            "short": whole[:19],
            "truncated udp header": whole[:24],
            "bad version": b"\x50" + whole[1:],
            "bad ihl": b"\x41" + whole[1:],
            "fragment": bytes(IP(src="198.18.1.10", dst="198.19.1.1", flags="MF") / UDP() / b"x"),
            "later fragment": bytes(IP(src="198.18.1.10", dst="198.19.1.1", frag=10) / (b"x" * 8)),
            "icmp": bytes(IP(src="198.18.1.10", dst="198.19.1.1", proto=1) / (b"\0" * 8)),
            "tcp offset past end": tcp("198.18.1.10", "198.19.1.1", 1, 2)[:20]
            + bytes(TCP(dataofs=15))[:20],
            "ipv6 fragment": bytes(
                IPv6(src="fd00::1", dst="fd00::2") / IPv6ExtHdrFragment() / UDP() / b"x"
            ),
            "ipv6 short": bytes(IPv6(src="fd00::1", dst="fd00::2"))[:30],
            "udp length below header": whole[:24] + b"\x00\x04" + whole[26:],
        }
        for name, data in cases.items():
            self.assertIsNone(decode(data), name)

    def test_random_bytes_never_raise(self) -> None:
        import random

        rng = random.Random(7)
        base = udp("198.18.1.10", "198.19.1.1", 1214, 2000, b"payload")
        for _ in range(3000):
            data = bytearray(base)
            for _ in range(rng.randint(1, 6)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            decode(bytes(data[: rng.randint(0, len(data))]))

    def test_endpoint_text(self) -> None:
        self.assertEqual(endpoint_text(packed("198.19.1.1"), 80), "198.19.1.1:80")
        self.assertEqual(endpoint_text(packed("2001:db8::1"), 80), "[2001:db8::1]:80")
        self.assertEqual(endpoint_text(packed("2001:db8::1"), 0), "2001:db8::1")
