"""The address watch: the gateway's own addresses, the green networks from --green-if, the
green interfaces, re-read on each refresh; failures and missing interfaces are logged."""

import errno
import ipaddress

from twisted.logger import LogLevel, capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from p2pwall.localaddrs import AddressWatch
from p2pwall.networks import GreenNetworks
from p2pwall.rtnetlink import LinkAddress
from p2pwall.testing import make_engine, packed


def at(ifindex: int, ifname: str, interface: str) -> LinkAddress:
    return LinkAddress(ifindex, ifname, ipaddress.ip_interface(interface))


class Kernel:
    """What ``rtnetlink.addresses`` would return; ``error`` makes the next read fail."""

    def __init__(self, *found: LinkAddress) -> None:
        self.found = list(found)
        self.error: OSError | None = None

    def __call__(self) -> list[LinkAddress]:
        if self.error is not None:
            raise self.error
        return list(self.found)


LO = at(1, "lo", "127.0.0.1/8")
WAN = at(2, "wan0", "198.19.0.1/24")
GREEN = at(3, "green0", "198.18.1.1/24")


class AddressWatchTests(SynchronousTestCase):
    def watch(self, kernel: Kernel, *green_ifs: str, green=()) -> AddressWatch:
        self.engine = make_engine(green=("10.0.0.0/8",))
        return AddressWatch(
            self.engine, green_ifs, [ipaddress.ip_network(n) for n in green], kernel
        )

    def refresh(self, watch: AddressWatch) -> list[dict]:
        with capturedLogs() as events:
            watch.refresh()
        return events

    def test_own_addresses(self) -> None:
        self.refresh(self.watch(Kernel(LO, WAN)))
        self.assertEqual(self.engine.local, {packed("127.0.0.1"), packed("198.19.0.1")})

    def test_green_if_networks_replace_the_defaults_and_follow_changes(self) -> None:
        kernel = Kernel(LO, WAN, GREEN)
        watch = self.watch(kernel, "green0", green=["198.18.9.0/24"])
        self.refresh(watch)
        self.assertIn(packed("198.18.1.50"), self.engine.green)
        self.assertIn(packed("198.18.9.5"), self.engine.green)  # --green is added
        self.assertIn(packed("fe80::1"), self.engine.green)
        self.assertNotIn(packed("10.1.1.1"), self.engine.green)
        self.assertEqual(self.engine.green_ifindexes, {3})
        self.assertEqual(watch.interfaces, ("green0",))
        kernel.found.append(at(3, "green0", "2001:2:0:1::1/64"))
        kernel.found.remove(GREEN)
        self.refresh(watch)
        self.assertIn(packed("2001:2:0:1::9"), self.engine.green)
        self.assertNotIn(packed("198.18.1.50"), self.engine.green)

    def test_unchanged_networks_keep_the_same_object(self) -> None:
        watch = self.watch(Kernel(GREEN), "green0")
        self.refresh(watch)
        green = self.engine.green
        self.refresh(watch)
        self.assertIs(self.engine.green, green)

    def test_missing_green_interface_warns_once_per_change(self) -> None:
        kernel = Kernel(LO, WAN)
        watch = self.watch(kernel, "green0")
        warned = [e for e in self.refresh(watch) if e["log_level"] == LogLevel.warn]
        self.assertEqual(len(warned), 1)
        self.assertEqual(warned[0]["name"], "green0")
        self.assertIn("NOT protected", warned[0]["log_format"])
        self.assertEqual([e for e in self.refresh(watch) if e["log_level"] == LogLevel.warn], [])
        kernel.found.append(GREEN)
        back = self.refresh(watch)
        self.assertEqual([e["name"] for e in back if "again" in e["log_format"]], ["green0"])
        self.assertEqual(self.engine.green_ifindexes, {3})
        kernel.found.remove(GREEN)
        self.assertEqual(
            len([e for e in self.refresh(watch) if e["log_level"] == LogLevel.warn]), 1
        )
        self.assertEqual(self.engine.green_ifindexes, frozenset())

    def test_without_green_if_the_interfaces_holding_a_green_address(self) -> None:
        watch = self.watch(
            Kernel(LO, WAN, at(5, "lan", "10.1.0.1/16"), at(2, "wan0", "fe80::1/64"))
        )
        self.refresh(watch)
        self.assertEqual(self.engine.green_ifindexes, {5})
        self.assertEqual(self.engine.green.networks, GreenNetworks(["10.0.0.0/8"]).networks)
        self.assertEqual(watch.interfaces, ("lan",))

    def test_a_failed_read_keeps_the_last_and_is_logged(self) -> None:
        kernel = Kernel(LO, GREEN)
        watch = self.watch(kernel, "green0")
        self.refresh(watch)
        kernel.error = OSError(errno.ETIMEDOUT, "timed out")
        logged = self.refresh(watch)
        self.assertEqual([e["log_level"] for e in logged], [LogLevel.error])
        self.assertIn(packed("198.18.1.9"), self.engine.green)
        self.assertIn(packed("127.0.0.1"), self.engine.local)
