"""rtnetlink dumps: replies built byte by byte in the kernel's layouts (``linux/rtnetlink.h``,
``if_addr.h``, ``neighbour.h``), and one real dump of this namespace (no privilege needed)."""

import errno
import ipaddress
import socket
import struct

from twisted.trial.unittest import SynchronousTestCase

from p2pwall import rtnetlink
from p2pwall.rtnetlink import LinkAddress
from p2pwall.testing import packed


def attr(kind: int, data: bytes) -> bytes:
    size = 4 + len(data)
    return struct.pack("=HH", size, kind) + data + b"\0" * (-size % 4)


def msg(kind: int, body: bytes, seq: int = 1) -> bytes:
    return struct.pack("=IHHII", 16 + len(body), kind, 2, seq, 4242) + body


def link(index: int, name: bytes) -> bytes:
    ifinfo = struct.pack("=BxHiII", socket.AF_UNSPEC, 1, index, 0x1043, 0)
    return msg(rtnetlink.RTM_NEWLINK, ifinfo + attr(rtnetlink.IFLA_IFNAME, name + b"\0"))


def addr(family: int, prefixlen: int, index: int, *attrs: bytes) -> bytes:
    ifaddr = struct.pack("=BBBBI", family, prefixlen, 0x80, 0, index)
    return msg(rtnetlink.RTM_NEWADDR, ifaddr + b"".join(attrs))


def neigh(family: int, state: int, *attrs: bytes, index: int = 3) -> bytes:
    ndmsg = struct.pack("=BxxxiHBB", family, index, state, 0, 1)
    return msg(rtnetlink.RTM_NEWNEIGH, ndmsg + b"".join(attrs))


MAC = bytes.fromhex("02fc00000005")


class ParseTests(SynchronousTestCase):
    def test_links_name_their_indexes(self) -> None:
        data = link(1, b"lo") + link(7, b"green0")
        self.assertEqual(rtnetlink.parse_links(data), {1: "lo", 7: "green0"})

    def test_ipv4_address_prefers_ifa_local(self) -> None:
        # A point-to-point link: IFA_ADDRESS is the far end, IFA_LOCAL the interface's own.
        data = addr(
            socket.AF_INET,
            24,
            7,
            attr(rtnetlink.IFA_ADDRESS, packed("198.18.1.99")),
            attr(rtnetlink.IFA_LOCAL, packed("198.18.1.1")),
            attr(3, b"green0\0"),  # IFA_LABEL, padded: skipped
        )
        self.assertEqual(
            rtnetlink.parse_addresses(data, {7: "green0"}),
            [LinkAddress(7, "green0", ipaddress.ip_interface("198.18.1.1/24"))],
        )

    def test_ipv6_address_and_an_unknown_index(self) -> None:
        data = addr(socket.AF_INET6, 64, 9, attr(rtnetlink.IFA_ADDRESS, packed("2001:2::1")))
        self.assertEqual(
            rtnetlink.parse_addresses(data, {}),
            [LinkAddress(9, "9", ipaddress.ip_interface("2001:2::1/64"))],
        )

    def test_records_that_do_not_fit_are_skipped(self) -> None:
        data = (
            addr(socket.AF_INET, 33, 1, attr(rtnetlink.IFA_LOCAL, packed("198.18.1.1")))
            + addr(socket.AF_INET, 24, 1, attr(rtnetlink.IFA_LOCAL, packed("2001:2::1")))
            + addr(socket.AF_PACKET, 24, 1, attr(rtnetlink.IFA_LOCAL, packed("198.18.1.1")))
            + addr(socket.AF_INET, 24, 1)
            + msg(rtnetlink.RTM_NEWADDR, b"\0" * 4)  # shorter than ifaddrmsg
            + link(1, b"lo")  # another message type
        )
        self.assertEqual(rtnetlink.parse_addresses(data, {}), [])

    def test_a_cut_attribute_ends_the_walk(self) -> None:
        cut = struct.pack("=HH", 200, rtnetlink.IFA_LOCAL) + packed("198.18.1.1")
        data = addr(socket.AF_INET, 24, 1, attr(rtnetlink.IFA_ADDRESS, packed("198.18.1.2")), cut)
        self.assertEqual(
            [a.interface for a in rtnetlink.parse_addresses(data, {})],
            [ipaddress.ip_interface("198.18.1.2/24")],
        )

    def test_a_message_longer_than_the_data_raises_oserror(self) -> None:
        data = link(1, b"lo")
        with self.assertRaises(OSError) as caught:
            rtnetlink.parse_links(data[:-4])
        self.assertEqual(caught.exception.errno, errno.EBADMSG)
        bad = struct.pack("=IHHII", 8, rtnetlink.RTM_NEWLINK, 0, 1, 0)
        self.assertRaises(OSError, rtnetlink.parse_links, bad)

    def test_neighbours_usable_with_a_lladdr(self) -> None:
        dst4 = attr(rtnetlink.NDA_DST, packed("198.18.1.10"))
        dst6 = attr(rtnetlink.NDA_DST, packed("2001:2::10"))
        lladdr = attr(rtnetlink.NDA_LLADDR, MAC)
        reachable, stale = 0x02, 0x04
        data = (
            neigh(socket.AF_INET, reachable, dst4, lladdr)
            + neigh(socket.AF_INET6, stale, dst6, lladdr)
            + neigh(socket.AF_INET, rtnetlink.NUD_FAILED, attr(1, packed("198.18.1.11")), lladdr)
            + neigh(socket.AF_INET, rtnetlink.NUD_INCOMPLETE, attr(1, packed("198.18.1.12")))
            + neigh(socket.AF_INET, rtnetlink.NUD_NOARP, attr(1, packed("198.18.1.13")), lladdr)
            + neigh(socket.AF_INET, reachable, attr(1, packed("198.18.1.14")))  # no lladdr
            + neigh(socket.AF_INET, reachable, dst6, lladdr)  # family and length disagree
        )
        self.assertEqual(
            rtnetlink.parse_neighbours(data),
            {packed("198.18.1.10"): MAC, packed("2001:2::10"): MAC},
        )

    def test_each_mac_names_the_interface_it_was_seen_on(self) -> None:
        other = bytes.fromhex("02fc00000009")
        data = (
            neigh(socket.AF_INET6, 0x02, attr(rtnetlink.NDA_DST, packed("2001:2::10")),
                  attr(rtnetlink.NDA_LLADDR, MAC), index=7)
            + neigh(socket.AF_INET, 0x04, attr(rtnetlink.NDA_DST, packed("198.18.1.9")),
                    attr(rtnetlink.NDA_LLADDR, other), index=9)
            + neigh(socket.AF_INET, rtnetlink.NUD_FAILED, attr(1, packed("198.18.1.8")),
                    attr(rtnetlink.NDA_LLADDR, bytes(6)), index=4)
        )  # fmt: skip
        self.assertEqual(rtnetlink.parse_neighbour_links(data), {MAC: 7, other: 9})

    def test_a_resolve_request_is_ip_neigh_replace_use(self) -> None:
        """``RTM_NEWNEIGH`` (create, replace, acknowledged), ``ndmsg`` with ``NTF_USE`` and the
        interface, the address as ``NDA_DST``: what ``ip neigh replace ADDR dev DEV use`` sends."""
        flags = 0x1 | 0x4 | 0x400 | 0x100  # NLM_F_REQUEST | ACK | CREATE | REPLACE
        for text, family in (("2001:2:0:1::11", socket.AF_INET6), ("198.18.1.11", socket.AF_INET)):
            body = struct.pack("=BxxxiHBB", family, 7, 0, 0x01, 0) + attr(1, packed(text))
            header = struct.pack("=IHHII", 16 + len(body), 28, flags, 5, 0)
            self.assertEqual(rtnetlink.resolve_request(packed(text), 7, seq=5), header + body)

    def test_an_error_reply_raises_its_errno(self) -> None:
        data = msg(rtnetlink.NLMSG_ERROR, struct.pack("=i", -errno.EPERM) + b"\0" * 16)
        ((_kind, _seq, start, end),) = rtnetlink.messages(data)
        with self.assertRaises(OSError) as caught:
            rtnetlink.raise_error(data, start, end)
        self.assertEqual(caught.exception.errno, errno.EPERM)


class KernelTests(SynchronousTestCase):
    """This namespace's own tables: dumping needs no privilege."""

    def test_loopback_is_listed(self) -> None:
        found = rtnetlink.addresses()
        self.assertIn(
            ("lo", ipaddress.ip_interface("127.0.0.1/8")),
            [(a.ifname, a.interface) for a in found],
        )
        self.assertEqual(
            {a.ifindex for a in found if a.ifname == "lo"}, {socket.if_nametoindex("lo")}
        )

    def test_a_mac_the_table_does_not_hold_is_not_resolved(self) -> None:
        self.assertFalse(rtnetlink.resolve(packed("2001:2::99"), bytes.fromhex("02fcfffffffe")))

    def test_neighbours_is_a_mapping_of_addresses_to_macs(self) -> None:
        for ip, mac in rtnetlink.neighbours().items():
            self.assertIn(len(ip), (4, 16))
            self.assertTrue(mac)

    def test_a_refused_request_raises_the_kernels_errno(self) -> None:
        with self.assertRaises(OSError) as caught:
            rtnetlink.dump(1000, b"")
        self.assertEqual(caught.exception.errno, errno.EOPNOTSUPP)

    def test_a_dump_over_the_entry_bound_raises(self) -> None:
        self.patch(rtnetlink, "MAX_ENTRIES", 0)
        with self.assertRaises(OSError) as caught:
            rtnetlink.addresses()
        self.assertEqual(caught.exception.errno, errno.E2BIG)
