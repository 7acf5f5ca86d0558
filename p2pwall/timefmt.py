"""Times for people and scripts alike: ISO 8601 in UTC, to the second (``2026-12-01T02:00:00Z``).

Replies and events keep their epoch fields where scripts parse them and add these next to them;
UTC so that a line means the same on every machine and sorts as text.
"""

from __future__ import annotations

import time
from functools import lru_cache

ISO_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def iso(seconds: float) -> str:
    """``seconds`` since the epoch as ISO 8601 UTC, truncated to the second."""
    return _iso_second(int(seconds // 1))


@lru_cache(maxsize=4096)
def _iso_second(second: int) -> str:
    """Cached: a listing of a million blocks in last-seen order meets each second many times
    in a row, and ``strftime`` costs microseconds."""
    return time.strftime(ISO_FORMAT, time.gmtime(second))


def iso_or_dash(seconds: float | None) -> str:
    """``iso``, or ``-`` for a time that never was (a client never probed)."""
    return "-" if seconds is None else iso(seconds)
