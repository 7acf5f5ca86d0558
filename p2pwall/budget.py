"""Per-key token buckets: how much work one source may cause.

Why: the daemon decides every queued packet on one thread, so work that a single source can
trigger at will (reading what it sends, answering it) must be bounded per source, or one host
takes the time every other host's packets need. The caller charges each piece of work, in
whatever unit it estimates cost by, to the key it is done for; a key whose tokens are used up is
refused, and the caller skips the costly part.

A key may go into debt by one charge: a charge is allowed while the key's balance is positive,
so costs larger than the burst still get through now and then. Over any ``t`` seconds a key is
charged at most ``burst + rate * t`` plus one cost. The table keeps at most ``max_keys`` keys;
the one used least recently goes first (and comes back with a full bucket). Every call is O(1).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable


class TokenBuckets:
    """A bucket per key, refilled at ``rate`` units a second up to ``burst``."""

    def __init__(self, rate: float, burst: float, max_keys: int = 4096) -> None:
        if rate <= 0 or burst <= 0 or max_keys < 1:
            raise ValueError("rate and burst must be positive, max_keys at least 1")
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        # key -> (tokens, when they were last refilled), least recently used first
        self._buckets: OrderedDict[Hashable, tuple[float, float]] = OrderedDict()

    def charge(self, key: Hashable, cost: float, now: float) -> bool:
        """Charge ``cost`` to ``key`` at time ``now`` (the caller's clock, in seconds) and say
        whether it was allowed; a refused charge costs nothing."""
        buckets = self._buckets
        bucket = buckets.get(key)
        if bucket is None:
            tokens, last = self.burst, now
            if len(buckets) >= self.max_keys:
                buckets.popitem(last=False)
        else:
            buckets.move_to_end(key)
            tokens, last = bucket
            if now > last:  # a clock set back refills nothing until it passes ``last`` again
                tokens = min(self.burst, tokens + (now - last) * self.rate)
                last = now
        allowed = tokens > 0
        if allowed:
            tokens -= cost
        buckets[key] = (tokens, last)
        return allowed

    def __len__(self) -> int:
        """Keys held now (at most ``max_keys``)."""
        return len(self._buckets)
