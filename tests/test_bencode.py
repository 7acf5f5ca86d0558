"""The bounded bencode reader: BEP 3's grammar, BEP 5's messages, and hostile input."""

from __future__ import annotations

import contextlib
import random

from twisted.trial.unittest import SynchronousTestCase

from p2pwall.bencode import BencodeError, decode, decode_prefix, encode

# BEP 5's examples, byte for byte.
PING_QUERY = b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe"
GET_PEERS_VALUES = (
    b"d1:rd2:id20:abcdefghij01234567895:token8:aoeusnth6:valuesl6:axje.u6:idhtnmee1:t2:aa1:y1:re"
)


class GrammarTests(SynchronousTestCase):
    def test_bep5_ping_query(self) -> None:
        self.assertEqual(
            decode(PING_QUERY),
            {b"a": {b"id": b"abcdefghij0123456789"}, b"q": b"ping", b"t": b"aa", b"y": b"q"},
        )

    def test_bep5_get_peers_reply_with_values(self) -> None:
        reply = decode(GET_PEERS_VALUES)
        self.assertEqual(reply[b"r"][b"values"], [b"axje.u", b"idhtnm"])

    def test_keys_in_any_order(self) -> None:
        unsorted = b"d1:y1:q1:q4:ping1:t2:aa1:ad2:id20:abcdefghij0123456789ee"
        self.assertEqual(decode(unsorted), decode(PING_QUERY))

    def test_a_repeated_key_keeps_the_last_value(self) -> None:
        self.assertEqual(decode(b"d1:ai1e1:ai2ee"), {b"a": 2})

    def test_integers(self) -> None:
        for text, number in ((b"i0e", 0), (b"i-42e", -42), (b"i18446744073709551615e", 2**64 - 1)):
            self.assertEqual(decode(text), number)
        for bad in (b"i-0e", b"i03e", b"ie", b"i-e", b"i1.5e", b"i 1e", b"i" + b"9" * 21 + b"e"):
            self.assertRaises(BencodeError, decode, bad)

    def test_strings(self) -> None:
        self.assertEqual(decode(b"0:"), b"")
        self.assertEqual(decode(b"4:spam"), b"spam")
        for bad in (b"5:spam", b"04:spam", b"4spam", b"1234567890:x", b"-1:x"):
            self.assertRaises(BencodeError, decode, bad)

    def test_round_trip_of_nested_values(self) -> None:
        value = {b"list": [1, [b"a", {b"k": []}], {}], b"n": -7, b"s": bytes(range(256))}
        self.assertEqual(decode(encode(value)), value)

    def test_structure_errors(self) -> None:
        for bad in (b"", b"e", b"l", b"d1:ae", b"di1ei2ee", b"x", b"i1ei2e", b"le1:x"):
            self.assertRaises(BencodeError, decode, bad)

    def test_a_prefix_and_where_it_ends(self) -> None:
        data = PING_QUERY + b"trailing"
        self.assertEqual(decode_prefix(data), (decode(PING_QUERY), len(PING_QUERY)))
        self.assertEqual(decode_prefix(b"xxi5e", 2), (5, 5))


class EncodeTests(SynchronousTestCase):
    def test_sorted_keys_and_text_as_bytes(self) -> None:
        value = {"b": [1, b"x"], "a": {"z": -3, "y": "s"}}
        data = encode(value)
        self.assertEqual(data, b"d1:ad1:y1:s1:zi-3ee1:bli1e1:xee")
        self.assertEqual(decode(data), {b"a": {b"y": b"s", b"z": -3}, b"b": [1, b"x"]})

    def test_refuses_what_bencode_cannot_say(self) -> None:
        for value in (True, 1.5, None):
            self.assertRaises(TypeError, encode, value)


class BoundsTests(SynchronousTestCase):
    def test_depth_is_capped(self) -> None:
        nested: list = []
        for _ in range(31):
            nested = [nested]
        self.assertEqual(decode(b"l" * 32 + b"e" * 32, max_depth=32), nested)
        error = self.assertRaises(BencodeError, decode, b"l" * 33 + b"e" * 33, max_depth=32)
        self.assertIn("deeper than 32", str(error))

    def test_a_million_nested_lists_is_an_error_not_a_crash(self) -> None:
        self.assertRaises(BencodeError, decode, b"l" * 1_000_000)

    def test_the_number_of_values_is_capped(self) -> None:
        self.assertEqual(len(decode(b"l" + b"i1e" * 99 + b"e", max_values=100)), 99)
        self.assertRaises(BencodeError, decode, b"l" + b"i1e" * 100 + b"e", max_values=100)

    def test_every_truncation_of_a_real_message_is_an_error(self) -> None:
        for end in range(len(GET_PEERS_VALUES)):
            self.assertRaises(BencodeError, decode, GET_PEERS_VALUES[:end])

    def test_mutations_never_raise_anything_else(self) -> None:
        rng = random.Random(5)
        seeds = [PING_QUERY, GET_PEERS_VALUES, encode({b"x": [1, b"ab", {b"c": -3}]})]
        for _ in range(20_000):
            data = bytearray(rng.choice(seeds))
            for _ in range(rng.randint(1, 4)):
                data[rng.randrange(len(data))] = rng.choice(b"ield:0123456789-x")
            with contextlib.suppress(BencodeError):
                decode(bytes(data))
