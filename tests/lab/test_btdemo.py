"""The BitTorrent demo's readers: the user's log, the live line, bytes on disk."""

from __future__ import annotations

from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from lab.btblock import Explained
from lab.btdemo import USER_LOOP, Progress, on_disk, parse_user
from lab.btlab import PAYLOAD_NAME, SVC


class Lab:
    """What ``on_disk`` reads of a ``BtLab``: its work directory."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir


class ReaderTests(SynchronousTestCase):
    def test_user_requests_ok_only_with_the_page_and_the_answer(self) -> None:
        progress = Progress()
        log = f"web=200 dns={SVC}\nweb=000 dns={SVC}\nweb=200 dns=\nnoise\nweb=200 dns={SVC}\n"
        parse_user(log, progress)
        self.assertEqual((progress.user_ok, progress.user_total), (2, 4))

    def test_the_user_loop_is_bounded_and_asks_web_and_dns(self) -> None:
        loop = USER_LOOP.format(count=7, url="http://x/", svc=SVC, name="n.test")
        self.assertIn("seq 7", loop)
        self.assertIn("-w '%{http_code}' -m 2 http://x/", loop)
        self.assertIn(f"@{SVC} n.test", loop)

    def test_the_live_line(self) -> None:
        progress = Progress(on_disk=2048, explained=Explained(True, 3, 2), user_ok=9, user_total=9)
        line = progress.line(12.4)
        self.assertIn("aria2c has        2 KiB of 20 MiB", line)
        self.assertIn("client locked, probes 2/3 answered", line)
        self.assertIn("user requests ok 9/9", line)

    def test_bytes_on_disk_of_the_newest_download(self) -> None:
        workdir = Path(self.mktemp())
        self.assertEqual(on_disk(Lab(workdir), "g-ar"), 0)  # type: ignore[arg-type]
        (workdir / "g-ar-1").mkdir(parents=True)
        self.assertEqual(on_disk(Lab(workdir), "g-ar"), 0)  # type: ignore[arg-type]
        with (workdir / "g-ar-1" / PAYLOAD_NAME).open("wb") as handle:
            handle.seek(10 << 20)
            handle.write(b"x" * 65536)  # sparse: only what was written is on disk
        got = on_disk(Lab(workdir), "g-ar")  # type: ignore[arg-type]
        self.assertGreaterEqual(got, 65536)
        self.assertLess(got, 1 << 20)
