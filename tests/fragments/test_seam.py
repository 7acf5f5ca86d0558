"""The fragment seam's helpers: nft payload matches split as the kernel needs them, statements
joined without the empty ones."""

from twisted.trial.unittest import SynchronousTestCase

from p2pwall.fragments import Rules, payload_starts, words


class PayloadStartsTests(SynchronousTestCase):
    def test_short_strings_are_one_comparison(self) -> None:
        self.assertEqual(payload_starts(b"GIVE "), "@ih,0,40 0x4749564520")

    def test_longer_strings_are_compared_16_bytes_at_a_time(self) -> None:
        """nft loads at most 128 bits at once ("Value too large" otherwise)."""
        self.assertEqual(
            payload_starts(b"\x13BitTorrent protocol"),
            "@ih,0,128 0x13426974546f7272656e742070726f74 @ih,128,32 0x6f636f6c",
        )
        self.assertEqual(payload_starts(bytes(32)).count("@ih"), 2)


class WordsTests(SynchronousTestCase):
    def test_empty_statements_are_left_out(self) -> None:
        self.assertEqual(words("udp", "", "jump limited"), "udp jump limited")


class RulesTests(SynchronousTestCase):
    def test_nothing_by_default(self) -> None:
        empty = Rules()
        self.assertEqual((dict(empty.green), list(empty.early), dict(empty.outside),
                          dict(empty.chains)), ({}, [], {}, {}))  # fmt: skip
