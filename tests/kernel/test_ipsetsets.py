"""IpsetSets: what it asks of ipset, against an ipset in memory (the kernel's answers are in
tests/tools/test_rules.py's namespace test and tests/e2e)."""

from __future__ import annotations

import ipaddress
import socket
import sys
from unittest import mock

from twisted.trial.unittest import SynchronousTestCase

from p2pwall.errors import KernelSetsError
from p2pwall.kernel import ipsetrules
from p2pwall.kernel.elements import FAMILIES, Element, Lock
from p2pwall.kernel.ipset import (
    Entry,
    IpsetSets,
    PyrouteIpset,
    SetInfo,
    adt,
    entries,
    network_entries,
)

TCP, UDP = socket.IPPROTO_TCP, socket.IPPROTO_UDP
ITEM = Element(4, "peer_port_client", ("198.19.0.1", 1214, "198.18.1.10"))
PEER6 = Element(6, "peer", ("2001:2::1",))


class FakeIpset:
    """ipset in memory, as the rules create it: sets by name with their options and elements
    (an element's timeout apart). Every write is recorded; ``refuse`` fails the next ones."""

    def __init__(self, lock_seconds: int = 120) -> None:
        self.sets: dict[str, tuple[SetInfo, dict[Entry, int | None]]] = {}
        for family in FAMILIES:
            for name, kind, options in ipsetrules.sets(family, lock_seconds):
                timeout = int(options[options.index("timeout") + 1]) if "timeout" in options \
                    else None  # fmt: skip
                self.sets[name] = (SetInfo(kind, family, None, timeout), {})
        self.writes: list[tuple[str, str, list[Entry]]] = []
        self.refuse = 0

    def _set(self, name: str) -> tuple[SetInfo, dict[Entry, int | None]]:
        if self.refuse:
            self.refuse -= 1
            raise KernelSetsError("ipset add x: Operation not permitted")
        if name not in self.sets:
            raise KernelSetsError(f"ipset {name}: No such file or directory")
        return self.sets[name]

    def elements(self, name: str) -> set[Entry]:
        return set(self.sets[name][1])

    def info(self, name: str, members: bool = False) -> tuple[SetInfo, list[Entry]] | None:
        if name not in self.sets:
            return None
        info, found = self.sets[name]
        listed = [item._replace(timeout=timeout) for item, timeout in found.items()]
        return info, listed if members else []

    def create(self, name: str, info: SetInfo) -> None:
        if name in self.sets:
            raise KernelSetsError(f"ipset create {name}: File exists")
        self.sets[name] = (info, {})

    def swap(self, name: str, other: str) -> None:
        first, second = self._set(name), self._set(other)
        if first[0].kind != second[0].kind or first[0].family != second[0].family:
            raise KernelSetsError("ipset swap: types differ")
        self.sets[name], self.sets[other] = second, first

    def destroy(self, name: str) -> None:
        self._set(name)
        del self.sets[name]

    def flush(self, name: str) -> None:
        self._set(name)[1].clear()

    def write(self, op: str, name: str, family: int, items: list[Entry]) -> None:
        info, found = self._set(name)
        if info.family != family:
            raise KernelSetsError(f"ipset {op} {name}: family mismatch")
        self.writes.append((op, name, list(items)))
        for item in items:
            key = item._replace(timeout=None)
            if op == "add":
                found[key] = item.timeout if item.timeout is not None else info.timeout
            else:
                found.pop(key, None)


def name(shape: str, action: str, family: int = 4) -> str:
    return ipsetrules.block_set(shape, action, family)


class EntryTests(SynchronousTestCase):
    def test_a_block_with_a_port_is_one_element_per_protocol(self) -> None:
        peer, client = "198.19.0.1", "198.18.1.10"
        self.assertEqual(entries(ITEM), [Entry(peer, TCP, 1214, None, client),
                                         Entry(peer, UDP, 1214, None, client)])  # fmt: skip

    def test_a_block_for_one_client_on_every_port_is_the_whole_port_range(self) -> None:
        item = Element(4, "peer_client", ("198.19.0.1", "198.18.1.10"))
        client = "198.18.1.10"
        self.assertEqual({(e.proto, e.port, e.port_to, e.ip2) for e in entries(item)},
                         {(TCP, 0, 65535, client), (UDP, 0, 65535, client)})  # fmt: skip

    def test_a_whole_family_is_two_halves(self) -> None:
        self.assertEqual(network_entries(ipaddress.ip_network("::/0")),
                         [Entry("::", cidr=1), Entry("8000::", cidr=1)])  # fmt: skip
        self.assertEqual(network_entries(ipaddress.ip_network("198.18.5.0/24")),
                         [Entry("198.18.5.0", cidr=24)])  # fmt: skip

    def test_elements_are_encoded_as_pyroute2_encodes_them(self) -> None:
        for family, items in (
            (4, [Entry("198.19.0.1", TCP, 1214, None, "198.18.1.10"), Entry("198.19.0.2"),
                 Entry("198.18.5.0", cidr=24), Entry("198.18.1.10", timeout=120)]),
            (6, [Entry("2001:2::1", UDP, 0, 65535, "2001:2:0:1::10"), Entry("::", cidr=1),
                 Entry("2001:2:0:1::10", timeout=7)]),
        ):  # fmt: skip
            with self.subTest(family=family):
                self.assertEqual(adt(items, family), pyroute2_adt(items, family))


def pyroute2_adt(items: list[Entry], family: int) -> bytes:
    """``IPSET_ATTR_ADT``'s payload as pyroute2 encodes it from nested attributes."""
    from pyroute2.netlink.nfnetlink.ipset import ipset_msg

    addr = "IPSET_ATTR_IPADDR_IPV4" if family == 4 else "IPSET_ATTR_IPADDR_IPV6"
    datas = []
    for item in items:
        attrs: list[list[object]] = [["IPSET_ATTR_IP", {"attrs": [[addr, item.ip]]}]]
        if item.cidr is not None:
            attrs.append(["IPSET_ATTR_CIDR", item.cidr])
        if item.proto is not None:
            attrs += [["IPSET_ATTR_PORT", item.port], ["IPSET_ATTR_PROTO", item.proto]]
            if item.port_to is not None:
                attrs.append(["IPSET_ATTR_PORT_TO", item.port_to])
        if item.ip2 is not None:
            attrs.append(["IPSET_ATTR_IP2", {"attrs": [[addr, item.ip2]]}])
        if item.timeout is not None:
            attrs.append(["IPSET_ATTR_TIMEOUT", item.timeout])
        datas.append(["IPSET_ATTR_DATA", {"attrs": attrs}])
    message = ipset_msg()
    message["attrs"] = [["IPSET_ATTR_ADT", {"attrs": datas}]]
    message["header"]["type"] = 9 | (6 << 8)  # IPSET_CMD_ADD: elements, not a set's header
    message.encode()
    # After the netlink header (16 bytes), nfgenmsg (4) and ADT's own header (4).
    return bytes(message.data[24 : message["header"]["length"]])


class IpsetSetsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.ipset = FakeIpset()
        self.sets = IpsetSets(self.ipset)

    def test_check_wants_the_sets_and_the_daemons_lock_time(self) -> None:
        self.sets.check(120)
        self.sets.check(119.5)
        with self.assertRaises(KernelSetsError) as caught:
            self.sets.check(60)
        self.assertIn("--lock-time", str(caught.exception))
        for name in ("p2pwall-pc-lock-up6", "p2pwall-locked6"):
            del self.ipset.sets[name]
            with self.assertRaises(KernelSetsError) as caught:
                self.sets.check(120)
            self.assertIn(f"no ipset {name}: apply 'p2pwall-rules --enforce kernel --sets ipset'",
                          str(caught.exception))  # fmt: skip

    def test_load_swaps_in_full_sets_and_leaves_nothing_behind(self) -> None:
        self.ipset.sets[name("peer", "block", 6)][1][Entry("2001:2::9")] = None
        count = self.sets.load([(ITEM, "lock"), (PEER6, "block")],
                               [ipaddress.ip_network("198.18.5.0/24")])  # fmt: skip
        self.assertEqual(count, 2)
        self.assertEqual(self.ipset.elements(name("peer_port_client", "lock")), set(entries(ITEM)))
        self.assertEqual(self.ipset.elements(name("peer", "block", 6)), {Entry("2001:2::1")})
        self.assertEqual(self.ipset.elements("p2pwall-p6"), {Entry("2001:2::1")})
        self.assertEqual(self.ipset.elements("p2pwall-ppc4"), set(entries(ITEM)))
        self.assertEqual(self.ipset.elements("p2pwall-allowed4"), {Entry("198.18.5.0", cidr=24)})
        self.assertEqual(self.ipset.elements("p2pwall-allowed6"), set())
        self.assertFalse([n for n in self.ipset.sets if n.endswith("-new")])
        # Filled in the fresh set, never in the live one.
        self.assertTrue(all(n.endswith("-new") for _, n, _ in self.ipset.writes))

    def test_a_refused_load_leaves_the_live_set_whole(self) -> None:
        self.sets.load([(ITEM, "lock")], [])

        def refuse(op: str, set_name: str, family: int, items: list[Entry]) -> None:
            raise KernelSetsError("ipset add: set is full")

        self.ipset.write = refuse  # type: ignore[method-assign]
        with self.assertRaises(KernelSetsError):
            self.sets.load([], [])
        self.assertEqual(self.ipset.elements(name("peer_port_client", "lock")), set(entries(ITEM)))
        self.assertFalse([n for n in self.ipset.sets if n.endswith("-new")])

    def test_apply_adds_moves_and_removes_elements(self) -> None:
        shape = "p2pwall-ppc4"
        self.sets.apply([(ITEM, "lock")], [], [], [], [])
        # The shape's set first: a flow meets the action's set only through it.
        self.assertEqual(self.ipset.writes, [("add", shape, entries(ITEM)),
                                             ("add", name("peer_port_client", "lock"),
                                              entries(ITEM))])  # fmt: skip
        self.ipset.writes.clear()
        self.sets.apply([], [(ITEM, "block_udp_passes")], [], [], [])
        for action in ipsetrules.ACTION_CODES:
            held = self.ipset.elements(name("peer_port_client", action))
            self.assertEqual(held, set(entries(ITEM)) if action == "block_udp_passes" else set())
        # Added to its new action's set before it leaves the others: never in none.
        self.assertEqual(self.ipset.writes[0][:2], ("add", name("peer_port_client",
                                                                "block_udp_passes")))  # fmt: skip
        self.assertEqual(self.ipset.elements(shape), set(entries(ITEM)))
        self.ipset.writes.clear()
        self.sets.apply([], [], [ITEM], [], [])
        self.assertFalse(any(found for _, found in self.ipset.sets.values()))
        self.assertEqual(self.ipset.writes[-1], ("del", shape, entries(ITEM)), "the shape's last")

    def test_one_message_per_set_and_operation(self) -> None:
        items = [Element(4, "peer", (f"198.19.0.{n}",)) for n in range(1, 6)]
        self.sets.apply([(item, "block") for item in items], [], [], [], [])
        self.assertEqual([(op, n, len(found)) for op, n, found in self.ipset.writes],
                         [("add", "p2pwall-p4", 5), ("add", "p2pwall-p-block4", 5)])  # fmt: skip

    def test_locks_go_in_with_their_seconds_and_come_back_merged(self) -> None:
        self.sets.apply([], [], [], [Lock("198.18.1.10", 4, 7.2, True),
                                     Lock("2001:2:0:1::10", 6, 30, False)], [])  # fmt: skip
        self.assertEqual(self.ipset.sets["p2pwall-locked4"][1],
                         {Entry("198.18.1.10"): 8})  # fmt: skip
        self.assertEqual(self.ipset.sets["p2pwall-locked_flows4"][1], {Entry("198.18.1.10"): 8})
        self.assertEqual(self.ipset.elements("p2pwall-locked_flows6"), set())
        # The kernel restarted the BitTorrent client's TCP lock by itself.
        self.ipset.sets["p2pwall-locked4"][1][Entry("198.18.1.10")] = 100
        self.assertEqual(sorted(self.sets.locks(), key=lambda lock: lock.family), [
            Lock("198.18.1.10", 4, 100.0, True), Lock("2001:2:0:1::10", 6, 30.0, False),
        ])  # fmt: skip
        self.sets.apply([], [], [], [], [(4, "198.18.1.10"), (4, "198.18.1.99")])
        self.assertEqual([lock.addr for lock in self.sets.locks()], ["2001:2:0:1::10"])

    def test_a_lock_of_a_fraction_of_a_second_lasts_one(self) -> None:
        self.sets.apply([], [], [], [Lock("198.18.1.10", 4, 0.01, False)], [])
        self.assertEqual(self.ipset.sets["p2pwall-locked4"][1], {Entry("198.18.1.10"): 1})

    def test_set_allowed_replaces_the_networks(self) -> None:
        self.sets.set_allowed([ipaddress.ip_network("2001:2:5::/48")])
        self.sets.set_allowed([ipaddress.ip_network("0.0.0.0/0")])
        self.assertEqual(self.ipset.elements("p2pwall-allowed6"), set())
        self.assertEqual(len(self.ipset.elements("p2pwall-allowed4")), 2)

    def test_clear_empties_blocks_and_locks(self) -> None:
        self.sets.load([(ITEM, "lock"), (PEER6, "block")], [ipaddress.ip_network("10.0.0.0/8")])
        self.sets.apply([], [], [], [Lock("198.18.1.10", 4, 9, True)], [])
        self.sets.clear()
        self.assertEqual(self.sets.locks(), [])
        emptied = [n for n, (_, found) in self.ipset.sets.items() if not found]
        self.assertEqual(len(emptied), len(self.ipset.sets) - 1, "the allowed networks stay")

    def test_errors_are_kernel_sets_errors(self) -> None:
        self.ipset.refuse = 1
        with self.assertRaises(KernelSetsError):
            self.sets.apply([(ITEM, "lock")], [], [], [], [])


class PyrouteIpsetTests(SynchronousTestCase):
    def test_without_pyroute2_a_one_line_error(self) -> None:
        missing = mock.patch.dict(sys.modules, {"pyroute2.ipset": None})
        with missing, self.assertRaises(KernelSetsError) as caught:
            PyrouteIpset()
        self.assertEqual(str(caught.exception).splitlines(), [
            "--sets ipset needs pyroute2 (pip install pyroute2; scripts/install-deps.sh)",
        ])  # fmt: skip
