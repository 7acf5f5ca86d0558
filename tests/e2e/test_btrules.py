"""BitTorrent's queue rules in the kernel: each matches the packets it is for and no others,
and what the daemon drops of an announce stays dropped.

``p2pwall-rules`` output applied in the lab's ``gw`` without a daemon (``--queue-bypass``: the
queued packets pass), then traffic from ``user`` to a responder on ``pub``, and each rule's
packet counter read back from iptables after every step. FastTrack's probe and download rules
are turned off (``--no-probes --no-http``): its probe rule, first in the chain, would take
UDP to port 6881 on the gateway before BitTorrent's.
"""

from __future__ import annotations

import sys

from lab.gateway import Gateway

from .support import LabCase

TRACKER = "198.19.0.69"
TRACKER_PORT = 6969
DHT_PORT = 6881
GW = "198.18.1.1"
SECONDS = 60  # the responder's bound; the test takes a few
SEGMENTS = 3
REPLIES = 6

# argv: seconds, ip, tcp port, udp port. TCP: reads one request and answers in SEGMENTS
# segments (an announce gets a peer list); UDP (also on 53): answers each datagram REPLIES times.
RESPONDER = f"""\
import selectors, socket, sys, time
ip = sys.argv[2]
selector = selectors.DefaultSelector()
tcp = socket.socket()
tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
tcp.bind((ip, int(sys.argv[3])))
tcp.listen(8)
selector.register(tcp, selectors.EVENT_READ)
for port in (int(sys.argv[4]), 53):
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind((ip, port))
    selector.register(udp, selectors.EVENT_READ)
deadline = time.monotonic() + float(sys.argv[1])
while time.monotonic() < deadline:
    for key, _ in selector.select(0.5):
        sock = key.fileobj
        if sock is tcp:
            conn = tcp.accept()[0]
            conn.settimeout(2)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                request = conn.recv(4096)
            except OSError:  # nothing came: no answer
                conn.close()
                continue
            body = b"d8:intervali1800e5:peers6:" + bytes([198, 19, 0, 11, 26, 225]) + b"e"
            if b"info_hash=" not in request:
                body = b"<html>" + b"x" * 64 + b"</html>"
            parts = [b"HTTP/1.0 200 OK\\r\\n\\r\\n", body[:10], body[10:]]
            for part in parts[:{SEGMENTS}]:
                conn.sendall(part)
                time.sleep(0.05)
            conn.close()
        else:
            data, peer = sock.recvfrom(2048)
            for _ in range({REPLIES}):
                sock.sendto(data, peer)
"""

# argv: what to do, then its arguments; exits 0 when the exchange completed (TCP: prints the
# number of bytes the server sent back).
CLIENT = """\
import socket, sys
what = sys.argv[1]
if what == "tcp":
    conn = socket.create_connection((sys.argv[2], int(sys.argv[3])), timeout=4)
    conn.sendall(bytes.fromhex(sys.argv[4]))
    received = 0
    while data := conn.recv(4096):
        received += len(data)
    print(received)
elif what == "udp":
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(1)
    sock.sendto(b"d1:ad2:id20:" + bytes(20) + b"e1:q4:ping1:t2:aa1:y1:qe",
                (sys.argv[2], int(sys.argv[3])))
    for _ in range(int(sys.argv[4])):
        sock.recv(2048)
"""

ANNOUNCE = (
    b"GET /announce?info_hash=%aa%bb%cc%dd%ee%ff%00%11%22%33%44%55%66%77%88%99%aa%bb%cc%dd"
    b"&peer_id=-LT2080-abcdefghijkl&port=6881 HTTP/1.0\r\n\r\n"
)
PAGE = b"GET /index.html HTTP/1.0\r\n\r\n"
HANDSHAKE = b"\x13BitTorrent protocol" + bytes(8) + bytes(range(20)) + b"-LT2080-abcdefghijkl"


class BitTorrentRulesInTheKernelTests(LabCase):
    peers = 0

    def setUp(self) -> None:
        super().setUp()
        self.lab.add_public_addr(TRACKER)
        log = "btresponder.log"
        proc = self.lab.spawn("pub", [sys.executable, "-c", RESPONDER, str(SECONDS), TRACKER,
                                      str(TRACKER_PORT), str(DHT_PORT)], log=log)  # fmt: skip
        for proto, port in (("tcp", TRACKER_PORT), ("udp", DHT_PORT), ("udp", 53)):
            self.lab.wait_listening("pub", proto, TRACKER, port, proc, log)
        self.gw = Gateway(self.lab, rule_options=["--no-probes", "--no-http"])
        self.addCleanup(self.gw.close)
        self.gw.install_rules()
        green = self.lab.green_if
        # Rules by chain and a piece of their text, as iptables -S lists them.
        self.rules = {
            "announce": ("p2pwall-dl", "info_hash="),
            "mark": ("p2pwall-bt", "CONNMARK"),
            "marked, later": ("p2pwall-fwd", f"-i {green} -p tcp -m connmark"),
            "handshake": ("p2pwall-dl", "--hex-string"),
            "tracker reply": ("p2pwall-fwd", f"-o {green} -p tcp -m connmark"),
            "udp reply": ("p2pwall-fwd", f"-o {green} -p udp -m udp ! --sport 53"),
            "dns answer": ("p2pwall-fwd", f"-o {green} -p udp -m udp --sport 53"),
            "probe reply": ("p2pwall-in", "--dport 6881"),
        }

    def counters(self) -> dict[str, int]:
        counted = {}
        for name, (chain, text) in self.rules.items():
            listing = self.lab.run("gw", ["iptables", "-t", "mangle", "-v", "-S", chain],
                                   capture_output=True, text=True, check=True).stdout  # fmt: skip
            (line,) = [line for line in listing.splitlines() if text in line]
            counted[name] = int(line.split(" -c ")[1].split()[0])
        return counted

    def client(self, *argv: str) -> str:
        done = self.lab.run("user", [sys.executable, "-c", CLIENT, *argv], capture_output=True,
                            text=True, timeout=20)  # fmt: skip
        self.assertEqual(done.returncode, 0, done.stderr[-2000:])
        return done.stdout.strip()

    def step(self, *argv: str) -> dict[str, int]:
        """What one exchange added to each rule's counter."""
        before = self.counters()
        self.client(*argv)
        after = self.counters()
        return {name: after[name] - before[name] for name in after if after[name] != before[name]}

    def tcp(self, payload: bytes) -> dict[str, int]:
        return self.step("tcp", TRACKER, str(TRACKER_PORT), payload.hex())

    def test_each_rule_matches_what_it_is_for(self) -> None:
        self.assertEqual(self.tcp(PAGE), {}, "a web page: nothing of BitTorrent's")
        announce = self.tcp(ANNOUNCE)
        self.assertEqual((announce.pop("announce"), announce.pop("mark")), (1, 1))
        replies = announce.pop("tracker reply", 0)
        self.assertGreaterEqual(announce.pop("marked, later", 0), 1, "ACKs, FIN")
        self.assertEqual(announce, {})
        self.assertGreaterEqual(replies, SEGMENTS, "the announce's reply, segment by segment")
        self.assertLessEqual(replies, 7, "at most 8 reply packets, the SYN-ACK came unmarked")
        self.assertEqual(self.tcp(PAGE), {}, "the mark is the announce connection's only")
        self.assertEqual(self.tcp(HANDSHAKE), {"handshake": 1})
        udp = self.step("udp", TRACKER, str(DHT_PORT), str(REPLIES))
        self.assertEqual(udp, {"udp reply": 3}, "the first --udp-packets replies of the flow")
        dns = self.step("udp", TRACKER, "53", str(REPLIES))
        self.assertEqual(dns, {"dns answer": REPLIES}, "port 53 is DNS's, not BitTorrent's")
        self.assertEqual(self.step("udp", GW, str(DHT_PORT), "0"), {"probe reply": 1})

    def test_an_announce_the_daemon_drops_never_reaches_the_tracker(self) -> None:
        """Conntrack counts dropped packets: past the 4-packet early-data window the announce's
        retransmission would pass unqueued, unless the marked connection stays queued."""
        self.gw.start(extra=["-L", "c"])
        before = self.counters()
        received = self.client("tcp", TRACKER, str(TRACKER_PORT), ANNOUNCE.hex())
        after = self.counters()
        self.assertEqual(received, "0", "the tracker never saw the announce: it only closed")
        self.assertGreaterEqual(after["marked, later"] - before["marked, later"], 2,
                                "retransmissions, queued and dropped")  # fmt: skip
        self.assertIn("identified: BitTorrent tracker announce", self.gw.read_log())
