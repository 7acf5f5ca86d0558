"""bench.bencode measures what its labels say: each message is the kind and size named, and
the report renders with and without fastbencode. No timing."""

from twisted.trial.unittest import SynchronousTestCase

from bench.bencode import body, hostile, messages, report, wire
from p2pwall.bencode import decode
from p2pwall.detectors.btwire import MAX_KRPC


class MessagesTests(SynchronousTestCase):
    def test_each_message_is_what_its_label_says(self) -> None:
        peers = {}
        for label, (kind, payload) in messages().items():
            self.assertIsInstance(decode(body(kind, payload)), dict, label)
            found = wire(kind)(payload)
            peers[label] = len(found if isinstance(found, tuple) else found.values)
            if label.startswith("KRPC ping"):
                self.assertEqual(found.query, b"ping")
            if "d2:ip" in label:
                self.assertTrue(payload.startswith(b"d2:ip"))
        self.assertEqual(list(peers.values()), [0, 0, 2, 3, 100, 4, 200, 50])


class HostileTests(SynchronousTestCase):
    def test_the_hostile_packets_are_within_what_is_read(self) -> None:
        for label, (parse, data) in hostile().items():
            self.assertIsNone(parse(data), label)
        sizes = [len(data) for _, data in hostile().values()]
        self.assertEqual(sizes[0], MAX_KRPC - 1)
        self.assertEqual(sizes[1:], [1460, 16384])


class ReportTests(SynchronousTestCase):
    def results(self, names: tuple[str, ...]) -> dict:
        row = {"message": "m", "bytes": 67, "peers": 0, "us": dict.fromkeys(names, 2.0)}
        return {
            "command": "c",
            "machine": "m",
            "repeat": 1,
            "costs": [row],
            "rejects": {"r": 0.1},
            "worst": {"w": 100.0},
        }

    def test_with_fastbencode_the_ratio_column(self) -> None:
        text = report(self.results(("p2pwall.bencode", "fastbencode", "btwire")))
        self.assertIn("| m | 67 | 0 | 2.00 | 2.00 | 2.00 | 1.00 |", text)

    def test_without_fastbencode_it_says_so(self) -> None:
        text = report(self.results(("p2pwall.bencode", "btwire")))
        self.assertIn("fastbencode was not importable", text)
        self.assertNotIn("/ fastbencode", text)
