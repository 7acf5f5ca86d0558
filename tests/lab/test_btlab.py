"""The BitTorrent lab's pure helpers: torrents, magnets, egress guard, command lines."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import struct
import xmlrpc.client
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from lab import btclients, btlab
from lab.btclients import Progress
from lab.netlab import LabError
from p2pwall.bencode import decode


class TorrentTests(SynchronousTestCase):
    def payload(self, size: int) -> Path:
        path = Path(self.mktemp())
        path.write_bytes(bytes(range(256)) * (size // 256) + b"\x07" * (size % 256))
        return path

    def test_pieces_and_info_hash(self) -> None:
        path = self.payload(40_000)
        torrent = btlab.make_torrent(path, [["http://198.19.0.2:6969/announce"]], 16384)
        meta = decode(torrent.data)
        info = meta[b"info"]
        raw = path.read_bytes()
        chunks = [raw[i : i + 16384] for i in range(0, len(raw), 16384)]
        self.assertEqual(len(chunks), 3)
        self.assertEqual(info[b"pieces"], b"".join(hashlib.sha1(c).digest() for c in chunks))
        self.assertEqual((info[b"length"], info[b"name"]), (40_000, path.name.encode()))
        start = torrent.data.index(b"4:infod") + len(b"4:info")
        self.assertEqual(torrent.info_hash, hashlib.sha1(torrent.data[start:-1]).hexdigest())
        self.assertEqual(meta[b"announce"], b"http://198.19.0.2:6969/announce")

    def test_tiers_change_the_file_not_the_swarm(self) -> None:
        path = self.payload(1000)
        urls = btlab.tracker_urls()
        both = btlab.make_torrent(path, [[urls["http"]], [urls["udp"]]])
        udp = btlab.make_torrent(path, [[urls["udp"]]])
        bare = btlab.make_torrent(path, [])
        self.assertEqual(len({both.info_hash, udp.info_hash, bare.info_hash}), 1)
        self.assertEqual(
            decode(both.data)[b"announce-list"], [[urls["http"].encode()], [urls["udp"].encode()]]
        )
        self.assertNotIn(b"announce", decode(bare.data))

    def test_piece_length_must_be_a_power_of_two(self) -> None:
        self.assertRaises(LabError, btlab.make_torrent, self.payload(10), [], 1000)

    def test_tracker_outside_the_lab_refused(self) -> None:
        self.assertRaises(LabError, btlab.tracker_urls, "10.0.0.1")


class MagnetTests(SynchronousTestCase):
    def test_bare_magnet_is_dht_only(self) -> None:
        self.assertEqual(btlab.magnet("ab" * 20), "magnet:?xt=urn:btih:" + "ab" * 20)

    def test_name_and_trackers_are_escaped(self) -> None:
        link = btlab.magnet("00" * 20, "a b", ["udp://198.19.0.2:6969/announce"])
        self.assertEqual(
            link,
            "magnet:?xt=urn:btih:" + "00" * 20 + "&dn=a%20b&tr=udp%3A%2F%2F198.19.0.2%3A6969"
            "%2Fannounce",
        )

    def test_bad_hash_refused(self) -> None:
        for bad in ("AB" * 20, "ab" * 19, "zz" * 20):
            self.assertRaises(LabError, btlab.magnet, bad)


class GuardTests(SynchronousTestCase):
    def test_ruleset_accepts_only_the_lab_loopback_and_multicast(self) -> None:
        rules = btlab.guard_ruleset()
        accepts = [line.strip() for line in rules.splitlines() if line.strip().endswith("accept")]
        self.assertEqual(
            accepts,
            [
                'oif "lo" accept',
                "ip daddr 198.18.0.0/15 accept",
                "ip daddr 224.0.0.0/4 accept",
            ],
        )
        self.assertEqual(rules.strip().splitlines()[-3].strip(), "counter reject")

    def test_rejects_read_from_the_listing(self) -> None:
        listing = (
            "table inet p2pbguard {\n\tchain out {\n\t\tip daddr 224.0.0.0/4 accept\n"
            "\t\tcounter packets 12 bytes 720 reject\n\t}\n}\n"
        )
        self.assertEqual(btlab.guard_rejects(listing), 12)
        self.assertRaises(LabError, btlab.guard_rejects, "table inet p2pbguard {}")


class ConfigTests(SynchronousTestCase):
    def test_hosts_file_maps_every_router_name_to_the_lab(self) -> None:
        lines = btlab.hosts_file().splitlines()
        self.assertEqual(lines[0], "127.0.0.1 localhost")
        self.assertEqual(lines[1:], [f"198.19.0.21 {name}" for name in btlab.ROUTER_NAMES])
        self.assertRaises(LabError, btlab.hosts_file, "8.8.8.8")

    def test_resolver_is_in_the_lab(self) -> None:
        self.assertIn("nameserver 198.19.0.53\n", btlab.resolv_conf())

    def test_aria2_leecher_requires_encryption_and_stops(self) -> None:
        argv = btlab.aria2_leech_argv(Path("/w/t.torrent"), Path("/w/d"), 90)
        for flag in (
            "--bt-require-crypto=true",
            "--bt-min-crypto-level=arc4",
            "--stop=90",
            "--seed-time=0",
            "--dht-entry-point=198.19.0.21:6881",
        ):
            self.assertIn(flag, argv)
        self.assertEqual(argv[-1], "/w/t.torrent")

    def test_aria2_seeder_seeds_until_stopped(self) -> None:
        argv = btlab.aria2_seed_argv(Path("/w/t.torrent"), Path("/w/d"), 600)
        self.assertIn("--seed-ratio=0.0", argv)
        self.assertIn("--stop=600", argv)
        self.assertNotIn("--bt-require-crypto=true", argv)

    def test_btnode_command_lines(self) -> None:
        argv = btlab.btnode_argv(
            "dht", ["198.19.1.1:6881", "198.19.1.2:6881"], 60, "198.19.0.21:6881"
        )
        self.assertEqual(
            argv[:5], [btlab.SYSTEM_PYTHON, str(btlab.BTNODE), "dht", "--seconds", "60"]
        )
        self.assertEqual(argv.count("--bind"), 2)
        leech = btlab.btnode_argv("leech", ["198.18.1.10:6881"], 5, None, Path("t"), Path("d"))
        self.assertEqual(leech[-4:], ["--torrent", "t", "--dir", "d"])

    def test_btnode_checks_its_arguments(self) -> None:
        self.assertRaises(LabError, btlab.btnode_argv, "fly", ["198.19.1.1:1"], 1)
        self.assertRaises(LabError, btlab.btnode_argv, "dht", [], 1)
        self.assertRaises(LabError, btlab.btnode_argv, "dht", ["192.168.1.1:6881"], 1)
        self.assertRaises(LabError, btlab.btnode_argv, "seed", ["198.19.1.1:6881"], 1)

    def test_leechers_without_dht(self) -> None:
        argv = btlab.aria2_leech_argv(Path("/w/t"), Path("/w/d"), 90, dht=False)
        for flag in ("--enable-dht=false", "--enable-peer-exchange=false", "--bt-enable-lpd=false"):
            self.assertIn(flag, argv)
        self.assertIn("--enable-dht=true", btlab.aria2_leech_argv(Path("/t"), Path("/d"), 9))
        leech = btlab.btnode_argv("leech", ["198.18.1.11:6881"], 5, None, "t", Path("d"), False)
        self.assertEqual(leech[-1], "--no-dht")
        self.assertNotIn("--no-dht", btlab.btnode_argv("dht", ["198.19.1.1:6881"], 5))

    def test_tls_front_and_its_certificate(self) -> None:
        argv = btlab.tls_front_argv(Path("/w/c"), Path("/w/k"), 600)
        self.assertEqual(argv[:3], ["timeout", "600", "socat"])
        self.assertTrue(argv[3].startswith("OPENSSL-LISTEN:443,bind=198.19.0.2,"))
        self.assertIn("cert=/w/c,key=/w/k", argv[3])
        self.assertEqual(argv[4], "TCP:198.19.0.2:6969")
        cert = btlab.self_signed_argv(Path("/w/c"), Path("/w/k"))
        self.assertEqual(cert[cert.index("-addext") + 1], "subjectAltName=IP:198.19.0.2")
        self.assertRaises(LabError, btlab.tls_front_argv, Path("c"), Path("k"), 1, "10.0.0.1")

    def test_user_dns_answers_one_lab_name(self) -> None:
        argv = btlab.dnsmasq_argv(Path("/w"))
        self.assertIn("--listen-address=198.19.0.80", argv)
        self.assertIn("--host-record=www.lab.test,198.19.0.80", argv)
        self.assertIn("--no-resolv", argv)

    def test_libtorrent_report(self) -> None:
        line = '{"complete": false, "bytes": 262144, "received": 300000, "wanted": 1048576, '
        output = "log noise\n" + line + '"pieces": 1, "seconds": 5}\n'
        self.assertEqual(btlab.btnode_progress(output), Progress(0.25, 300000, 1))
        self.assertEqual(btlab.btnode_progress("Traceback ...\n"), Progress())
        self.assertEqual(btlab.btnode_progress('{"bytes": 1}'), Progress())

    def test_opentracker_serves_http_and_udp_on_the_lab_address(self) -> None:
        argv = btlab.opentracker_argv("w.txt")
        self.assertEqual(argv[argv.index("-i") + 1], "198.19.0.2")
        self.assertEqual((argv[argv.index("-p") + 1], argv[argv.index("-P") + 1]), ("6969", "6969"))
        self.assertEqual(argv[argv.index("-w") + 1], "w.txt")


class ArgumentTests(SynchronousTestCase):
    def test_clients(self) -> None:
        self.assertEqual(btlab.parse_clients(" libtorrent,aria2 "), ["libtorrent", "aria2"])
        for bad in ("", "aria2,aria2", "kazaa", ","):
            self.assertRaises(LabError, btlab.parse_clients, bad)

    def test_dht_nodes(self) -> None:
        self.assertEqual(btlab.dht_node_addrs(2), ["198.19.1.1", "198.19.1.2"])
        self.assertRaises(LabError, btlab.dht_node_addrs, btlab.MAX_DHT_NODES + 1)

    def test_lab_arguments(self) -> None:
        self.assertRaises(LabError, btlab.BtLab, mib=0)
        self.assertRaises(LabError, btlab.BtLab, run_id="XYZ")
        lab = btlab.BtLab(["aria2"], dht_nodes=0, run_id="abc123")
        self.assertEqual(
            lab.hosts,
            ["gw", "tracker", "seedlt", "seedtr", "seedar", "dhtr", "svc", "g-ar", "user"],
        )
        self.assertEqual(lab.green_hosts, {"g-ar": "198.18.1.10", "user": "198.18.1.30"})
        self.assertEqual((lab.ns("gw"), lab.green), ("p2pbabc123-gw", {"aria2": "198.18.1.10"}))
        lab.teardown()

    def test_bad_client_is_a_one_line_error(self) -> None:
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            code = btlab.main(["control", "--clients", "kazaa"])
        self.assertEqual(code, 2)
        self.assertEqual(err.getvalue().count("\n"), 1)
        self.assertTrue(err.getvalue().startswith("btlab: clients must be"))


class DaemonClientConfigTests(SynchronousTestCase):
    """The daemon clients' configuration requires encryption and stays in the lab."""

    def test_transmission_settings(self) -> None:
        settings = json.loads(btclients.transmission_settings(Path("/w/d"), "198.18.1.12"))
        self.assertEqual(settings["encryption"], 2)
        self.assertEqual(
            (settings["rpc-bind-address"], settings["port-forwarding-enabled"]),
            ("127.0.0.1", False),
        )
        self.assertEqual(
            (settings["download-dir"], settings["bind-address-ipv4"]), ("/w/d", "198.18.1.12")
        )
        self.assertRaises(LabError, btclients.transmission_settings, Path("/w"), "10.1.1.1")
        self.assertEqual(btclients.dht_bootstrap("198.19.0.21", 6881), "198.19.0.21 6881\n")

    def test_transmission_seeder_prefers_encryption(self) -> None:
        settings = json.loads(btclients.transmission_settings(Path("/w"), "198.19.0.12", 1))
        self.assertEqual(settings["encryption"], 1)
        self.assertRaises(LabError, btclients.transmission_settings, Path("/w"), "198.19.0.12", 3)

    def test_transmission_progress(self) -> None:
        info = "NAME\n  Name: payload.bin\n  Percent Done: 37.5%\n  ETA: 3 seconds\n"
        self.assertEqual(btclients.transmission_progress(info), 0.375)
        self.assertEqual(btclients.transmission_progress("Percent Done: 100%"), 1.0)
        self.assertEqual(btclients.transmission_progress(""), 0.0)

    def test_qbittorrent_conf(self) -> None:
        conf = btclients.qbittorrent_conf(Path("/w/d")).splitlines()
        for line in (
            "Session\\Encryption=1",
            "Accepted=true",
            "WebUI\\Address=127.0.0.1",
            "Connection\\ResolvePeerCountries=false",
            "PortForwardingEnabled=false",
            "Session\\DefaultSavePath=/w/d",
        ):
            self.assertIn(line, conf)

    def test_qbittorrent_progress(self) -> None:
        properties = '{"pieces_have": 20, "pieces_num": 80, "total_downloaded": 5300000}'
        self.assertEqual(btclients.qbittorrent_progress(properties), Progress(0.25, 5300000, 20))
        magnet = '{"pieces_have": 0, "pieces_num": -1, "total_downloaded": 0}'
        self.assertEqual(btclients.qbittorrent_progress(magnet), Progress())
        for bad in ("", "[]", "{}", "[1]", "Not Found", '{"pieces_have": "x"}'):
            self.assertEqual(btclients.qbittorrent_progress(bad), Progress())

    def test_without_dht(self) -> None:
        settings = json.loads(btclients.transmission_settings(Path("/w"), "198.18.1.12", dht=False))
        self.assertEqual(
            [settings[key] for key in ("dht-enabled", "pex-enabled", "lpd-enabled")], [False] * 3
        )
        conf = btclients.qbittorrent_conf(Path("/w"), dht=False).splitlines()
        for line in ("Session\\DHTEnabled=false", "Session\\PeXEnabled=false"):
            self.assertIn(line, conf)
        rc = btclients.rtorrent_rc(Path("/w"), Path("/t"), Path("/s"), "198.19.0.21:6881", False)
        self.assertIn("dht.mode.set = disable\n", rc)
        self.assertNotIn("dht_boot", rc)

    def test_transmission_rpc_progress(self) -> None:
        pieces = base64.b64encode(b"\xff\x80" + bytes(8)).decode()
        reply = json.dumps(
            {
                "arguments": {
                    "torrents": [
                        {"percentDone": 0.1125, "downloadedEver": 2400000, "pieces": pieces}
                    ]
                },
                "result": "success",
            }
        )
        self.assertEqual(btclients.transmission_rpc_progress(reply), Progress(0.1125, 2400000, 9))
        for bad in ("", '{"arguments": {"torrents": []}}', '{"result": "x"}', "<h1>409</h1>"):
            self.assertEqual(btclients.transmission_rpc_progress(bad), Progress())
        broken = reply.replace(pieces, "!!")
        self.assertEqual(btclients.transmission_rpc_progress(broken), Progress())

    def test_aria2_control_file(self) -> None:
        """Version 1, big-endian: 3 of 80 pieces, one piece in flight with 2 blocks."""
        info_hash = bytes(20)
        bitfield = b"\xe0" + bytes(9)
        control = (
            struct.pack(">HII", 1, 0, len(info_hash))
            + info_hash
            + struct.pack(">IQQI", 262144, 80 * 262144, 0, len(bitfield))
            + bitfield
            + struct.pack(">I", 1)
            + struct.pack(">III", 5, 262144, 2)
            + b"\xc0\x00"
        )
        done = 3 * 262144 + 2 * btclients.ARIA2_BLOCK
        self.assertEqual(btclients.aria2_progress(control), Progress(done / (80 * 262144), done, 3))
        self.assertEqual(btclients.aria2_progress(control[:40]), Progress())
        self.assertEqual(btclients.aria2_progress(b"\x00\x00" + control[2:]), Progress())

    def test_rtorrent_rc(self) -> None:
        rc = btclients.rtorrent_rc(Path("/w/d"), Path("/w/t"), Path("/w/s"), "198.19.0.21:6881")
        self.assertIn("protocol.encryption.set = require,require_RC4,", rc)
        self.assertIn('schedule2 = dht_boot,1,0,"dht.add_node=198.19.0.21:6881"\n', rc)
        self.assertIn("network.scgi.open_local = /w/s\n", rc)
        self.assertRaises(
            LabError, btclients.rtorrent_rc, Path("/"), Path("/"), Path("/"), "1.1.1.1:1"
        )

    def test_scgi_request_is_a_netstring_then_the_body(self) -> None:
        self.assertEqual(
            btclients.scgi_request(b"<x/>"),
            b"24:CONTENT_LENGTH\x004\x00SCGI\x001\x00,<x/>",
        )

    def test_rtorrent_progress_counts_only_the_payload(self) -> None:
        def reply(rows: list) -> bytes:
            body = xmlrpc.client.dumps((rows,), methodresponse=True).encode()
            return b"Status: 200 OK\r\nContent-Type: text/xml\r\n\r\n" + body

        self.assertEqual(
            btclients.rtorrent_progress(reply([[5, 20, 1, 7]]), 20), Progress(0.25, 7, 1)
        )
        # A magnet's metadata download, complete, next to the payload not yet started.
        metadata = reply([[900, 900, 1, 900], [0, 20, 0, 0]])
        self.assertEqual(btclients.rtorrent_progress(metadata, 20), Progress(0.0, 0, 0))
        self.assertEqual(btclients.rtorrent_progress(reply([[900, 900, 1, 900]]), 20), Progress())
        self.assertEqual(btclients.rtorrent_progress(reply([]), 20), Progress())
        self.assertEqual(btclients.rtorrent_progress(reply([[5, 20]]), 20), Progress())
        self.assertEqual(btclients.rtorrent_progress(b"garbage", 20), Progress())

    def test_green_hosts_fit_interface_names(self) -> None:
        for client in btlab.CLIENTS:
            self.assertLessEqual(len("v-" + btlab.BtLab.green_host(client)), 15)
