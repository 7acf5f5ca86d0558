"""Metrics and structured events on the real daemon in the lab: ``curl`` scrapes ``--metrics``
inside the gateway's namespace, and ``--json-events`` gets JSON lines, a new file after SIGHUP."""

from __future__ import annotations

import json
import signal

from prometheus_client.parser import text_string_to_metric_families

from lab.netlab import PEER_PORT

from .daemons import wait_for
from .support import LabCase

ROGUE = "198.18.1.10"
METRICS_PORT = 9120


class MetricsAndJsonEventsTests(LabCase):
    peers = 2

    def scrape(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        done = self.lab.run(
            "gw",
            ["curl", "-sS", "-m", "5", f"http://127.0.0.1:{METRICS_PORT}/metrics"],
            capture_output=True,
            text=True,
        )
        self.assertEqual(done.returncode, 0, done.stderr)
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(done.stdout)
            for sample in family.samples
        }

    def events(self, name: str) -> list[dict]:
        return [json.loads(line) for line in self.lab.read_log(name).splitlines()]

    def test_scrape_and_json_events_rotated_on_hup(self) -> None:
        events = self.lab.logpath("events.json")
        gateway = self.gateway(
            "-t", "120", "--metrics", str(METRICS_PORT),
            "--json-events", str(events), "--json-classes", "ucpx",
        )  # fmt: skip
        peer = self.lab.peers[0][0]
        report = self.ftclient(f"--peer={peer}:{PEER_PORT}", "--scale", "0.05")
        self.assertGreater(report["pongs_received"], 0)

        got = self.scrape()
        drops = got[("p2pwall_verdicts_total", (("protocol", "udp"), ("verdict", "drop")))]
        self.assertGreater(drops, 0, "the client's hellos were dropped")
        self.assertEqual(got[("p2pwall_clients", ())], 1)
        self.assertGreater(got[("p2pwall_spoofs_total", ())], 0)
        self.assertGreater(got[("p2pwall_blocks", ())], 0)
        self.assertIn(("p2pwall_queue_dropped_total", ()), got, "the kernel queue's /proc row")
        self.assertEqual(got[("p2pwall_reader_refused_total", ())], 0)
        stats = gateway.stats()
        self.assertEqual(int(stats["drop_udp"]), drops, "the same counter as the control port's")
        self.assertEqual(int(stats["reader_errors"]), got[("p2pwall_reader_errors_total", ())])
        listening = self.lab.run("gw", ["ss", "-Htln", f"sport = :{METRICS_PORT}"],
                                 capture_output=True, text=True).stdout  # fmt: skip
        self.assertIn(f"127.0.0.1:{METRICS_PORT}", listening, "loopback only")

        lines = self.events("events.json")
        (identified,) = [e for e in lines if e["class"] == "c"]
        self.assertEqual(identified["client"], ROGUE)
        self.assertRegex(identified["time"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
        dropped = [e for e in lines if e["class"] == "u"]
        self.assertTrue(dropped)
        self.assertEqual(
            {(e["src_addr"], e["protocol"], e["verdict"]) for e in dropped},
            {(ROGUE, "UDP", "dropped")},
        )
        self.assertIn(f"{peer}:{PEER_PORT}", {e["dst"] for e in dropped})
        self.assertTrue(all(e["mac"] for e in dropped), "the MAC address is a key of its own")
        self.assertIn("p", {e["class"] for e in lines})

        events.rename(events.with_name("events.json.1"))
        assert gateway.proc is not None
        gateway.proc.send_signal(signal.SIGHUP)
        self.assertTrue(wait_for(events.exists, 10), "SIGHUP opened a new file")
        self.assertEqual(gateway.ctl("ping").stdout, "OK pong\n")
        self.assertTrue(wait_for(lambda: self.lab.read_log("events.json"), 10))
        (command,) = self.events("events.json")
        self.assertEqual((command["class"], command["command"]), ("x", "ping"))
        self.assertNotIn("ping", [e.get("command") for e in self.events("events.json.1")])
        gateway.stop()
        log = gateway.read_log()
        self.assertIn("--json-events: reopened", log)
        self.assertNotIn("GET /metrics", log, "no access line per scrape")
        self.assertNotIn("Traceback", log)
