"""FastTrack wire formats: hellos, pongs, probes and HTTP download starts."""

from twisted.trial.unittest import SynchronousTestCase

from p2pwall.detectors.fasttrack import (
    Hello,
    build_pong,
    is_pong,
    parse_download,
    parse_hello,
)
from p2pwall.testing import packed


def hello_bytes(name: bytes = b"KaZaA", enc: int = 0x29) -> bytes:
    return bytes((0x27, 0, 0, 0, enc, 0x80)) + name + b"\0"


class HelloTests(SynchronousTestCase):
    def test_the_clients_hellos(self) -> None:
        for name, size in ((b"KaZaA", 12), (b"fileshare", 16), (b"Grokster", 15)):
            for enc in (0x29, 0xA9):
                data = hello_bytes(name, enc)
                self.assertEqual(len(data), size)
                self.assertEqual(parse_hello(memoryview(data)), Hello(bytes((0, 0, 0, enc)), name))

    def test_near_misses_are_not_hellos(self) -> None:
        good = hello_bytes()
        cases = {
            "pong": b"\x28" + good[1:],
            "no terminator": good[:-1] + b"A",
            "no 0x80": good[:5] + b"\x00" + good[6:],
            "nonzero high enc": good[:1] + b"\x01" + good[2:],
            "empty name": bytes((0x27, 0, 0, 0, 0x29, 0x80, 0)),
            "binary name": bytes((0x27, 0, 0, 0, 0x29, 0x80)) + b"Ka\x01aA\0",
            "space in name": bytes((0x27, 0, 0, 0, 0x29, 0x80)) + b"Ka aA\0",
            "too long": bytes((0x27, 0, 0, 0, 0x29, 0x80)) + b"A" * 60 + b"\0",
            "dns-ish": b"\x27\x10\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00",
        }
        for name, data in cases.items():
            self.assertIsNone(parse_hello(data), name)

    def test_pong_echoes_the_hello_and_is_17_bytes_for_kazaa(self) -> None:
        pong = build_pong(parse_hello(hello_bytes(enc=0xA9)))
        self.assertEqual(len(pong), 17)
        self.assertEqual(pong[:5], b"\x28\x00\x00\x00\xa9")
        self.assertTrue(pong.endswith(b"KaZaA\0"))
        self.assertTrue(is_pong(pong))

    def test_is_pong(self) -> None:
        self.assertTrue(is_pong(b"\x29\x00\x00\x00\x29\x01\x00\x00\x00\x01\x02\x03\x04"))
        self.assertFalse(is_pong(hello_bytes()))
        self.assertFalse(is_pong(b"\x28\x00"))
        self.assertFalse(is_pong(b"\x28\x01\x00\x00\x29"))


GET = (
    b"GET /.hash=0123456789abcdef0123456789abcdef01234567 HTTP/1.1\r\n"
    b"Host: 198.19.1.5:1214\r\n"
    b"UserAgent: KazaaClient\r\n"
    b"X-Kazaa-Username: rogue\r\n"
    b"X-Kazaa-Network: KaZaA\r\n"
    b"X-Kazaa-IP: 198.18.1.10:1214\r\n"
    b"X-Kazaa-SupernodeIP: 198.19.7.7:3531\r\n\r\n"
)


class DownloadTests(SynchronousTestCase):
    def test_hash_request_with_headers(self) -> None:
        download = parse_download(memoryview(GET))
        assert download is not None
        self.assertEqual(
            download.request, "GET /.hash=0123456789abcdef0123456789abcdef01234567 HTTP/1.1"
        )
        self.assertEqual(download.headers["x-kazaa-network"], "KaZaA")
        self.assertEqual(
            download.named,
            (
                (packed("198.19.7.7"), 3531, "x-kazaa-supernodeip"),
                (packed("198.18.1.10"), 1214, "x-kazaa-ip"),
            ),
        )

    def test_other_download_starts(self) -> None:
        self.assertIsNotNone(
            parse_download(b"GET /1234/song.mp3 HTTP/1.1\r\nx-kazaa-username: a\r\n")
        )
        give = parse_download(b"GIVE 1234567\r\n")
        assert give is not None
        self.assertEqual(give.request, "GIVE 1234567")

    def test_what_a_web_page_can_make_a_browser_send_is_not_fasttrack(self) -> None:
        """An ``<img src>`` gives any path; a page's own-origin fetch may add X-Kazaa headers,
        but the browser adds headers no page can remove and no FastTrack client sends."""
        for data in (
            b"GET /.hash=abcd HTTP/1.1\r\nHost: w\r\nAccept: image/*\r\n\r\n",
            b"GET / HTTP/1.1\r\nUser-Agent: PeerEnabler/2.0\r\n\r\n",
            GET.replace(b"\r\n\r\n", b"\r\nAccept-Encoding: gzip, deflate\r\n\r\n"),
            GET.replace(b"\r\n\r\n", b"\r\nsec-fetch-mode: cors\r\n\r\n"),
            GET.replace(b"\r\n\r\n", b"\r\nOrigin: http://evil.test\r\n\r\n"),
        ):
            self.assertIsNone(parse_download(data), data)

    def test_ordinary_http_is_not_fasttrack(self) -> None:
        for data in (
            b"GET / HTTP/1.1\r\nHost: example.test\r\nUser-Agent: curl/8\r\n\r\n",
            b"POST /.hash=1 HTTP/1.1\r\n",
            b"GIVE me\r\n",
            b"\x16\x03\x01\x02\x00",
        ):
            self.assertIsNone(parse_download(data), data)

    def test_bad_address_headers_are_ignored(self) -> None:
        download = parse_download(
            b"GET /.hash=1 HTTP/1.1\r\nX-Kazaa-IP: nonsense:12\r\n"
            b"X-Kazaa-SupernodeIP: 198.19.7.7:99999\r\n"
        )
        assert download is not None
        self.assertEqual(download.named, ())

    def test_an_address_header_needs_its_port(self) -> None:
        download = parse_download(
            b"GET / HTTP/1.1\r\nX-Kazaa-IP: 198.19.0.53\r\n"
            b"X-Kazaa-SupernodeIP: [2001:2::5]:3531\r\n"
        )
        assert download is not None
        self.assertEqual(download.named, ((packed("2001:2::5"), 3531, "x-kazaa-supernodeip"),))
