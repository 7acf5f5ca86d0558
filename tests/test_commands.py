"""The control port's commands (``p2pwall.commands``): each one, over a session, with the state
it reads and changes."""

from __future__ import annotations

from pathlib import Path

from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase

from p2pwall import __version__
from p2pwall.allow import OPTION, parse_network
from p2pwall.commands import Controller, parse_queue_stats, read_queue_stats
from p2pwall.control import ControlFactory
from p2pwall.packet import Hook, decode
from p2pwall.store import HEADER, StoreFile
from p2pwall.tables import ANY_CLIENT, ANY_PORT, BlockTable
from p2pwall.testing import ORIGINS, FakeProbe, packed, tcp, udp

from .control_support import (
    CLIENT,
    FIXTURES,
    NOTHING_TO_RELOAD,
    NOW,
    NOW_ISO,
    PEER,
    QUEUE_TEXT,
    ControlTestCase,
    Session,
)


class BlockTests(ControlTestCase):
    def test_block_peer(self) -> None:
        self.assertEqual(self.command("block 203.0.113.5"), ["OK blocked 203.0.113.5"])
        self.assertEqual(self.engine.blocks.match(PEER, 1214, CLIENT, NOW).origin, "manual")
        self.assertIn((PEER, 0, b""), self.engine.blocks)

    def test_block_forms(self) -> None:
        cases = [
            ("block 203.0.113.5:1214", "OK blocked 203.0.113.5:1214", (PEER, 1214, b"")),
            (
                "block 203.0.113.5:1214 10.0.0.5",
                "OK blocked 203.0.113.5:1214 for client 10.0.0.5",
                (PEER, 1214, CLIENT),
            ),
            (
                "block 203.0.113.5 10.0.0.5",
                "OK blocked 203.0.113.5 for client 10.0.0.5",
                (PEER, 0, CLIENT),
            ),
            ("block 2001:db8::5", "OK blocked 2001:db8::5", (packed("2001:db8::5"), 0, b"")),
            ("block [2001:db8::6]", "OK blocked 2001:db8::6", (packed("2001:db8::6"), 0, b"")),
            (
                "block [2001:DB8::5]:65535 fd00::5",
                "OK blocked [2001:db8::5]:65535 for client fd00::5",
                (packed("2001:db8::5"), 65535, packed("fd00::5")),
            ),
            ("BLOCK 203.0.113.9:1", "OK blocked 203.0.113.9:1", (packed("203.0.113.9"), 1, b"")),
        ]
        for line, reply, key in cases:
            with self.subTest(line=line):
                self.assertEqual(self.command(line), [reply])
                self.assertIn(key, self.engine.blocks)
        self.assertEqual(len(self.engine.blocks), len(cases))

    def test_block_again_makes_a_learned_block_manual(self) -> None:
        self.engine.learn(PEER, 1214, b"", "fasttrack-udp")
        self.clock.advance(5)
        self.assertEqual(
            self.command("block 203.0.113.5:1214"), ["OK already blocked 203.0.113.5:1214"]
        )
        ((_key, block),) = self.engine.blocks.items()
        self.assertEqual((block.origin, block.seen), ("manual", NOW + 5))

    def test_block_table_full_of_manual_blocks(self) -> None:
        self.engine.blocks = BlockTable(10)
        for n in range(10):
            self.engine.block(packed(f"198.51.100.{n}"))
        before = self.snapshot()
        self.assertEqual(
            self.command("block 203.0.113.5"), ["ERR block table full (10 manual blocks)"]
        )
        self.assertEqual(self.snapshot(), before)

    def test_unblock(self) -> None:
        self.engine.block(PEER, 1214, CLIENT)
        self.engine.block(PEER, 1214)
        self.assertEqual(
            self.command("unblock 203.0.113.5:1214 10.0.0.5"),
            ["OK unblocked 203.0.113.5:1214 for client 10.0.0.5"],
        )
        self.assertEqual([key for key, _ in self.engine.blocks.items()], [(PEER, 1214, b"")])

    def test_unblock_missing_says_so(self) -> None:
        self.engine.block(PEER, 1214)
        before = self.snapshot()
        self.assertEqual(
            self.command("unblock 203.0.113.5:1215"), ["ERR not blocked: 203.0.113.5:1215"]
        )
        self.assertEqual(self.command("unblock 203.0.113.5"), ["ERR not blocked: 203.0.113.5"])
        self.assertEqual(self.snapshot(), before)

    def test_dump_blocks(self) -> None:
        self.assertEqual(self.command("dump-blocks"), ["OK 0 blocks"])
        self.engine.learn(PEER, 1214, b"", "dns", name="cache1.example.net")
        self.clock.advance(10)
        self.engine.block(packed("2001:db8::5"), 80, packed("fd00::5"))
        self.clock.advance(100)
        self.engine.blocks.match(PEER, 1214, CLIENT, self.clock.seconds())
        self.assertEqual(
            self.command("dump-blocks"),
            [
                f"2001:db8::5 80 fd00::5 manual {NOW + 10}"
                " first-seen=2023-11-14T22:13:30Z last-seen=2023-11-14T22:13:30Z",
                f"203.0.113.5 1214 * dns {NOW + 110} cache1.example.net"
                f" first-seen={NOW_ISO} last-seen=2023-11-14T22:15:10Z",
                "OK 2 blocks",
            ],
        )


class DumpFileTests(ControlTestCase):
    def test_dump_blocks_to_file_is_a_store_file(self) -> None:
        self.engine.block(PEER, 1214)
        path = self.dump_dir / "blocks"
        self.assertEqual(self.command("dump-blocks blocks"), [f"OK 1 blocks written to {path}"])
        self.assertEqual(path.read_text(), f"{HEADER}203.0.113.5 1214 * manual {NOW}\n")
        restored = BlockTable(10)
        self.assertEqual(StoreFile(path, 60, ORIGINS).load(restored, NOW), 1)
        self.assertIn((PEER, 1214, b""), restored)

    def test_dump_dns_names_to_file(self) -> None:
        self.names.update({"b.example.net", "a.example.net"})
        path = self.dump_dir / "names.txt"
        self.assertEqual(
            self.command("dump-dns-names names.txt"), [f"OK 2 names written to {path}"]
        )
        self.assertEqual(path.read_text(), "a.example.net\nb.example.net\n")

    def test_bad_file_names_are_refused(self) -> None:
        self.engine.block(PEER)
        before = self.snapshot()
        for name in ("../escape", "sub/file", "/etc/passwd", "..", ".", ".hidden", "a..b"):
            with self.subTest(name=name):
                self.assertEqual(
                    self.command(f"dump-blocks {name}"),
                    [f"ERR bad file name {name!r}: a plain name, no '/' or '..'"],
                )
        self.assertEqual(self.snapshot(), before)
        self.assertFalse(Path(self.dump_dir.parent, "escape").exists())

    def test_symlink_is_replaced_not_followed(self) -> None:
        victim = Path(self.mktemp())
        victim.write_text("precious\n")
        (self.dump_dir / "blocks").symlink_to(victim.resolve())
        self.engine.block(PEER)
        self.assertEqual(
            self.command("dump-blocks blocks"),
            [f"OK 1 blocks written to {self.dump_dir / 'blocks'}"],
        )
        self.assertEqual(victim.read_text(), "precious\n")
        self.assertFalse((self.dump_dir / "blocks").is_symlink())
        self.assertIn(f"203.0.113.5 * * manual {NOW}", (self.dump_dir / "blocks").read_text())

    def test_no_dump_dir_configured(self) -> None:
        session = Session(ControlFactory(Controller(self.engine, names=self.names)))
        self.assertEqual(
            session.command("dump-blocks x"), ["ERR no dump directory configured (--dump-dir)"]
        )
        self.assertEqual(
            session.command("dump-dns-names x"),
            ["ERR no dump directory configured (--dump-dir)"],
        )

    def test_write_failure_is_an_error(self) -> None:
        missing = self.dump_dir / "gone"
        session = Session(ControlFactory(Controller(self.engine, dump_dir=missing)))
        self.assertEqual(
            session.command("dump-blocks x"),
            [f"ERR cannot write {missing / 'x'}: No such file or directory"],
        )


class DnsNameTests(ControlTestCase):
    def test_ban_normalizes(self) -> None:
        self.assertEqual(
            self.command("ban-dns-name Cache1.Example.NET."), ["OK banned cache1.example.net"]
        )
        self.assertEqual(self.names, {"cache1.example.net"})
        self.assertEqual(
            self.command("ban-dns-name cache1.example.net"),
            ["OK already banned cache1.example.net"],
        )
        self.assertEqual(self.names, {"cache1.example.net"})

    def test_unban(self) -> None:
        self.names.update({"a.example.net", "b.example.net"})
        self.assertEqual(
            self.command("unban-dns-name A.example.net"), ["OK unbanned a.example.net"]
        )
        self.assertEqual(self.names, {"b.example.net"})
        self.assertEqual(
            self.command("unban-dns-name a.example.net"), ["ERR not banned: a.example.net"]
        )
        self.assertEqual(self.names, {"b.example.net"})

    def test_dump_dns_names(self) -> None:
        self.assertEqual(self.command("dump-dns-names"), ["OK 0 names"])
        self.names.update({"z.example.net", "a.example.org"})
        self.assertEqual(
            self.command("dump-dns-names"), ["a.example.org", "z.example.net", "OK 2 names"]
        )

    def test_bad_names(self) -> None:
        self.names.add("a.example.net")
        before = self.snapshot()
        for name in ("203.0.113.5", "localhost", "a.example.net:80", "-x.example.net", "a..b.net"):
            with self.subTest(name=name):
                self.assertEqual(
                    self.command(f"ban-dns-name {name}"),
                    [f"ERR bad DNS name {name!r}: expected a host name like a.example.com"],
                )
        self.assertEqual(self.snapshot(), before)

    def test_without_a_name_set(self) -> None:
        session = Session(ControlFactory(Controller(self.engine)))
        for line in (
            "ban-dns-name a.example.net",
            "unban-dns-name a.example.net",
            "dump-dns-names",
        ):
            with self.subTest(line=line):
                self.assertEqual(session.command(line), ["ERR DNS name banning is not available"])


class ModeAndStateTests(ControlTestCase):
    def test_accept_all(self) -> None:
        self.assertEqual(self.command("accept-all"), ["OK accept-all 0"])
        self.assertEqual(self.command("accept-all 1"), ["OK accept-all 1"])
        self.assertTrue(self.engine.accept_all)
        self.assertEqual(self.command("accept-all"), ["OK accept-all 1"])
        self.assertEqual(self.command("accept-all 0"), ["OK accept-all 0"])
        self.assertFalse(self.engine.accept_all)

    def test_clients(self) -> None:
        self.assertEqual(self.command("clients"), ["OK 0 clients"])
        self.engine.lock(CLIENT, "test")
        self.engine.probe_with(CLIENT, FakeProbe(1214, 3000))
        self.engine.lock(packed("fd00::7"), "test")
        self.clock.advance(60)
        self.engine.tick()  # half the 120 s lock has passed: the hello is replayed as a probe
        self.assertTrue(  # the client's reply, to the port the probe came from
            self.engine.probe_answered(
                decode(udp("10.0.0.5", "198.18.0.1", 1214, 3000, b"probe 1")), "test"
            )
        )
        self.clock.advance(20)
        self.assertEqual(
            self.command("clients"),
            [
                f"10.0.0.5 locked left=100 since={NOW} last-probe={NOW + 60} probes-sent=1"
                f" probes-answered=1 since-utc={NOW_ISO} until-utc=2023-11-14T22:16:20Z"
                " last-probe-utc=2023-11-14T22:14:20Z",
                f"fd00::7 locked left=40 since={NOW} last-probe=- probes-sent=0 probes-answered=0"
                f" since-utc={NOW_ISO} until-utc=2023-11-14T22:15:20Z last-probe-utc=-",
                "OK 2 clients",
            ],
        )

    def test_stats(self) -> None:
        self.engine.learn(PEER, 0, b"", "fasttrack-udp")
        self.engine.verdict(decode(tcp("10.0.0.5", "203.0.113.5", 4000, 1214)), Hook.FORWARD)
        self.engine.verdict(decode(udp("10.0.0.5", "198.51.100.1", 53, 53)), Hook.FORWARD)
        self.engine.stats["zz_detector"] = 3
        self.clock.advance(75.5)
        self.assertEqual(
            self.command("stats"),
            [
                f"version {__version__}",
                "uptime 75",
                "packets 2",
                "accept_tcp 0",
                "accept_udp 1",
                "drop_tcp 1",
                "drop_udp 0",
                "accept_all 0",
                "spoofs 0",
                "probes_sent 0",
                "probes_answered 0",
                "peers_learned 1",
                "clients_locked 1",
                "clients_released 0",
                "zz_detector 3",
                "accept_all_mode 0",
                "dry_run_mode 0",
                "allowed_networks 0",
                "blocks 1",
                "blocks_cap 1000",
                "blocks_evicted 0",
                "clients 1",
                "clients_cap 100",
                "clients_evicted 0",
                "queue_total 17",
                "queue_dropped 412",
                "queue_user_dropped 9",
                "reader_errors 2",
                "reader_undecoded 5",
                "reader_cut 3",
                "reader_enobufs 1",
                "reader_refused 4",
                "OK stats",
            ],
        )

    def test_stats_without_queue(self) -> None:
        lines = Session(ControlFactory(Controller(self.engine))).command("stats")
        self.assertEqual(
            lines[-9:],
            [
                "queue_total -",
                "queue_dropped -",
                "queue_user_dropped -",
                "reader_errors -",
                "reader_undecoded -",
                "reader_cut -",
                "reader_enobufs -",
                "reader_refused -",
                "OK stats",
            ],
        )

    def test_stats_before_the_reader_exists(self) -> None:
        factory = ControlFactory(Controller(self.engine, reader_stats=lambda: None))
        lines = Session(factory).command("stats")
        self.assertEqual(
            lines[-6:-1],
            [
                "reader_errors -",
                "reader_undecoded -",
                "reader_cut -",
                "reader_enobufs -",
                "reader_refused -",
            ],
        )

    def test_reload(self) -> None:
        self.reloads += [[], ["dns.conf:3: bad regex 'x('", "OK\nERR trick"]]
        self.assertEqual(self.command("reload"), ["OK reloaded, 0 problems"])
        self.assertEqual(
            self.command("reload"),
            [
                "problem dns.conf:3: bad regex 'x('",
                "problem OK ERR trick",
                "OK reloaded, 2 problems",
            ],
        )
        self.assertEqual(self.reloads, [])

    def test_a_failing_feature_is_an_error_not_a_hangup(self) -> None:
        def broken() -> list[str]:
            raise RuntimeError("patterns exploded")

        session = Session(ControlFactory(Controller(self.engine, reload=broken)))
        self.assertEqual(session.command("reload"), ["ERR internal error (see the daemon log)"])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(session.command("ping"), ["OK pong"])

    def test_reload_without_patterns_file(self) -> None:
        self.reloads.append(None)
        self.assertEqual(self.command("reload"), [NOTHING_TO_RELOAD])
        session = Session(ControlFactory(Controller(self.engine)))
        self.assertEqual(session.command("reload"), [NOTHING_TO_RELOAD])


class QueueStatsTests(SynchronousTestCase):
    def test_parse(self) -> None:
        self.assertEqual(
            parse_queue_stats(QUEUE_TEXT, 3),
            {"queue_total": 17, "queue_dropped": 412, "queue_user_dropped": 9},
        )
        self.assertEqual(parse_queue_stats(QUEUE_TEXT, 12)["queue_dropped"], 5)
        self.assertIsNone(parse_queue_stats(QUEUE_TEXT, 1))
        self.assertIsNone(parse_queue_stats("3 1 x 2 65531 0 0 1 1\n", 3))
        self.assertIsNone(parse_queue_stats("", 0))

    def test_read(self) -> None:
        self.assertEqual(read_queue_stats(0, str(FIXTURES / "nfnetlink_queue"))["queue_total"], 2)
        self.assertIsNone(read_queue_stats(0, str(FIXTURES / "missing")))


GREEN = "10.0.0.5"
OTHER_GREEN = "10.0.0.6"
HELLO = b"\x27\x00\x00\x00\x29\x80KaZaA\x00"


class ExplainTests(ControlTestCase):
    def hello(self, src: str, mac: bytes | None = None) -> None:
        packet = decode(udp(src, "203.0.113.5", 1214, 2000, HELLO))
        packet.mac = mac
        self.engine.verdict(packet, Hook.FORWARD)

    def test_a_locked_host_with_its_evidence_probes_and_blocks(self) -> None:
        self.hello(GREEN)
        self.clock.advance(60)
        self.engine.tick()  # the probe
        pong = b"\x28\0\0\0\0pong"
        self.engine.probe_answered(decode(udp(GREEN, "198.18.0.1", 1214, 2000, pong)), "fasttrack")
        self.assertEqual(
            self.command(f"explain {GREEN}"),
            [
                f"address {GREEN} green allowed=no",
                "lock locked until=2023-11-14T22:16:20Z left=120 since=" + NOW_ISO,
                f'identified at={NOW_ISO} protocol=FastTrack reason="FastTrack hello"'
                f' packet="UDP {GREEN}:1214 -> 203.0.113.5:2000"',
                'renewed at=2023-11-14T22:14:20Z protocol=FastTrack reason="answered a probe"'
                f' packet="UDP {GREEN}:1214 -> 198.18.0.1:2000"',
                "probes sent=1 answered=1 last=2023-11-14T22:14:20Z",
                f"block 203.0.113.5:2000 client={GREEN} origin=fasttrack-udp revealed-by={GREEN}"
                f" first-seen={NOW_ISO} last-seen={NOW_ISO}",
                f"OK {GREEN}: locked until 2023-11-14T22:16:20Z, 1 blocks",
            ],
        )

    def test_a_green_host_that_is_not_locked(self) -> None:
        self.assertEqual(
            self.command(f"explain {OTHER_GREEN}"),
            [f"address {OTHER_GREEN} green allowed=no", f"OK {OTHER_GREEN}: not locked, 0 blocks"],
        )

    def test_an_outside_address_with_every_block_covering_it(self) -> None:
        self.engine.neighbours = None
        mac1, mac2 = b"\x02\x00\x00\x00\x00\x01", b"\x02\x00\x00\x00\x00\x02"
        self.hello(GREEN, mac1)
        self.clock.advance(30)
        self.hello(OTHER_GREEN, mac2)
        self.engine.learn(PEER, ANY_PORT, ANY_CLIENT, "dns", name="www.winmx.com")
        self.engine.block(PEER, 6699)
        self.engine.block(packed("203.0.113.99"))
        later = "2023-11-14T22:13:50Z"
        self.assertEqual(
            self.command("explain 203.0.113.5"),
            [
                "address 203.0.113.5 outside allowed=no",
                f"block 203.0.113.5:2000 client={GREEN} origin=fasttrack-udp revealed-by={GREEN}"
                f" first-seen={NOW_ISO} last-seen={NOW_ISO}",
                f"block 203.0.113.5:2000 client={OTHER_GREEN} origin=fasttrack-udp"
                f" revealed-by={OTHER_GREEN} first-seen={later} last-seen={later}",
                f"block 203.0.113.5:2000 client=* origin=fasttrack-udp"
                f" revealed-by={GREEN},{OTHER_GREEN} first-seen={later} last-seen={later}",
                "block 203.0.113.5 client=* origin=dns name=www.winmx.com"
                f" first-seen={later} last-seen={later}",
                f"block 203.0.113.5:6699 client=* origin=manual first-seen={later}"
                f" last-seen={later}",
                "OK 203.0.113.5: 5 blocks",
            ],
        )

    def test_a_block_for_every_host_read_from_the_store_has_unknown_revealers(self) -> None:
        self.engine.blocks.add(PEER, 2000, ANY_CLIENT, "fasttrack-udp", NOW)
        self.assertIn("revealed-by=unknown", self.command("explain 203.0.113.5")[1])

    def test_an_allowed_address_says_which_network_allows_it(self) -> None:
        self.command("allow 203.0.113.0/24")
        self.assertEqual(
            self.command("explain 203.0.113.5"),
            ["address 203.0.113.5 outside allowed=203.0.113.0/24", "OK 203.0.113.5: 0 blocks"],
        )

    def test_the_blocks_are_found_by_the_work_runner(self) -> None:
        pending = []

        def run(work, *args) -> defer.Deferred:
            pending.append((work, args))
            return defer.succeed(work(*args))

        self.engine.block(PEER)
        Session(ControlFactory(Controller(self.engine, run=run))).command("explain 203.0.113.5")
        self.assertEqual(len(pending), 1)

    def test_bad_addresses(self) -> None:
        self.assertEqual(
            self.command("explain 203.0.113.5:80"),
            ["ERR bad address '203.0.113.5:80': an address, without a port"],
        )
        self.assertTrue(self.command("explain bogus")[0].startswith("ERR bad address"))


class UnlockTests(ControlTestCase):
    def test_unlock_releases_now(self) -> None:
        self.engine.lock(CLIENT, "test")
        self.assertEqual(self.command("unlock 10.0.0.5"), ["OK unlocked 10.0.0.5"])
        self.assertIsNone(self.engine.clients.get(CLIENT))
        self.assertEqual(self.command("unlock 10.0.0.5"), ["ERR not locked: 10.0.0.5"])

    def test_unblock_of_a_locked_client_points_to_unlock(self) -> None:
        self.engine.lock(CLIENT, "test")
        self.assertEqual(
            self.command("unblock 10.0.0.5"),
            ["ERR not blocked: 10.0.0.5 (10.0.0.5 is a locked client: unlock frees it)"],
        )


class AllowTests(ControlTestCase):
    def test_allow_list_and_disallow(self) -> None:
        self.engine.allowed.add(parse_network("198.51.100.0/24"), OPTION)
        self.engine.lock(CLIENT, "test")
        self.assertEqual(
            self.command("allow 10.0.0.4/30"), ["OK allowed 10.0.0.4/30, 1 clients released"]
        )
        self.assertIsNone(self.engine.clients.get(CLIENT))
        self.assertEqual(self.command("allow 10.0.0.5/30"), ["OK already allowed 10.0.0.4/30"])
        self.assertEqual(
            self.command("allow"),
            ["198.51.100.0/24 option", "10.0.0.4/30 control", "OK 2 networks"],
        )
        self.assertEqual(self.command("disallow 10.0.0.4/30"), ["OK disallowed 10.0.0.4/30"])
        self.assertEqual(
            self.command("disallow 198.51.100.0/24"),
            ["OK disallowed 198.51.100.0/24 (given by --allow: allowed again at restart)"],
        )
        self.assertEqual(self.command("disallow 10.0.0.4/30"), ["ERR not allowed: 10.0.0.4/30"])
        self.assertEqual(
            self.command("allow 10.0.0.0/33"),
            ["ERR bad network '10.0.0.0/33': expected an address or CIDR"],
        )

    def test_allowed_networks_survive_a_reload(self) -> None:
        self.command("allow 10.0.0.4/30")
        self.reloads.append([])
        self.assertEqual(self.command("reload"), ["OK reloaded, 0 problems"])
        self.assertIn(CLIENT, self.engine.allowed)


class DryRunTests(ControlTestCase):
    def test_dry_run_switch(self) -> None:
        self.assertEqual(self.command("dry-run"), ["OK dry-run 0"])
        self.assertEqual(self.command("dry-run 1"), ["OK dry-run 1"])
        self.assertTrue(self.engine.dry_run)
        self.assertIn("dry_run_mode 1", self.command("stats"))
        self.assertEqual(self.command("dry-run 2"), ["ERR dry-run takes 0 or 1"])
