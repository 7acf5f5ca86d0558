"""The lab's IPv6 side: twins of the IPv4 plan in 2001:2::/48 only, simulators that speak IPv6,
and (root) a simulated client breaking through an open gateway over IPv6, so an IPv6 run that
sees no breakthrough behind p2pwall proves something."""

from __future__ import annotations

import contextlib
import io
import ipaddress
import json
import sys
from pathlib import Path

from twisted.trial import unittest

from lab import ftclient, ftpeers, ftwire, netlab
from lab.gateway import GREEN_OPTIONS
from lab.netlab import FTCLIENT, Lab, LabError, v6

from .test_netlab import need_root


class TwinTests(unittest.TestCase):
    def test_twins_mirror_the_ipv4_plan(self) -> None:
        self.assertEqual(v6("198.18.1.10"), "2001:2:0:1::10")
        self.assertEqual(v6("198.18.7.1"), "2001:2:0:7::1")
        self.assertEqual(v6("198.19.0.80"), "2001:2:0:1000::80")
        self.assertEqual(v6("198.19.1.254"), "2001:2:0:1001::254")
        self.assertEqual(v6("198.19.255.1"), "2001:2:0:1255::1")
        self.assertRaises(LabError, v6, "10.0.0.1")
        lab = Lab(peers=2, run_id="abc123")
        self.assertEqual(lab.addr("rogue", 6), "2001:2:0:1::10")
        self.assertEqual(lab.addr("gw", 6), "2001:2:0:1::1")
        self.assertEqual(lab.addr("dns", 6), "2001:2:0:1000::53")
        self.assertEqual(lab.addr("user"), "198.18.1.20", "IPv4 stays the default")
        self.assertEqual(lab.peers6, [("2001:2:0:1001::1", 1214), ("2001:2:0:1001::2", 1214)])
        self.assertRaises(LabError, lab.addr, "rogue", 5)

    def test_every_twin_is_in_its_net(self) -> None:
        for ip in (netlab.GW_GREEN, *netlab.GREEN_HOSTS.values()):
            self.assertIn(ipaddress.ip_address(v6(ip)), netlab.GREEN_NET6)
        for ip in (netlab.WEB_ADDR, netlab.DNS_ADDR, netlab.PUB_LINK, netlab.peer_address(253)):
            self.assertIn(ipaddress.ip_address(v6(ip)), netlab.PUBLIC_NET6)
        self.assertIn("2001:2:0:1::/64", GREEN_OPTIONS, "the daemon's green LAN has its IPv6 net")

    def test_only_the_ipv6_benchmarking_prefix(self) -> None:
        self.assertEqual(netlab.check_lab_addr("2001:2:0:ffff::1"), "2001:2:0:ffff::1")
        for bad in ("2001:db8::1", "2001:2:1::1", "fd00::1", "::1", "fe80::1", "nonsense"):
            self.assertRaises(LabError, netlab.check_lab_addr, bad)
        self.assertRaises(LabError, netlab.check_lab_addr, "2001:2::1", netlab.LAB_NET)
        self.assertIn("2001:2:0:1002::1", Lab(extra_addrs=["2001:2:0:1002::1"]).public_addrs)
        for bad in ("2001:2:0:1::99", "2001:2:0:1255::9", "2001:db8::1"):  # green, link, outside
            self.assertRaises(LabError, Lab, extra_addrs=[bad])

    def test_peers_files_bracket_ipv6(self) -> None:
        lab = Lab(peers=1)
        lab.workdir = Path(self.mktemp())
        lab.workdir.mkdir()
        path = lab.write_peers_file("p", [*lab.peers, *lab.peers6])
        self.assertEqual(path.read_text(), "198.19.1.1:1214\n[2001:2:0:1001::1]:1214\n")
        self.assertEqual(ftwire.read_peers_file(str(path)), [*lab.peers, *lab.peers6])
        self.assertRaises(LabError, lab.write_peers_file, "q", [("2001:db8::1", 1214)])


class SimulatorIpv6Tests(unittest.TestCase):
    def test_addresses(self) -> None:
        parse = ftwire.parse_addr
        self.assertEqual(parse("[2001:2:0:1001::1]:80"), ("2001:2:0:1001::1", 80))
        self.assertEqual(parse("[2001:2::0:1]"), ("2001:2::1", 1214), "compressed, as sockets say")
        self.assertEqual(parse("2001:2:0:1001::1"), ("2001:2:0:1001::1", 1214))
        self.assertEqual(parse("[::1]:5000"), ("::1", 5000))
        for bad in ("[2001:db8::1]:80", "[::2]", "[2001:2::1", "[2001:2::1]80", "[2001:2::1]:"):
            self.assertRaises(ValueError, parse, bad)
        self.assertEqual(ftwire.endpoint("2001:2::1", 80), "[2001:2::1]:80")
        self.assertEqual(ftwire.endpoint("198.19.1.1", 80), "198.19.1.1:80")

    def test_client_speaks_one_family(self) -> None:
        cfg, _ = ftclient.parse_args(["--peer", "[2001:2:0:1001::1]:1214", "--ip", "::1"])
        self.assertEqual((cfg.bind, cfg.supernode), ("::1", "[2001:2:0:1001::1]:1214"))
        cfg, _ = ftclient.parse_args(["--peer", "[::1]:1214", "--hidden-peer", "[::1]:99"])
        self.assertEqual((cfg.bind, cfg.own_ip, cfg.hidden), ("::", "::1", [("::1", 99)]))
        for mixed in (
            ["--peer", "[2001:2:0:1001::1]", "--peer", "198.19.1.1"],
            ["--peer", "198.19.1.1", "--hidden-peer", "[2001:2:0:1001::1]:1214"],
            ["--peer", "198.19.1.1", "--supernode", "[2001:2:0:1001::1]:3531"],
            ["--peer", "[2001:2:0:1001::1]", "--ip", "198.18.1.10"],
        ):
            with contextlib.redirect_stderr(io.StringIO()) as err, self.assertRaises(SystemExit):
                ftclient.parse_args(mixed)
            self.assertIn("must all be IPv", err.getvalue())
        args = ftpeers.parse_args(["--peer", "[2001:2:0:1001::1]", "--peer", "198.19.1.1:1214"])
        self.assertEqual(args.peers, [("2001:2:0:1001::1", 1214), ("198.19.1.1", 1214)])


class Ipv6LabSelfTest(unittest.TestCase):
    """Root only: with no firewall in gw, the client gets through over IPv6, and the web and
    DNS answer over both families."""

    def setUp(self) -> None:
        need_root()

    def test_simulator_breaks_through_an_open_gateway_over_ipv6(self) -> None:
        lab = Lab(peers=4)
        self.addCleanup(lab.teardown)
        lab.setup()
        lab.start_web()
        lab.start_dns({"www.example.org": ["198.19.0.80", v6("198.19.0.80")]})
        lab.start_peers(duration=60)
        cache = lab.write_peers_file("cache", lab.peers6[:3])
        report = lab.workdir / "rogue.json"
        client = [sys.executable, str(FTCLIENT), "--peers-file", str(cache), "--scale", "0.1",
                  f"--hidden-peer=[{lab.peers6[3][0]}]:1214", "--report", str(report)]  # fmt: skip
        done = lab.run("rogue", client, capture_output=True, text=True)
        self.assertEqual(done.returncode, 0, done.stderr)
        result = json.loads(report.read_text())
        self.assertEqual(result["own"], "[2001:2:0:1::10]:1214")
        self.assertEqual(result["pongs_received"], 3)
        self.assertEqual(result["connects_succeeded"]["1"], 3)
        self.assertTrue(any(b["hidden"] for b in result["breakthroughs"]))
        self.assertIn("src=[2001:2:0:1::10]:1214 name=KaZaA", lab.read_log("ftpeers.log"))
        for host in ("rogue", "user"):
            for url in ("http://198.19.0.80/", "http://[2001:2:0:1000::80]/"):
                web = lab.run(host, ["curl", "-sS", "-g", "-m", "5", url], capture_output=True)
                self.assertEqual(web.returncode, 0, (host, url, web.stderr))
        dig = ["dig", "+short", "+time=2", "+tries=2", "@2001:2:0:1000::53", "www.example.org"]
        for record, answer in (("A", "198.19.0.80"), ("AAAA", "2001:2:0:1000::80")):
            done = lab.run("user", [*dig, record], capture_output=True, text=True)
            self.assertEqual(done.stdout.split(), [answer], done.stderr)
