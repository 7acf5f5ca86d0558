"""The gateway's own addresses, read from /proc's formats."""

from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from p2pwall.localaddrs import parse_fib_trie, parse_if_inet6, read_local_addresses
from p2pwall.testing import packed

FIB_TRIE = """\
Main:
  +-- 0.0.0.0/0 3 0 5
     |-- 0.0.0.0
        /0 universe UNICAST
     +-- 127.0.0.0/8 2 0 2
        +-- 127.0.0.0/31 1 0 0
           |-- 127.0.0.0
              /8 host LOCAL
           |-- 127.0.0.1
              /32 host LOCAL
        |-- 127.255.255.255
           /32 link BROADCAST
     +-- 198.19.0.0/24 2 0 2
           |-- 198.19.0.0
              /24 link UNICAST
           |-- 198.19.0.1
              /32 host LOCAL
Local:
     |-- 198.19.0.1
        /32 host LOCAL
"""

IF_INET6 = """\
fe8000000000000000fc00fffe000001 04 40 20 80     eth0
00000000000000000000000000000001 01 80 10 80       lo
"""


class ParseTests(SynchronousTestCase):
    def test_only_addresses_configured_on_an_interface(self) -> None:
        self.assertEqual(parse_fib_trie(FIB_TRIE), {packed("127.0.0.1"), packed("198.19.0.1")})

    def test_ipv6(self) -> None:
        self.assertEqual(parse_if_inet6(IF_INET6), {packed("fe80::fc:ff:fe00:1"), packed("::1")})

    def test_junk_is_skipped(self) -> None:
        self.assertEqual(parse_fib_trie("|-- 999.1.1.1\n/32 host LOCAL\n"), set())
        self.assertEqual(parse_if_inet6("zz" * 16 + " 01\n\n"), set())

    def test_both_files_and_a_missing_one(self) -> None:
        trie, inet6 = Path(self.mktemp()), Path(self.mktemp())
        trie.write_text(FIB_TRIE)
        inet6.write_text(IF_INET6)
        self.assertEqual(len(read_local_addresses(str(trie), str(inet6))), 4)
        self.assertEqual(
            read_local_addresses(str(trie), str(inet6) + ".gone"),
            frozenset({packed("127.0.0.1"), packed("198.19.0.1")}),
        )
