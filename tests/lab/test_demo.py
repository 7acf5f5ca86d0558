"""The demo's live view reads the client's and the user's logs correctly."""

from twisted.trial.unittest import SynchronousTestCase

from lab.demo import View, parse_client, parse_user


class ViewTests(SynchronousTestCase):
    def test_client_log(self) -> None:
        view = View()
        parse_client(
            "[  0.000] ftclient udp name=KaZaA\n[  0.001] phase 1 (udp flood) for 5s\n"
            "[  5.100] phase 2 (parallel tcp) for 5s\n"
            "[  6.000] BREAKTHROUGH phase 2: tcp to 198.19.1.3:1214\n",
            view,
        )
        self.assertEqual((view.phase[:8], view.breakthroughs), ("phase 2:", 1))
        parse_client("[ 20.000] lingering 6s, answering probes\n[ 26.0] done: hellos=24\n", view)
        self.assertEqual(view.phase, "client quit")

    def test_user_log(self) -> None:
        view = View()
        parse_user("web=200 dns=198.19.0.80\nweb=000 dns=198.19.0.80\nweb=200 dns=\n", view)
        self.assertEqual((view.user_ok, view.user_total), (1, 3))
        self.assertIn("user requests ok 1/3", view.line())
