"""The simulators' bytes, checked against docs/protocols.md rather than against themselves."""

from __future__ import annotations

import re
from pathlib import Path

from twisted.trial import unittest

from lab import ftwire

# docs/protocols.md §2 (from the l7-filter fasttrack pattern), the part a download hits.
L7_FASTTRACK = re.compile(
    rb"^get (/.download/[ -~]*|/.supernode[ -~]|/.status[ -~]|/.network[ -~]*|/.files"
    rb"|/.hash=[0-9a-f]*/[ -~]*) http/1.1|user-agent: kazaa"
    rb"|x-kazaa(-username|-network|-ip|-supernodeip|-xferid|-xferuid|tag)",
    re.I,
)


class HelloTests(unittest.TestCase):
    def test_kazaa_hello_is_the_documented_12_bytes(self) -> None:
        self.assertEqual(
            ftwire.build_hello("KaZaA", 0x29), bytes.fromhex("27 00 00 00 29 80 4b 61 5a 61 41 00")
        )
        self.assertEqual(
            ftwire.build_hello("KaZaA", 0xA9), bytes.fromhex("27 00 00 00 a9 80 4b 61 5a 61 41 00")
        )

    def test_length_is_7_plus_name_for_every_client(self) -> None:
        for name, length in (("KaZaA", 12), ("fileshare", 16), ("Grokster", 15)):
            for enc in ftwire.ENCS:
                hello = ftwire.build_hello(name, enc)
                self.assertEqual(len(hello), length)
                self.assertEqual(hello[:6], bytes([0x27, 0, 0, 0, enc, 0x80]))
                self.assertEqual(hello[6:], name.encode() + b"\0")
                self.assertEqual(ftwire.parse_hello(hello), ftwire.Hello(enc=enc, name=name))

    def test_parse_hello_rejects_near_misses(self) -> None:
        good = ftwire.build_hello()
        for bad in (
            b"",
            good[:-1],  # no NUL
            b"\x28" + good[1:],  # a pong byte
            good[:1] + b"\x01" + good[2:],  # min-enc high bytes not zero
            good[:5] + b"\x81" + good[6:],  # not 0x80
            good[:6] + b"\x01AZaA\0",  # unprintable name
            good[:6] + b"\0",  # empty name
        ):
            self.assertIsNone(ftwire.parse_hello(bad), bad)

    def test_bad_names_are_refused(self) -> None:
        for name in ("", "Ka ZaA", "x" * 33, "Kä"):
            self.assertRaises((ValueError, UnicodeEncodeError), ftwire.build_hello, name)


class PongTests(unittest.TestCase):
    def test_kazaa_pong_layout_is_17_bytes(self) -> None:
        pong = ftwire.build_pong(0x29, "KaZaA", tick=3, load=0x40, unknown=7)
        self.assertEqual(pong, bytes.fromhex("28 00000029 00 03 0000 40 07") + b"KaZaA\0")
        self.assertEqual(len(pong), 17)

    def test_pong_echoes_enc_and_name(self) -> None:
        for name in ftwire.NAMES:
            for enc in ftwire.ENCS:
                pong = ftwire.parse_pong(ftwire.build_pong(enc, name, load=12))
                self.assertEqual(pong, ftwire.Pong(kind=ftwire.PONG, enc=enc, name=name, load=12))

    def test_pong2_is_recognised_without_a_name(self) -> None:
        for pong2 in (
            bytes.fromhex("29 00000029 01 00 0000 01020304"),
            bytes.fromhex("29 000000a9 02 01 0000 01020304 c6120101 04be 0000"),
        ):
            self.assertEqual(
                ftwire.parse_pong(pong2), ftwire.Pong(ftwire.PONG2, pong2[4], None, None)
            )

    def test_parse_pong_rejects_hellos_and_junk(self) -> None:
        self.assertIsNone(ftwire.parse_pong(ftwire.build_hello()))
        self.assertIsNone(ftwire.parse_pong(b"\x28\x00\x00\x00"))
        self.assertIsNone(ftwire.parse_pong(bytes.fromhex("29 00000029 01 00")))
        self.assertIsNone(ftwire.parse_pong(ftwire.build_pong(0x29, "KaZaA")[:-1]))


class TcpTests(unittest.TestCase):
    def test_followup_and_session_start(self) -> None:
        self.assertEqual(ftwire.build_followup(0x01020304), bytes.fromhex("2a 01020304"))
        start = ftwire.build_session_start(0xDEADBEEF, 0x29)
        self.assertEqual(start, bytes.fromhex("fa00b62b deadbeef 00000029"))

    def test_download_request(self) -> None:
        digest = ftwire.file_hash("x")
        self.assertRegex(digest, r"^[0-9a-f]{40}$")
        request = ftwire.build_download(
            file_hash_hex=digest,
            host="198.19.1.1:1214",
            username="rogue",
            network="KaZaA",
            own="198.18.1.10:1214",
            supernode="198.19.1.2:1214",
        )
        lines = request.decode().split("\r\n")
        self.assertEqual(lines[0], f"GET /.hash={digest} HTTP/1.1")
        for header in (
            "X-Kazaa-Username: rogue",
            "X-Kazaa-Network: KaZaA",
            "X-Kazaa-IP: 198.18.1.10:1214",
            "X-Kazaa-SupernodeIP: 198.19.1.2:1214",
        ):
            self.assertIn(header, lines)
        self.assertTrue(request.endswith(b"\r\n\r\n"))
        # ipp2p's search_kazaa / search_all_kazaa and the l7 pattern all match it.
        self.assertTrue(request.startswith(b"GET /.hash=") and request.endswith(b"\r\n"))
        self.assertIn(b"\r\nX-Kazaa-Username: ", request)
        self.assertIsNotNone(L7_FASTTRACK.search(request))
        self.assertEqual(ftwire.parse_download(request), digest)
        self.assertIsNone(ftwire.parse_download(b"GET / HTTP/1.1\r\n\r\n"))
        self.assertRaises(ValueError, ftwire.build_download, file_hash_hex="zz", host="h",
                          username="u", network="n", own="o", supernode="s")  # fmt: skip

    def test_download_reply(self) -> None:
        reply = ftwire.build_download_reply(b"abc", username="p", network="KaZaA")
        self.assertTrue(reply.startswith(b"HTTP/1.0 200 OK\r\n"))
        self.assertIn(b"Content-Length: 3\r\n", reply)
        self.assertTrue(reply.endswith(b"\r\n\r\nabc"))


class AddressTests(unittest.TestCase):
    def test_only_lab_and_loopback_addresses_are_accepted(self) -> None:
        self.assertEqual(ftwire.parse_addr("198.19.1.1"), ("198.19.1.1", 1214))
        self.assertEqual(ftwire.parse_addr("198.18.1.10:80"), ("198.18.1.10", 80))
        self.assertEqual(ftwire.parse_addr("127.0.0.2:5000"), ("127.0.0.2", 5000))
        for bad in ("10.0.0.1", "8.8.8.8:53", "198.20.0.1", "198.19.1.1:0", "198.19.1.1:x", "h"):
            self.assertRaises(ValueError, ftwire.parse_addr, bad)

    def test_peers_file(self) -> None:
        path = Path(self.mktemp())
        path.write_text("# cache\n198.19.1.1:1214\n\n198.19.1.2  # default port\n")
        self.assertEqual(
            ftwire.read_peers_file(str(path)), [("198.19.1.1", 1214), ("198.19.1.2", 1214)]
        )
        path.write_text("1.2.3.4\n")
        self.assertRaises(ValueError, ftwire.read_peers_file, str(path))
