"""ISO 8601 UTC times: the same text on every machine, whatever its time zone."""

import os
import time

from twisted.trial.unittest import SynchronousTestCase

from p2pwall.timefmt import iso, iso_or_dash


class IsoTests(SynchronousTestCase):
    def test_utc_to_the_second(self) -> None:
        self.assertEqual(iso(1_700_000_000.9), "2023-11-14T22:13:20Z")
        self.assertEqual(iso(0), "1970-01-01T00:00:00Z")

    def test_the_local_time_zone_does_not_matter(self) -> None:
        old = os.environ.get("TZ")

        def restore() -> None:
            if old is None:
                os.environ.pop("TZ", None)
            else:
                os.environ["TZ"] = old
            time.tzset()

        self.addCleanup(restore)
        os.environ["TZ"] = "America/New_York"
        time.tzset()
        self.assertEqual(iso(1_700_000_000), "2023-11-14T22:13:20Z")

    def test_none_is_a_dash(self) -> None:
        self.assertEqual((iso_or_dash(None), iso_or_dash(0)), ("-", "1970-01-01T00:00:00Z"))
