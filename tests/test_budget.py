"""TokenBuckets: refill, burst, debt, independent keys, a bounded table."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from p2pwall.budget import TokenBuckets


class TokenBucketTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.buckets = TokenBuckets(rate=100, burst=1000, max_keys=3)

    def spend(self, key: str, cost: float, now: float) -> int:
        """Charges of ``cost`` allowed at time ``now`` until one is refused."""
        allowed = 0
        while self.buckets.charge(key, cost, now):
            allowed += 1
        return allowed

    def test_a_new_key_has_the_burst_then_the_rate(self) -> None:
        self.assertEqual(self.spend("a", 30, 0), 34)  # while positive: 1000 down to -20
        self.assertFalse(self.buckets.charge("a", 30, 0.1))  # -10: the debt is paid first
        self.assertTrue(self.buckets.charge("a", 30, 0.3))  # 10, then -20 again
        self.assertEqual(self.spend("a", 10, 1.3), 8)  # 100 tokens a second
        self.assertEqual(self.spend("a", 10, 1000.0), 100)  # never more than the burst

    def test_a_charge_larger_than_the_burst_goes_into_debt(self) -> None:
        self.assertTrue(self.buckets.charge("a", 5000, 0))
        self.assertFalse(self.buckets.charge("a", 1, 39.9))  # 5000 - 1000 paid back at 100/s
        self.assertTrue(self.buckets.charge("a", 1, 40.1))

    def test_a_refused_charge_costs_nothing(self) -> None:
        self.assertTrue(self.buckets.charge("a", 1000, 0))
        for _ in range(100):
            self.assertFalse(self.buckets.charge("a", 1000, 0))
        self.assertTrue(self.buckets.charge("a", 1, 0.01))

    def test_keys_are_independent(self) -> None:
        self.spend("a", 10, 0)
        self.assertTrue(self.buckets.charge("b", 10, 0))
        self.assertFalse(self.buckets.charge("a", 10, 0))

    def test_the_least_recently_used_key_goes_when_the_table_is_full(self) -> None:
        for key in "abc":
            self.spend(key, 10, 0)
        self.assertFalse(self.buckets.charge("a", 10, 0))  # "a" is now the most recent
        self.assertTrue(self.buckets.charge("d", 10, 0))  # evicts "b"
        self.assertEqual(len(self.buckets), 3)
        self.assertFalse(self.buckets.charge("a", 10, 0))
        self.assertFalse(self.buckets.charge("c", 10, 0))  # evicts nothing: "c" is held
        self.assertTrue(self.buckets.charge("b", 10, 0))  # back with a full bucket
        self.assertEqual(len(self.buckets), 3)

    def test_a_clock_set_back_refills_nothing(self) -> None:
        self.spend("a", 10, 100)
        self.assertFalse(self.buckets.charge("a", 10, 50))
        self.assertFalse(self.buckets.charge("a", 10, 99))
        self.assertTrue(self.buckets.charge("a", 10, 100.05))  # 5 tokens since 100

    def test_bad_parameters(self) -> None:
        for rate, burst, keys in ((0, 1, 1), (1, 0, 1), (1, 1, 0), (-1, 1, 1)):
            with self.assertRaises(ValueError):
                TokenBuckets(rate, burst, keys)
