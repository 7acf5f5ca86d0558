"""The kernel's address and neighbour tables, read over rtnetlink (``NETLINK_ROUTE``).

The green interfaces' networks (``--green-if``) and the neighbour table (which MAC address the
gateway talks to for a green address) come from here: a dump request, the kernel's replies
parsed with ``struct``, no subprocess and no library. Dumping needs no privilege; asking the
kernel to resolve an address (``resolve``) needs CAP_NET_ADMIN. The parse is
pure (bytes in, records out) and the socket part thin; both are bounded (``MAX_ENTRIES``
records, ``MAX_BYTES`` read, ``TIMEOUT`` seconds) and raise only ``OSError``. Layouts follow
``linux/netlink.h``, ``linux/rtnetlink.h``, ``linux/if_addr.h`` and ``linux/neighbour.h``: all
host byte order, attributes padded to 4 bytes.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass

NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_DUMP = 0x300  # NLM_F_ROOT | NLM_F_MATCH
NLM_F_REPLACE = 0x100
NLM_F_CREATE = 0x400

RTM_NEWLINK = 16
RTM_GETLINK = 18
RTM_NEWADDR = 20
RTM_GETADDR = 22
RTM_NEWNEIGH = 28
RTM_GETNEIGH = 30

IFLA_IFNAME = 3
IFA_ADDRESS = 1
IFA_LOCAL = 2
NDA_DST = 1
NDA_LLADDR = 2

NTF_USE = 0x01  # "use this entry": the kernel resolves it as before sending a packet there

NUD_INCOMPLETE = 0x01
NUD_FAILED = 0x20
NUD_NOARP = 0x40
_UNUSABLE = NUD_INCOMPLETE | NUD_FAILED | NUD_NOARP

# Bounds of one dump: a gateway has a few interfaces and at most some thousands of neighbours.
MAX_ENTRIES = 65_536
MAX_BYTES = 16 * 1024 * 1024
TIMEOUT = 2.0
_RECV_SIZE = 64 * 1024

_HEADER = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, seq, portid
_ATTR = struct.Struct("=HH")  # nlattr: length, type
_IFINFO = struct.Struct("=BxHiII")  # ifinfomsg: family, type, index, flags, change
_IFADDR = struct.Struct("=BBBBI")  # ifaddrmsg: family, prefixlen, flags, scope, index
_NDMSG = struct.Struct("=BxxxiHBB")  # ndmsg: family, ifindex, state, flags, type
_ERROR = struct.Struct("=i")
_NLA_TYPE_MASK = 0x3FFF  # without NLA_F_NESTED and NLA_F_NET_BYTEORDER
_FAMILIES = {socket.AF_INET: 4, socket.AF_INET6: 16}

Interface = ipaddress.IPv4Interface | ipaddress.IPv6Interface


@dataclass(frozen=True)
class LinkAddress:
    """One address configured on an interface, with its prefix length."""

    ifindex: int
    ifname: str
    interface: Interface


def addresses() -> list[LinkAddress]:
    """Every address of this network namespace, IPv4 and IPv6, with its interface."""
    names = parse_links(dump(RTM_GETLINK, _IFINFO.pack(socket.AF_UNSPEC, 0, 0, 0, 0)))
    return parse_addresses(dump(RTM_GETADDR, _IFADDR.pack(socket.AF_UNSPEC, 0, 0, 0, 0)), names)


def neighbours() -> dict[bytes, bytes]:
    """The neighbour table (ARP and NDP): packed IP address to MAC address, usable entries
    only (with a link-layer address, not failed, incomplete or NOARP)."""
    return parse_neighbours(dump(RTM_GETNEIGH, _NDMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)))


def resolve(addr: bytes, mac: bytes) -> bool:
    """Have the kernel resolve ``addr`` (packed; neighbour solicitation or ARP request) on the
    link where ``mac`` already owns another address, as it would before forwarding a packet
    there: a host's new address (an IPv6 temporary one) is in the table a moment later. False
    when no usable entry holds ``mac``; a refused request raises ``OSError``."""
    links = parse_neighbour_links(dump(RTM_GETNEIGH, _NDMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)))
    index = links.get(mac)
    if index is None:
        return False
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as sock:
        sock.settimeout(TIMEOUT)
        sock.bind((0, 0))
        sock.send(resolve_request(addr, index))
        data = sock.recv(_RECV_SIZE)
    for message_kind, _seq, start, end in messages(data):
        if message_kind == NLMSG_ERROR:
            raise_error(data, start, end)
            return True
    raise OSError(errno.EBADMSG, "rtnetlink: no acknowledgement")


def resolve_request(addr: bytes, ifindex: int, seq: int = 1) -> bytes:
    """``RTM_NEWNEIGH`` with ``NTF_USE`` for ``addr`` on interface ``ifindex`` (``ip neigh
    replace ADDR dev DEV use``), acknowledged."""
    family = socket.AF_INET if len(addr) == 4 else socket.AF_INET6
    body = _NDMSG.pack(family, ifindex, 0, NTF_USE, 0)
    body += _ATTR.pack(_ATTR.size + len(addr), NDA_DST) + addr
    flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE
    return _HEADER.pack(_HEADER.size + len(body), RTM_NEWNEIGH, flags, seq, 0) + body


def dump(kind: int, header: bytes, seq: int = 1) -> bytes:
    """Send one dump request and return the kernel's reply messages, up to ``NLMSG_DONE``
    (excluded), as one byte string; an error reply, a timeout or a bound exceeded raises."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as sock:
        sock.settimeout(TIMEOUT)
        sock.bind((0, 0))
        size = _HEADER.size + len(header)
        sock.send(_HEADER.pack(size, kind, NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + header)
        deadline = time.monotonic() + TIMEOUT
        replies = bytearray()
        entries = 0
        while True:
            sock.settimeout(max(0.0, deadline - time.monotonic()))
            data = sock.recv(_RECV_SIZE)
            if not data:
                raise OSError(errno.EBADMSG, "rtnetlink: empty reply")
            for message_kind, message_seq, start, end in messages(data):
                if message_seq != seq:
                    continue
                if message_kind == NLMSG_DONE:
                    return bytes(replies)
                if message_kind == NLMSG_ERROR:
                    raise_error(data, start, end)
                replies += data[start - _HEADER.size : end]
                entries += 1
            if entries > MAX_ENTRIES or len(replies) > MAX_BYTES:
                raise OSError(errno.E2BIG, f"rtnetlink: dump {kind} over {MAX_ENTRIES} entries")


def messages(data: bytes) -> Iterator[tuple[int, int, int, int]]:
    """Each netlink message in ``data``: its type, sequence number, where its body starts and
    where it ends. A length that does not fit raises ``OSError`` (EBADMSG)."""
    at = 0
    while at + _HEADER.size <= len(data):
        length, kind, _flags, seq, _portid = _HEADER.unpack_from(data, at)
        if length < _HEADER.size or at + length > len(data):
            raise OSError(errno.EBADMSG, f"rtnetlink: bad message length {length}")
        yield kind, seq, at + _HEADER.size, at + length
        at += (length + 3) & ~3


def raise_error(data: bytes, start: int, end: int) -> None:
    """An ``NLMSG_ERROR`` reply: its errno as ``OSError`` (0 is an acknowledgement)."""
    if end - start < _ERROR.size:
        raise OSError(errno.EBADMSG, "rtnetlink: short error reply")
    (code,) = _ERROR.unpack_from(data, start)
    if code:
        raise OSError(-code, f"rtnetlink: {os.strerror(-code)}")


def attributes(data: bytes, start: int, end: int) -> dict[int, bytes]:
    """A message's attributes by type (the last of a repeated type wins); a cut attribute
    ends the walk."""
    found = {}
    at = start
    while at + _ATTR.size <= end:
        length, kind = _ATTR.unpack_from(data, at)
        if length < _ATTR.size or at + length > end:
            break
        found[kind & _NLA_TYPE_MASK] = data[at + _ATTR.size : at + length]
        at += (length + 3) & ~3
    return found


def parse_links(data: bytes) -> dict[int, str]:
    """Interface index to name, from an ``RTM_GETLINK`` dump's replies."""
    names = {}
    for kind, _seq, start, end in messages(data):
        if kind != RTM_NEWLINK or end - start < _IFINFO.size:
            continue
        index = _IFINFO.unpack_from(data, start)[2]
        name = attributes(data, start + _IFINFO.size, end).get(IFLA_IFNAME)
        if name:
            names[index] = name.split(b"\0", 1)[0].decode("utf-8", "replace")
    return names


def parse_addresses(data: bytes, names: dict[int, str]) -> list[LinkAddress]:
    """The addresses in an ``RTM_GETADDR`` dump's replies. ``IFA_LOCAL`` is the interface's
    own address where present (on a point-to-point link ``IFA_ADDRESS`` is the far end's);
    an interface missing from ``names`` (gone since) is named by its index."""
    found = []
    for kind, _seq, start, end in messages(data):
        if kind != RTM_NEWADDR or end - start < _IFADDR.size:
            continue
        family, prefixlen, _flags, _scope, index = _IFADDR.unpack_from(data, start)
        size = _FAMILIES.get(family)
        attrs = attributes(data, start + _IFADDR.size, end)
        packed = attrs.get(IFA_LOCAL, attrs.get(IFA_ADDRESS))
        if size is None or packed is None or len(packed) != size or prefixlen > size * 8:
            continue
        interface = ipaddress.ip_interface((packed, prefixlen))
        found.append(LinkAddress(index, names.get(index, str(index)), interface))
    return found


def parse_neighbours(data: bytes) -> dict[bytes, bytes]:
    """Packed IP address to MAC address, from an ``RTM_GETNEIGH`` dump's replies."""
    return {dst: lladdr for dst, lladdr, _index in usable_neighbours(data)}


def parse_neighbour_links(data: bytes) -> dict[bytes, int]:
    """MAC address to the index of the interface it was last seen on, from the same dump."""
    return {lladdr: index for _dst, lladdr, index in usable_neighbours(data)}


def usable_neighbours(data: bytes) -> Iterator[tuple[bytes, bytes, int]]:
    """Each usable entry of an ``RTM_GETNEIGH`` dump's replies (with a link-layer address,
    not failed, incomplete or NOARP): its packed address, MAC and interface index."""
    for kind, _seq, start, end in messages(data):
        if kind != RTM_NEWNEIGH or end - start < _NDMSG.size:
            continue
        family, index, state, _flags, _type = _NDMSG.unpack_from(data, start)
        if state & _UNUSABLE:
            continue
        attrs = attributes(data, start + _NDMSG.size, end)
        dst, lladdr = attrs.get(NDA_DST), attrs.get(NDA_LLADDR)
        if dst is not None and lladdr and len(dst) == _FAMILIES.get(family):
            yield dst, lladdr, index
