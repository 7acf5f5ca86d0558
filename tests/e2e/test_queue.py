"""The kernel queue as the daemon binds it: whole packets however large, fail-open on request."""

from __future__ import annotations

import errno
import json
import signal
import sys
import time

from lab.gateway import ENV

from .support import LabCase

# A 4.8 KB DNS answer: fragmented on the wire, reassembled by conntrack before FORWARD and
# queued whole (a copy range capped at 4016 bytes, as NetfilterQueue's, would cut it).
BIG_NAME = "big.winmx.com"
BIG_ADDRS = [f"198.18.200.{n}" for n in range(1, 251)] + [f"198.18.201.{n}" for n in range(1, 51)]

SEND = (
    "import socket, sys\n"
    "for port in range(41000, 41000 + int(sys.argv[3])):\n"
    "    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
    "    s.bind(('0.0.0.0', port))\n"
    "    s.sendto(b'ordinary', (sys.argv[1], int(sys.argv[2])))\n"
    "    s.close()\n"
)


def stats(gateway) -> dict[str, str]:
    return dict(line.split() for line in gateway.ctl("stats").stdout.splitlines()[:-1])


class LargePacketTests(LabCase):
    peers = 0

    def test_a_dns_answer_bigger_than_4016_bytes_is_read_whole(self) -> None:
        self.lab.start_dns({BIG_NAME: BIG_ADDRS}, options=["--edns-packet-max=8192"])
        gateway = self.gateway("-D", str(self.conf()))
        done = self.lab.run(
            "user",
            ["dig", "+short", "+time=3", "+tries=1", "+bufsize=8192", "+ignore",
             "@198.19.0.53", BIG_NAME],
            capture_output=True, text=True,
        )  # fmt: skip
        self.assertEqual(sorted(done.stdout.split()), sorted(BIG_ADDRS), done.stderr)
        blocks = gateway.ctl("dump-blocks").stdout
        missing = [ip for ip in BIG_ADDRS if f"{ip} " not in blocks]
        self.assertEqual(missing, [], "every address of the answer is learned")
        self.assertEqual(stats(gateway).get("dns_malformed", "0"), "0")

    def conf(self):
        path = self.lab.logpath("patterns.conf")
        path.write_text("(^|\\.)winmx\\.com$\n")
        return path


class FailOpenTests(LabCase):
    """With the daemon stopped (SIGSTOP: still bound, so ``--queue-bypass`` does not apply) and
    a queue of 2, new UDP flows beyond the two held are dropped by the kernel, or accepted
    with ``--fail-open``."""

    peers = 1
    FLOWS = 10

    def run_with_daemon_stopped(self, *options: str) -> int:
        gateway = self.gateway("--max-queue-len", "2", *options)
        ((peer, port),) = self.lab.peers
        assert gateway.proc is not None
        gateway.proc.send_signal(signal.SIGSTOP)
        try:
            argv = [sys.executable, "-c", SEND, peer, str(port), str(self.FLOWS)]
            self.assertEqual(self.lab.run("user", argv).returncode, 0)
            time.sleep(0.5)
        finally:
            gateway.proc.send_signal(signal.SIGCONT)
        time.sleep(1)  # the two held packets get their verdicts
        return self.lab.read_log("ftpeers.log").count("src=198.18.1.20:41")

    def test_a_full_queue_drops_by_default(self) -> None:
        self.assertEqual(self.run_with_daemon_stopped(), 2)

    def test_a_full_queue_lets_packets_through_with_fail_open(self) -> None:
        self.assertEqual(self.run_with_daemon_stopped("--fail-open"), self.FLOWS)


class KernelQueueTests(LabCase):
    """``KernelQueue`` against the real ``nfnetlink_queue``, in the lab's gateway namespace."""

    peers = 0
    SCRIPT = (
        "import json\n"
        "from p2pwall.nfqueue import KernelQueue\n"
        "PROC = '/proc/net/netfilter/nfnetlink_queue'\n"
        "first = KernelQueue(7, max_len=64, fail_open=True)\n"
        "row = open(PROC).read().split()\n"
        "try:\n"
        "    KernelQueue(7)\n"
        "    second = 0\n"
        "except OSError as error:\n"
        "    second = error.errno\n"
        "first.close()\n"
        "print(json.dumps({'row': row, 'second': second, 'after': open(PROC).read()}))\n"
    )

    def test_bind_copy_whole_packets_refuse_a_second_reader_unbind_on_close(self) -> None:
        done = self.lab.run(
            "gw", [sys.executable, "-c", self.SCRIPT], capture_output=True, text=True, env=ENV
        )
        self.assertEqual(done.returncode, 0, done.stderr)
        found = json.loads(done.stdout)
        queue, _portid, _waiting, copy_mode, copy_range = found["row"][:5]
        self.assertEqual((queue, copy_mode, copy_range), ("7", "2", "65531"))
        self.assertIn(found["second"], (errno.EPERM, errno.EBUSY))
        self.assertEqual(found["after"], "", "closing the socket unbinds the queue")
