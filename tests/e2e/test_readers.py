"""Each queue reader against the real kernel queue: the Kazaa-proof run and the restart/bypass
run of ``test_fasttrack`` again with ``--reader netfilterqueue`` (the native reader, the
default, runs them there), and a datagram longer than NetfilterQueue's 4,016-byte copy, which
each reader must pass: whole and decided by the native reader, cut, counted and decided on its
headers by the package's."""

from __future__ import annotations

import sys
import time

from lab.netlab import PEER_PORT

from . import test_fasttrack
from .support import LabCase

# A datagram from green that IP fragments on the way and the gateway's conntrack reassembles
# before the queue: the queued packet is 6,028 bytes long.
LONG = 6000
SEND = (
    "import socket, sys\n"
    "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
    "s.bind(('0.0.0.0', 40000))\n"
    "s.sendto(bytes(int(sys.argv[3])), (sys.argv[1], int(sys.argv[2])))\n"
)
CUT_LINE = "a packet arrived cut to 4016 bytes"


class PackageReader:
    """The daemon reads its queue through the NetfilterQueue package."""

    reader = "netfilterqueue"

    def gateway(self, *options: str, **kwargs):
        return super().gateway(*options, "--reader", self.reader, **kwargs)


class NetfilterQueueKazaaProofTests(PackageReader, test_fasttrack.KazaaProofTests):
    pass


class NetfilterQueueRestartTests(PackageReader, test_fasttrack.RestartTests):
    pass


class LongDatagramTests(LabCase):
    """The native reader copies the whole packet and decides it."""

    peers = 1
    reader = "native"

    def test_a_datagram_longer_than_4016_bytes_passes(self) -> None:
        gateway = self.gateway("--reader", self.reader)
        peer = self.lab.peers[0][0]
        argv = [sys.executable, "-c", SEND, peer, str(PEER_PORT), str(LONG)]
        self.assertEqual(self.lab.run("user", argv).returncode, 0)
        deadline = time.monotonic() + 5
        arrived = f"src=198.18.1.20:40000 len={LONG}"
        while arrived not in self.lab.read_log("ftpeers.log") and time.monotonic() < deadline:
            time.sleep(0.1)
        self.assertIn(arrived, self.lab.read_log("ftpeers.log"))
        stats = gateway.stats()
        self.check_reader(gateway.read_log(), int(stats["accept_udp"]))

    def check_reader(self, log: str, accepted: int) -> None:
        self.assertNotIn(CUT_LINE, log)
        self.assertEqual(accepted, 1, "decided whole")


class NetfilterQueueLongDatagramTests(LongDatagramTests):
    """The package's reader gets 4,016 bytes of it: decided on its headers, and said."""

    reader = "netfilterqueue"

    def check_reader(self, log: str, accepted: int) -> None:
        self.assertIn(CUT_LINE, log)
        self.assertEqual(accepted, 1, "decided on its headers")
