"""ftwall's behaviour, packet by packet, under a fake clock."""

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from p2pwall.allow import AllowList, parse_network
from p2pwall.detectors.fasttrack import FastTrackDetector, build_pong, parse_hello
from p2pwall.engine import TICK_ACTIONS
from p2pwall.interfaces import IClientObserver, IDetector
from p2pwall.neighbours import KernelNeighbours
from p2pwall.packet import TCP, UDP, Hook, Verdict, decode
from p2pwall.tables import ANY_CLIENT, CorroboratedBlock
from p2pwall.testing import make_engine, packed, tcp, udp

ROGUE, USER = "198.18.1.10", "198.18.1.20"
PEER, PEER2, WEB = "198.19.1.1", "198.19.1.2", "198.19.0.80"
HELLO = b"\x27\x00\x00\x00\x29\x80KaZaA\x00"
PONG = build_pong(parse_hello(HELLO))
DROP, ACCEPT = Verdict.DROP, Verdict.ACCEPT


@implementer(IClientObserver)
class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, bytes]] = []

    def client_locked(self, addr: bytes) -> None:
        self.calls.append(("locked", addr))

    def client_released(self, addr: bytes) -> None:
        self.calls.append(("released", addr))


class EngineTestCase(SynchronousTestCase):
    time_lock = 120.0

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_000_000)
        self.engine = make_engine(self.clock, time_lock=self.time_lock)
        self.observer = Recorder()
        self.engine.observers.append(self.observer)

    def send(self, data: bytes, hook: Hook = Hook.FORWARD, mac: bytes | None = None) -> Verdict:
        packet = decode(data)
        assert packet is not None
        packet.mac = mac
        return self.engine.verdict(packet, hook)

    def hello(self, src: str = ROGUE, dst: str = PEER, sport: int = 1214, dport: int = 2000):
        return self.send(udp(src, dst, sport, dport, HELLO))

    def syn(self, src: str, dst: str, dport: int = 80) -> Verdict:
        return self.send(tcp(src, dst, 40000, dport))

    def wait(self, seconds: float, step: float = 1.0) -> None:
        for _ in range(int(seconds / step)):
            self.clock.advance(step)
            self.engine.tick()


class HelloTests(EngineTestCase):
    def test_hello_is_dropped_peer_learned_pong_spoofed_client_locked(self) -> None:
        self.assertEqual(self.hello(), DROP)
        self.assertIn((packed(PEER), 2000, packed(ROGUE)), self.engine.blocks)
        self.assertEqual(len(self.engine.blocks), 1, "the peer is blocked for its client only")
        self.assertEqual(
            self.engine.spoofer.sent, [(packed(PEER), 2000, packed(ROGUE), 1214, PONG)]
        )
        self.assertTrue(self.engine.clients.is_locked(packed(ROGUE), self.clock.seconds()))
        self.assertEqual(self.observer.calls, [("locked", packed(ROGUE))])
        events = self.engine.events
        self.assertEqual(
            events.of("p"), [f"peer {PEER}:2000 learned (fasttrack-udp) from client {ROGUE}"]
        )
        self.assertEqual(events.of("c"), [f"client {ROGUE} identified: FastTrack hello"])
        self.assertEqual(len(events.of("u")), 1)

    def test_peer_and_client_events_carry_their_fields_structured(self) -> None:
        """For JSON readers: addresses, ports and names as keys, not text fragments."""
        self.send(udp(ROGUE, PEER, 1214, 2000, HELLO), mac=b"\x02\x00\x00\x00\x00\x0a")
        (learned,) = [r for r in self.engine.events.records if r["p2pwall_class"] == "p"]
        self.assertEqual(
            {key: learned[key] for key in ("peer_addr", "peer_port", "blocked_for", "revealed_by")},
            {"peer_addr": PEER, "peer_port": 2000, "blocked_for": ROGUE, "revealed_by": ROGUE},
        )
        (identified,) = [r for r in self.engine.events.records if r["p2pwall_class"] == "c"]
        self.assertEqual(
            (identified["protocol"], identified["mac"], identified["peer"]),
            ("FastTrack", "02:00:00:00:00:0a", f"{PEER}:2000"),
        )

    def test_no_udp_block_accepts_hellos_without_spoofing(self) -> None:
        self.engine = make_engine(self.clock, detectors=[FastTrackDetector(no_udp_block=True)])
        self.assertEqual(self.hello(), ACCEPT)
        self.assertEqual(self.send(udp(ROGUE, PEER, 1214, 2000, b"\x2a1234")), ACCEPT)
        self.assertEqual(self.engine.spoofer.sent, [])
        self.assertIn((packed(PEER), 2000, packed(ROGUE)), self.engine.blocks)
        self.assertEqual(self.syn(ROGUE, PEER, 2000), DROP)

    def test_hello_from_outside_is_not_a_client(self) -> None:
        self.assertEqual(self.hello(src=PEER2, dst=ROGUE), ACCEPT)
        self.assertEqual(len(self.engine.blocks), 0)
        self.assertEqual(self.engine.spoofer.sent, [])

    def test_a_hello_flood_is_answered_within_the_spoof_budget(self) -> None:
        self.engine.max_spoofs = 5
        for port in range(2000, 2012):
            self.assertEqual(self.hello(dport=port), DROP)
        self.assertEqual(len(self.engine.spoofer.sent), 5)
        self.assertEqual(self.engine.stats["spoofs_skipped"], 7)
        self.assertEqual(len(self.engine.blocks), 12)
        self.clock.advance(1)
        self.hello(dport=3000)
        self.assertEqual(len(self.engine.spoofer.sent), 6)

    def test_hello_to_a_well_known_service_port_teaches_no_peer(self) -> None:
        self.assertEqual(self.hello(dst="198.19.0.53", dport=53), DROP)
        self.assertEqual(len(self.engine.blocks), 0)
        self.assertEqual(self.send(udp(USER, "198.19.0.53", 5000, 53, b"\x12\x34")), ACCEPT)
        self.assertIsNone(self.engine.clients.get(packed(USER)))
        self.assertEqual(self.hello(dst=PEER2, dport=80), DROP)
        self.assertIn((packed(PEER2), 80, packed(ROGUE)), self.engine.blocks)

    def test_a_client_that_greeted_only_a_service_port_is_locked_but_never_probed_from_it(
        self,
    ) -> None:
        """A probe comes from the greeted port; replies to the gateway's port 53 are never
        queued, so such a probe could not be answered."""
        self.hello(dst="198.19.0.53", dport=53)
        self.assertTrue(self.engine.clients.is_locked(packed(ROGUE), self.clock.seconds()))
        self.wait(61)
        self.assertEqual(self.engine.stats["probes_sent"], 0)

    def test_fasttrack_between_green_hosts_is_left_alone(self) -> None:
        self.assertEqual(self.hello(dst=USER), ACCEPT)
        download = b"GET /.hash=1234 HTTP/1.1\r\nX-Kazaa-Network: KaZaA\r\n\r\n"
        self.assertEqual(self.send(tcp(ROGUE, USER, 4000, 1214, "PA", download)), ACCEPT)
        self.assertEqual((len(self.engine.blocks), len(self.engine.clients)), (0, 0))
        self.assertEqual(self.engine.spoofer.sent, [])

    def test_ipv6_hello(self) -> None:
        self.assertEqual(self.hello(src="fd00::10", dst="2001:db8::1"), DROP)
        self.assertIn((packed("2001:db8::1"), 2000, packed("fd00::10")), self.engine.blocks)
        self.assertEqual(self.engine.spoofer.sent[0][2], packed("fd00::10"))


class KnownPeerTests(EngineTestCase):
    def test_udp_and_syn_to_known_peers_are_dropped_for_the_client_that_revealed_them(
        self,
    ) -> None:
        self.hello()
        self.assertEqual(self.send(udp(ROGUE, PEER, 1214, 2000, b"\x2a\x00\x00\x00\x01")), DROP)
        self.assertEqual(self.syn(ROGUE, PEER, 2000), DROP)
        self.assertEqual(self.syn(USER, PEER, 2000), ACCEPT, "one host's word is not enough")
        self.assertIsNone(self.engine.clients.get(packed(USER)))

    def test_known_peer_on_another_port_is_not_a_udp_learned_block(self) -> None:
        self.hello()
        self.assertEqual(self.syn(USER, PEER, 443), ACCEPT)

    def test_each_try_restarts_the_lock(self) -> None:
        self.hello()
        self.wait(100)
        self.assertEqual(self.syn(ROGUE, PEER, 2000), DROP)
        self.wait(100)
        self.assertEqual(self.syn(ROGUE, WEB), DROP)
        self.wait(21)
        self.assertEqual(self.syn(ROGUE, WEB), ACCEPT)


class TimeLockTests(EngineTestCase):
    def test_locked_client_loses_new_tcp_only(self) -> None:
        self.hello()
        self.assertEqual(self.syn(ROGUE, WEB), DROP)
        self.assertEqual(self.send(tcp(ROGUE, WEB, 40000, 80, "A")), ACCEPT)
        self.assertEqual(
            self.send(udp(ROGUE, "198.19.0.53", 5353, 53, b"\x12\x34\x01\x00")), ACCEPT
        )
        self.assertEqual(self.syn(USER, WEB), ACCEPT)

    def test_expiry_frees_the_client(self) -> None:
        self.hello()
        self.wait(119)
        self.assertEqual(self.syn(ROGUE, WEB), DROP)
        self.wait(2)
        self.assertEqual(self.syn(ROGUE, WEB), ACCEPT)
        self.assertEqual(self.observer.calls[-1], ("released", packed(ROGUE)))
        self.assertIn(f"client {ROGUE} cleared: time lock expired", self.engine.events.of("c"))

    def test_inbound_traffic_is_not_subject_to_locks(self) -> None:
        self.hello()
        self.assertEqual(self.send(tcp(ROGUE, "198.18.1.1", 40000, 22), Hook.INPUT), ACCEPT)


class DisabledLockTests(EngineTestCase):
    time_lock = 0.0

    def test_zero_disables_the_lock_but_not_peer_blocking(self) -> None:
        self.assertEqual(self.hello(), DROP)
        self.assertEqual(self.syn(ROGUE, WEB), ACCEPT)
        self.assertEqual(self.syn(ROGUE, PEER, 2000), DROP)
        self.assertEqual(len(self.engine.clients), 0)
        self.assertEqual(self.observer.calls, [])


class ProbeTests(EngineTestCase):
    def probe_reply(self, src: str = ROGUE, payload: bytes = PONG) -> Verdict:
        return self.send(udp(src, "198.18.1.1", 1214, 2000, payload), Hook.INPUT)

    def test_probe_is_a_copy_of_the_hello_sent_at_half_lock(self) -> None:
        self.hello()
        self.wait(59)
        self.assertEqual(len(self.engine.spoofer.sent), 1)
        self.wait(1)
        self.assertEqual(self.engine.spoofer.sent[1], (None, 2000, packed(ROGUE), 1214, HELLO))
        self.assertEqual(self.engine.stats["probes_sent"], 1)

    def test_answered_probes_keep_a_quiet_client_locked(self) -> None:
        self.hello()
        for _ in range(10):
            self.wait(60)
            self.assertEqual(self.probe_reply(), DROP)
        self.assertEqual(self.syn(ROGUE, WEB), DROP)
        self.assertEqual(self.engine.stats["probes_answered"], 10)

    def test_unanswered_probe_lets_the_lock_expire(self) -> None:
        self.hello()
        self.wait(121)
        self.assertEqual(self.engine.stats["probes_sent"], 1)
        self.assertEqual(self.syn(ROGUE, WEB), ACCEPT)

    def test_late_reply_after_expiry_is_just_accepted(self) -> None:
        self.hello()
        self.wait(121)
        self.assertEqual(self.probe_reply(), ACCEPT)
        self.assertEqual(self.syn(ROGUE, WEB), ACCEPT)

    def test_a_reply_must_come_back_to_the_probe_port_in_time(self) -> None:
        self.hello()
        self.wait(60)
        wrong_port = self.send(udp(ROGUE, "198.18.1.1", 1214, 2001, PONG), Hook.INPUT)
        self.assertEqual(wrong_port, ACCEPT)
        self.wait(61)
        self.assertEqual(self.probe_reply(), ACCEPT, "too late: the lock has expired")
        self.assertEqual(self.engine.stats["probes_answered"], 0)

    def test_other_input_udp_is_accepted(self) -> None:
        self.hello()
        self.wait(60)
        self.assertEqual(self.probe_reply(src=USER), ACCEPT)
        self.assertEqual(self.probe_reply(payload=b"\x00\x01dns"), ACCEPT)


class HttpSafetyNetTests(EngineTestCase):
    GET = (
        b"GET /.hash=0123456789abcdef0123456789abcdef01234567 HTTP/1.1\r\n"
        b"X-Kazaa-Username: rogue\r\nX-Kazaa-Network: KaZaA\r\n"
        b"X-Kazaa-IP: 198.18.1.10:1214\r\nX-Kazaa-SupernodeIP: 198.19.7.7:3531\r\n\r\n"
    )

    def test_download_start_blocks_target_and_supernode_and_locks(self) -> None:
        data = tcp(ROGUE, PEER2, 40000, 1214, "PA", self.GET)
        self.assertEqual(self.send(data), DROP)
        blocks = self.engine.blocks
        self.assertIn((packed(PEER2), 1214, packed(ROGUE)), blocks)
        self.assertIn((packed("198.19.7.7"), 3531, packed(ROGUE)), blocks)
        self.assertEqual(len(blocks), 2, "X-Kazaa-IP names the (green) client itself")
        self.assertTrue(self.engine.clients.is_locked(packed(ROGUE), self.clock.seconds()))
        self.engine.release(self.engine.clients.get(packed(ROGUE)), "test")
        self.assertEqual(self.syn(ROGUE, "198.19.7.7", 3532), ACCEPT, "the port is learned")
        self.assertEqual(self.syn(USER, "198.19.7.7", 3531), ACCEPT)
        self.assertEqual(self.syn(ROGUE, "198.19.7.7", 3531), DROP)
        self.assertTrue(self.engine.clients.is_locked(packed(ROGUE), self.clock.seconds()))
        (header_line,) = self.engine.events.of("h", debug=True)
        self.assertIn("x-kazaa-supernodeip", header_line)

    def test_the_gateways_own_address_is_never_learned(self) -> None:
        """Behind NAT, X-Kazaa-IP names the gateway's public address."""
        self.engine.local = frozenset({packed("198.19.0.1")})
        get = self.GET.replace(b"198.18.1.10:1214", b"198.19.0.1:1214")
        self.assertEqual(self.send(tcp(ROGUE, PEER2, 40000, 1214, "PA", get)), DROP)
        self.assertNotIn((packed("198.19.0.1"), 1214, packed(ROGUE)), self.engine.blocks)
        self.assertEqual(len(self.engine.blocks), 2)

    def test_header_lines_are_logged_escaped(self) -> None:
        data = b"GET /.hash=1\x1b[2J\rforged HTTP/1.1\r\nX-Kazaa-Network: Ka\x07\r\n\r\n"
        self.send(tcp(ROGUE, PEER2, 40000, 1214, "PA", data))
        (header_line,) = self.engine.events.of("h", debug=True)
        self.assertNotIn("\x1b", header_line)
        self.assertNotIn("\r", header_line)
        self.assertIn("\\x1b[2J", header_line)

    def test_odd_digits_in_a_header_port_do_not_break_the_safety_net(self) -> None:
        data = b"GET /.hash=1 HTTP/1.1\r\nX-Kazaa-SupernodeIP: 198.19.7.7:\xb2\r\n\r\n"
        self.assertEqual(self.send(tcp(ROGUE, PEER2, 4000, 1214, "PA", data)), DROP)
        self.assertEqual(
            list(self.engine.blocks.items())[0][0], (packed(PEER2), 1214, packed(ROGUE))
        )
        self.assertEqual(len(self.engine.blocks), 1, "no port, no block of the supernode")

    def test_ordinary_web_request_passes(self) -> None:
        data = tcp(USER, WEB, 40000, 80, "PA", b"GET / HTTP/1.1\r\nHost: w\r\n\r\n")
        self.assertEqual(self.send(data), ACCEPT)
        self.assertEqual(len(self.engine.blocks), 0)


class FuzzTests(EngineTestCase):
    def test_mutated_fasttrack_and_dns_packets_never_raise(self) -> None:
        import random

        from p2pwall.detectors.dns import DnsDetector

        self.engine = make_engine(self.clock, detectors=[*self.engine.detectors, DnsDetector()])
        rng = random.Random(11)
        seeds = [
            udp(ROGUE, PEER, 1214, 2000, HELLO),
            udp(ROGUE, "198.18.1.1", 1214, 2000, PONG),
            tcp(ROGUE, PEER, 4000, 1214, "PA", HttpSafetyNetTests.GET),
            udp(
                "198.19.0.53",
                USER,
                53,
                4000,
                bytes.fromhex(
                    "1234818000010001000000000377777705776"
                    "96e6d7803636f6d0000010001c00c000100010000003c0004c6130201"
                ),
            ),
        ]
        for _ in range(4000):
            data = bytearray(rng.choice(seeds))
            for _ in range(rng.randint(1, 8)):
                data[rng.randrange(20, len(data))] = rng.randrange(256)
            packet = decode(bytes(data))
            if packet is not None:
                self.engine.verdict(packet, rng.choice((Hook.FORWARD, Hook.INPUT)))
            self.clock.advance(0.01)
            self.engine.tick()


@implementer(IDetector)
class WantsForwardedUdp:
    """A detector that wants forwarded UDP only and notes what it is asked about."""

    name = "recorder"
    wants = frozenset({(UDP, Hook.FORWARD)})
    origins = ()

    def __init__(self) -> None:
        self.asked: list[tuple[int, int]] = []

    def inspect(self, packet, hook, engine):
        self.asked.append((packet.proto, hook))


class DispatchTests(EngineTestCase):
    def test_a_detector_is_asked_only_about_the_packets_it_wants(self) -> None:
        recorder = WantsForwardedUdp()
        self.engine = make_engine(self.clock, detectors=[recorder])
        self.syn(USER, WEB)
        self.send(udp(USER, "198.18.1.1", 5000, 5001, b"x"), Hook.INPUT)
        self.send(udp(USER, WEB, 5000, 5001, b"x"))
        self.assertEqual(recorder.asked, [(UDP, Hook.FORWARD)])

    def test_detectors_keep_their_order(self) -> None:
        first, second = WantsForwardedUdp(), WantsForwardedUdp()
        first.inspect = lambda packet, hook, engine: Verdict.DROP
        self.engine = make_engine(self.clock, detectors=[first, second])
        self.assertEqual(self.send(udp(USER, WEB, 5000, 5001, b"x")), DROP)
        self.assertEqual(second.asked, [], "the first verdict wins")


class ModeAndEventTests(EngineTestCase):
    def test_accept_all_accepts_and_learns_nothing(self) -> None:
        self.engine.accept_all = True
        self.assertEqual(self.hello(), ACCEPT)
        self.assertEqual(len(self.engine.blocks), 0)
        self.assertEqual(self.engine.stats["accept_all"], 1)

    def test_verdict_events_with_mac(self) -> None:
        self.send(udp(USER, WEB, 5000, 5001, b"x"), mac=b"\x02\x00\x00\x00\x00\x01")
        self.hello()
        (accepted,) = self.engine.events.of("U")
        self.assertEqual(
            accepted, f"accepted UDP {USER}:5000 -> {WEB}:5001 (no rule) mac=02:00:00:00:00:01"
        )
        self.assertEqual(
            self.engine.events.of("u"), [f"dropped UDP {ROGUE}:1214 -> {PEER}:2000 (fasttrack)"]
        )

    def test_manual_block_and_unblock(self) -> None:
        self.assertTrue(self.engine.block(packed(WEB), 80, packed(USER)))
        self.assertEqual(self.syn(USER, WEB), DROP)
        self.assertEqual(self.syn(ROGUE, WEB), ACCEPT)
        self.assertTrue(self.engine.unblock(packed(WEB), 80, packed(USER)))
        self.clock.advance(200)
        self.engine.tick()
        self.assertEqual(self.syn(USER, WEB), ACCEPT)

    def test_dns_and_manual_blocks_drop_without_locking(self) -> None:
        self.engine.learn(packed(PEER2), 0, ANY_CLIENT, "dns", name="www.winmx.com")
        self.engine.block(packed(PEER), 0)
        self.assertEqual(self.syn(USER, PEER2, 6699), DROP)
        self.assertEqual(self.send(udp(USER, PEER, 5000, 6257, b"x")), DROP)
        self.assertEqual(self.syn(USER, WEB), ACCEPT)
        self.assertEqual(len(self.engine.clients), 0)

    def test_an_any_port_block_does_not_hide_a_locking_one(self) -> None:
        self.hello()
        self.engine.release(self.engine.clients.get(packed(ROGUE)), "test")
        self.engine.block(packed(PEER))
        self.assertEqual(self.syn(ROGUE, PEER, 2000), DROP)
        self.assertTrue(self.engine.clients.is_locked(packed(ROGUE), self.clock.seconds()))

    def test_learning_never_blocks_green_addresses(self) -> None:
        self.assertFalse(self.engine.learn(packed(USER), 0, ANY_CLIENT, "fasttrack-http"))
        self.assertEqual(len(self.engine.blocks), 0)


MAC_ROGUE, MAC_USER, MAC_U3 = (bytes((2, 0, 0, 0, 0, n)) for n in (10, 20, 30))
U3 = "198.18.1.30"
RESOLVER = "198.19.0.53"


class PoisoningTests(EngineTestCase):
    """Issue 9's forgeries: no green host, and no web page, can turn the daemon against others.

    The gateway's neighbour table says which MAC owns each green address; every packet below
    carries the MAC its real sender would put on it."""

    def setUp(self) -> None:
        super().setUp()
        table = {packed(ROGUE): MAC_ROGUE, packed(USER): MAC_USER, packed(U3): MAC_U3}
        self.neighbours = KernelNeighbours(self.clock, read=lambda: dict(table))
        self.engine.neighbours = self.neighbours
        self.engine.events.records.clear()

    def from_host(self, data: bytes, mac: bytes, hook: Hook = Hook.FORWARD) -> Verdict:
        return self.send(data, hook, mac=mac)

    def locked(self, host: str) -> bool:
        return self.engine.clients.is_locked(packed(host), self.clock.seconds())

    def test_a_hello_forged_with_another_hosts_address_teaches_nothing_and_locks_nobody(
        self,
    ) -> None:
        forged = udp(USER, PEER, 1214, 2000, HELLO)
        self.assertEqual(self.from_host(forged, MAC_ROGUE), DROP)
        self.assertEqual((len(self.engine.blocks), len(self.engine.clients)), (0, 0))
        self.assertEqual(self.engine.spoofer.sent, [], "no pong reflected at the victim")
        self.assertEqual(self.engine.stats["forged_source"], 1)
        self.assertEqual(self.from_host(tcp(USER, WEB, 4000, 80), MAC_USER), ACCEPT)

    def test_the_real_host_still_teaches(self) -> None:
        self.assertEqual(self.from_host(udp(USER, PEER, 1214, 2000, HELLO), MAC_USER), DROP)
        self.assertTrue(self.locked(USER))
        self.assertEqual(self.engine.stats["forged_source"], 0)

    def test_a_forged_download_start_locks_nobody(self) -> None:
        forged = tcp(USER, PEER2, 40000, 1214, "PA", HttpSafetyNetTests.GET)
        self.assertEqual(self.from_host(forged, MAC_ROGUE), DROP)
        self.assertEqual((len(self.engine.blocks), len(self.engine.clients)), (0, 0))

    def test_a_forged_try_of_a_known_peer_does_not_renew_anothers_lock(self) -> None:
        self.from_host(udp(USER, PEER, 1214, 2000, HELLO), MAC_USER)
        self.wait(119)
        self.assertEqual(self.from_host(tcp(USER, PEER, 4000, 2000), MAC_ROGUE), DROP)
        self.wait(2)
        self.assertFalse(self.locked(USER), "the forged SYN renewed nothing")

    def test_a_forged_probe_answer_does_not_keep_another_host_locked(self) -> None:
        self.from_host(udp(USER, PEER, 1214, 2000, HELLO), MAC_USER)
        self.wait(60)
        reply = udp(USER, "198.18.1.1", 1214, 2000, PONG)
        self.assertEqual(self.from_host(reply, MAC_ROGUE, Hook.INPUT), ACCEPT)
        self.assertEqual(self.engine.stats["probes_answered"], 0)
        self.wait(61)
        self.assertFalse(self.locked(USER))

    def test_an_unknown_mac_is_read_again_at_most_once_a_second(self) -> None:
        for _ in range(50):
            self.from_host(udp(USER, PEER, 1214, 2000, HELLO), MAC_ROGUE)
        self.assertEqual(self.neighbours.reads, 1)
        self.clock.advance(1)
        self.from_host(udp(USER, PEER, 1214, 2000, HELLO), MAC_ROGUE)
        self.assertEqual(self.neighbours.reads, 2)

    def test_a_kazaa_header_naming_the_resolver_blocks_nothing_for_anyone_else(self) -> None:
        """``printf 'GET / ...X-Kazaa-IP: <resolver>' | nc <web> 80`` from the rogue."""
        get = f"GET / HTTP/1.1\r\nX-Kazaa-IP: {RESOLVER}\r\n\r\n".encode()
        self.assertEqual(self.from_host(tcp(ROGUE, WEB, 40000, 80, "PA", get), MAC_ROGUE), DROP)
        self.assertNotIn(packed(RESOLVER), {key[0] for key, _ in self.engine.blocks.items()})
        query = udp(USER, RESOLVER, 5353, 53, b"\x12\x34\x01\x00")
        self.assertEqual(self.from_host(query, MAC_USER), ACCEPT)
        self.assertEqual(self.from_host(tcp(USER, WEB, 40001, 80), MAC_USER), ACCEPT)
        self.assertFalse(self.locked(USER))

    def test_a_supernode_header_on_a_well_known_port_is_not_learned(self) -> None:
        get = b"GET / HTTP/1.1\r\nX-Kazaa-SupernodeIP: 198.19.0.22:22\r\n\r\n"
        self.from_host(tcp(ROGUE, WEB, 40000, 8080, "PA", get), MAC_ROGUE)
        self.assertEqual(
            [key for key, _ in self.engine.blocks.items()], [(packed(WEB), 8080, packed(ROGUE))]
        )

    def test_a_hash_url_in_a_web_page_teaches_nothing(self) -> None:
        """``curl http://<server>:8080/.hash=0123...`` (an ``<img src>`` does the same)."""
        get = (
            b"GET /.hash=0123456789abcdef0123456789abcdef01234567 HTTP/1.1\r\nHost: w:8080\r\n"
            b"User-Agent: Mozilla/5.0\r\nAccept: image/*\r\nAccept-Encoding: gzip\r\n\r\n"
        )
        self.assertEqual(self.from_host(tcp(USER, WEB, 40000, 8080, "PA", get), MAC_USER), ACCEPT)
        self.assertEqual((len(self.engine.blocks), len(self.engine.clients)), (0, 0))

    def test_a_hello_to_a_web_server_locks_no_other_visitor(self) -> None:
        self.from_host(udp(ROGUE, WEB, 1214, 80, HELLO), MAC_ROGUE)
        self.assertTrue(self.locked(ROGUE))
        for port in (40000, 40001):
            self.assertEqual(self.from_host(tcp(USER, WEB, port, 80), MAC_USER), ACCEPT)
        self.assertFalse(self.locked(USER))

    def test_two_hosts_revealing_a_peer_block_it_for_everyone(self) -> None:
        self.from_host(udp(ROGUE, PEER, 1214, 2000, HELLO), MAC_ROGUE)
        self.assertEqual(self.from_host(tcp(USER, PEER, 4000, 2000), MAC_USER), ACCEPT)
        self.from_host(udp(U3, PEER, 1214, 2000, HELLO), MAC_U3)
        self.assertIn((packed(PEER), 2000, ANY_CLIENT), self.engine.blocks)
        self.assertIn(
            f"peer {PEER}:2000 blocked for every host: revealed by a second host, {U3}",
            self.engine.events.of("p"),
        )
        self.assertEqual(self.from_host(tcp(USER, PEER, 4001, 2000), MAC_USER), DROP)
        self.assertTrue(self.locked(USER))

    def test_one_host_with_two_addresses_is_no_second_host(self) -> None:
        table = self.neighbours.read()
        table[packed(U3)] = MAC_ROGUE
        self.neighbours.read = lambda: dict(table)
        self.from_host(udp(ROGUE, PEER, 1214, 2000, HELLO), MAC_ROGUE)
        self.from_host(udp(U3, PEER, 1214, 2000, HELLO), MAC_ROGUE)
        self.assertNotIn((packed(PEER), 2000, ANY_CLIENT), self.engine.blocks)

    def test_two_hosts_never_block_a_well_known_port_for_everyone(self) -> None:
        self.from_host(udp(ROGUE, WEB, 1214, 80, HELLO), MAC_ROGUE)
        self.from_host(udp(U3, WEB, 1214, 80, HELLO), MAC_U3)
        self.assertNotIn((packed(WEB), 80, ANY_CLIENT), self.engine.blocks)
        self.assertEqual(self.from_host(tcp(USER, WEB, 4000, 80), MAC_USER), ACCEPT)

    def test_a_block_for_every_host_records_both_revealers(self) -> None:
        self.from_host(udp(ROGUE, PEER, 1214, 2000, HELLO), MAC_ROGUE)
        self.clock.advance(5)
        self.from_host(udp(U3, PEER, 1214, 2000, HELLO), MAC_U3)
        blocks = dict(self.engine.blocks.items())
        shared = blocks[(packed(PEER), 2000, ANY_CLIENT)]
        own = blocks[(packed(PEER), 2000, packed(ROGUE))]
        assert isinstance(shared, CorroboratedBlock)
        self.assertEqual(shared.by, (packed(ROGUE), packed(U3)))
        self.assertEqual(shared.first, self.clock.seconds())
        self.assertNotIsInstance(own, CorroboratedBlock)


class ProbeStormTests(EngineTestCase):
    """A burst of hellos from thousands of sources must not make one tick send thousands of
    probes (issue 9: 16,384 probes in one tick stalled the daemon for 8 s)."""

    def test_probes_are_spread_at_the_allowed_rate_and_ticks_stay_bounded(self) -> None:
        engine = self.engine = make_engine(self.clock, max_clients=5000, max_probes=100)
        for n in range(3000):
            self.hello(src=f"10.0.{n // 250}.{n % 250 + 1}")
        self.clock.advance(60)
        per_tick = []
        for _ in range(59):
            before = len(engine.spoofer.sent)
            for _ in range(10):
                engine.tick()
                self.clock.advance(0.1)
            per_tick.append(len(engine.spoofer.sent) - before)
        self.assertEqual(max(per_tick), 100, "at most max_probes a second")
        self.assertEqual(engine.stats["probes_sent"], 3000, "every client probed before expiry")
        self.clock.advance(1.5)
        engine.tick()
        self.assertEqual(len(engine.clients), 3000 - TICK_ACTIONS)

    def test_one_tick_looks_at_a_bounded_number_of_entries(self) -> None:
        engine = self.engine = make_engine(self.clock, max_clients=5000)
        for n in range(1000):
            self.hello(src=f"10.0.{n // 250}.{n % 250 + 1}")
        self.clock.advance(121)
        engine.tick()
        self.assertEqual(len(engine.clients), 1000 - TICK_ACTIONS)
        for _ in range(4):
            engine.tick()
        self.assertEqual(len(engine.clients), 0)


class EvidenceTests(EngineTestCase):
    """What ``explain`` shows: why a client is locked and since when a block exists."""

    def test_a_lock_keeps_its_first_and_latest_evidence(self) -> None:
        start = self.clock.seconds()
        self.hello()
        self.clock.advance(10)
        self.assertEqual(self.syn(ROGUE, PEER, 2000), DROP)
        client = self.engine.clients.get(packed(ROGUE))
        assert client is not None
        self.assertEqual(
            client.identified,
            (start, "FastTrack", "FastTrack hello", UDP, 1214, packed(PEER), 2000),
        )
        self.assertEqual(
            client.renewed,
            (start + 10, "FastTrack", "tried a FastTrack peer", TCP, 40000, packed(PEER), 2000),
        )

    def test_a_block_keeps_its_first_sighting(self) -> None:
        start = self.clock.seconds()
        self.hello()
        self.clock.advance(30)
        self.hello()
        block = self.engine.blocks.match(packed(PEER), 2000, packed(ROGUE), self.clock.seconds())
        assert block is not None
        self.assertEqual((block.first, block.seen), (start, start + 30))


class UnlockTests(EngineTestCase):
    def test_unlock_frees_a_client_now_and_tells_the_observers(self) -> None:
        self.hello()
        self.assertEqual(self.syn(ROGUE, WEB), DROP)
        self.assertTrue(self.engine.unlock(packed(ROGUE)))
        self.assertEqual(self.syn(ROGUE, WEB), ACCEPT)
        self.assertEqual(self.observer.calls[-1], ("released", packed(ROGUE)))
        self.assertIn(
            f"client {ROGUE} cleared: unlocked from the control port", self.engine.events.of("c")
        )
        self.assertFalse(self.engine.unlock(packed(ROGUE)))


class AllowTests(EngineTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.engine.allowed = AllowList([f"{ROGUE}/32", "198.19.0.0/24"])

    def test_an_allowed_host_teaches_nothing_and_is_never_locked(self) -> None:
        self.assertEqual(self.hello(), ACCEPT)
        self.assertEqual(self.syn(ROGUE, WEB), ACCEPT)
        self.assertEqual((len(self.engine.blocks), len(self.engine.clients)), (0, 0))
        self.assertEqual(self.engine.spoofer.sent, [])
        self.assertIn(
            f"accepted UDP {ROGUE}:1214 -> {PEER}:2000 (allowed)", self.engine.events.of("U")
        )

    def test_an_allowed_destination_is_never_dropped_nor_learned(self) -> None:
        self.engine.block(packed(WEB), 80)
        self.assertEqual(self.syn(USER, WEB), ACCEPT, "a manual block")
        self.assertFalse(self.engine.learn(packed(WEB), 1214, ANY_CLIENT, "dns"))
        self.hello(src=USER)
        self.assertEqual(self.syn(USER, WEB), ACCEPT, "a locked client reaches it still")
        self.assertEqual(self.syn(USER, PEER2), DROP, "but nothing else")

    def test_a_peer_named_in_a_header_inside_an_allowed_network_is_not_learned(self) -> None:
        self.engine.allowed = AllowList(["198.19.1.0/24"])
        self.assertFalse(self.engine.learn(packed(PEER), 2000, packed(USER), "fasttrack-http"))
        self.assertEqual(len(self.engine.blocks), 0)

    def test_allowing_releases_the_clients_it_covers(self) -> None:
        self.hello(src=USER)
        self.hello(src="198.18.1.30")
        new, released = self.engine.allow(parse_network(f"{USER}/32"))
        self.assertEqual((new, released), (True, 1))
        self.assertEqual(self.syn(USER, WEB), ACCEPT)
        self.assertEqual(self.syn("198.18.1.30", PEER2), DROP)
        self.assertIn(f"client {USER} cleared: allowed", self.engine.events.of("c"))
        self.assertEqual(self.engine.allow(parse_network(USER)), (False, 0))

    def test_disallowed_again_it_is_filtered_again(self) -> None:
        self.assertEqual(self.engine.allowed.remove(parse_network(f"{ROGUE}/32")), "option")
        self.assertEqual(self.hello(), DROP)


class DryRunTests(EngineTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.engine.dry_run = True

    def test_decides_learns_and_locks_but_drops_nothing_and_forges_nothing(self) -> None:
        self.assertEqual(self.hello(), ACCEPT)
        self.assertIn((packed(PEER), 2000, packed(ROGUE)), self.engine.blocks)
        self.assertEqual(self.syn(ROGUE, WEB), ACCEPT)
        self.assertTrue(self.engine.clients.is_locked(packed(ROGUE), self.clock.seconds()))
        self.assertEqual(self.engine.spoofer.sent, [])
        stats = self.engine.stats
        keys = ("would_drop_udp", "would_drop_tcp", "drop_udp", "would_spoof")
        self.assertEqual([stats[key] for key in keys], [1, 1, 0, 1])
        self.assertEqual(self.engine.packets, 2)
        self.assertEqual(
            self.engine.events.of("t"), [f"would drop TCP {ROGUE}:40000 -> {WEB}:80 (time lock)"]
        )

    def test_sends_no_probe(self) -> None:
        self.hello()
        self.wait(70)
        client = self.engine.clients.get(packed(ROGUE))
        assert client is not None
        self.assertEqual(self.engine.spoofer.sent, [])
        self.assertEqual((client.probes_sent, self.engine.stats["would_probe"]), (0, 1))
        self.assertEqual(self.engine.stats["probes_sent"], 0)

    def test_is_not_accept_all(self) -> None:
        self.engine.dry_run = False
        self.engine.accept_all = True
        self.hello()
        self.assertEqual(self.engine.stats["would_drop_udp"], 0)
        self.assertEqual(len(self.engine.clients), 0)
