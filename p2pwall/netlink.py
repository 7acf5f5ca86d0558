"""The NFQUEUE netlink protocol (``nfnetlink_queue``), as bytes in and bytes out; no I/O.

p2pwall speaks it itself rather than through libnetfilter_queue for three things the bindings
lack: **batch verdicts** (one ``NFQNL_MSG_VERDICT_BATCH`` accepts every packet of a reactor turn
up to an id, so a turn costs one ``send`` instead of one per packet), a copy range of a whole
64 KiB packet (NetfilterQueue caps it at 4016 bytes, truncating large DNS answers), and the
``NFQA_CFG_F_FAIL_OPEN`` flag. Layouts follow ``linux/netfilter/nfnetlink_queue.h``: netlink
headers are host order, nfnetlink payloads network order, attributes padded to 4 bytes.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable, Iterator

NETLINK_NETFILTER = 12  # linux/netlink.h
NFNL_SUBSYS_QUEUE = 3  # linux/netfilter/nfnetlink.h

# linux/netlink.h: message types and flags.
NLMSG_ERROR = 2
NLM_F_REQUEST = 1
NLM_F_ACK = 4
# Messages in a datagram and attributes in a message each start on a 4-byte boundary
# (NLMSG_ALIGNTO, NLA_ALIGNTO); these are the masks NLMSG_ALIGN and NLA_ALIGN round up with.
NLMSG_ALIGNTO = 4
NLA_ALIGNTO = 4
_MSG_ALIGN = NLMSG_ALIGNTO - 1
_ATTR_ALIGN = NLA_ALIGNTO - 1

# linux/netfilter/nfnetlink.h: an nfnetlink type is the subsystem << 8 | the subsystem's own
# type (nfnetlink_queue.h, enum nfqnl_msg_types: PACKET 0, VERDICT 1, CONFIG 2, VERDICT_BATCH 3).
MSG_PACKET = NFNL_SUBSYS_QUEUE << 8 | 0
MSG_VERDICT = NFNL_SUBSYS_QUEUE << 8 | 1
MSG_CONFIG = NFNL_SUBSYS_QUEUE << 8 | 2
MSG_VERDICT_BATCH = NFNL_SUBSYS_QUEUE << 8 | 3
AF_UNSPEC = 0  # nfgenmsg.nfgen_family: the queue subsystem ignores it
NFNETLINK_V0 = 0  # nfgenmsg.version

# Attributes of a queued packet (nfnetlink_queue.h, enum nfqnl_attr_type).
NFQA_PACKET_HDR = 1
NFQA_VERDICT_HDR = 2
NFQA_IFINDEX_INDEV = 5
NFQA_HWADDR = 9
NFQA_PAYLOAD = 10

# Attributes and values of a config message (nfnetlink_queue.h: enum nfqnl_attr_config,
# enum nfqnl_msg_config_cmds, enum nfqnl_config_mode, NFQA_CFG_F_FAIL_OPEN).
NFQA_CFG_CMD = 1
NFQA_CFG_PARAMS = 2
NFQA_CFG_QUEUE_MAXLEN = 3
NFQA_CFG_MASK = 4
NFQA_CFG_FLAGS = 5
CMD_BIND = 1
COPY_PACKET = 2
F_FAIL_OPEN = 1 << 0
# The copy range asked for: all of it. The field is 32 bits, but nla_len is 16, so the kernel
# copies at most NFQNL_MAX_COPY_RANGE = 0xffff - NLA_HDRLEN (net/netfilter/nfnetlink_queue.c).
MAX_COPY_RANGE = 0xFFFF

# Verdicts (linux/netfilter.h).
NF_DROP = 0
NF_ACCEPT = 1

ETH_P_IP = 0x0800  # linux/if_ether.h: the hw_protocol of the fakes' packets

_HEADER = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, seq, portid
_NFGEN = struct.Struct("!BBH")  # nfgenmsg: family, version, queue number (res_id)
_ATTR = struct.Struct("=HH")  # nlattr: length, type
_TYPE = "=4xH"  # a message up to the end of its type (nlmsg_len skipped)
_TYPE_END = struct.calcsize(_TYPE)
# A message's type and its first attribute's length and type: the rest of nlmsghdr and the
# nfgenmsg skipped.
_FIRST = struct.Struct(f"{_TYPE}{_HEADER.size - _TYPE_END + _NFGEN.size}xHH")
_PACKET_HDR = struct.Struct("!IHB")  # nfqnl_msg_packet_hdr (packed): id, hw_protocol, hook
_PACKET_HW = struct.Struct("!H2x8s")  # nfqnl_msg_packet_hw: hw_addrlen, _pad, hw_addr[8]
_VERDICT_HDR = struct.Struct("!II")  # nfqnl_msg_verdict_hdr: verdict, id
_CONFIG_CMD = struct.Struct("!BxH")  # nfqnl_msg_config_cmd: command, _pad, pf
_CONFIG_PARAMS = struct.Struct("!IB")  # nfqnl_msg_config_params (packed): copy_range, mode
_ERROR = struct.Struct("=i")  # nlmsgerr: error (negative errno; 0 for an ack)
_BE32 = struct.Struct("!I")
_HWADDR_MIN = _ATTR.size + _PACKET_HW.size
_IFINDEX_SIZE = _ATTR.size + _BE32.size

HEADER_SIZE = _HEADER.size + _NFGEN.size
_FIRST_DATA = HEADER_SIZE + _ATTR.size  # where the first attribute's data starts
# The shortest packet message the kernel sends: the headers and the packet header attribute,
# padded (nfqnl_build_packet_message puts it first, with nla_put, which pads to NLA_ALIGNTO).
_PACKET_HDR_END = HEADER_SIZE + ((_ATTR.size + _PACKET_HDR.size + _ATTR_ALIGN) & ~_ATTR_ALIGN)

# The biggest message: the headers, room for the metadata attributes (the ones the kernel adds
# without NFQA_CFG_F_CONNTRACK or SECCTX take about 150 bytes), a packet of MAX_COPY_RANGE.
_METADATA_ROOM = 1024
MAX_MESSAGE = HEADER_SIZE + _METADATA_ROOM + MAX_COPY_RANGE


def attribute(kind: int, data: bytes) -> bytes:
    """One netlink attribute, padded to a multiple of 4 bytes."""
    size = _ATTR.size + len(data)
    return _ATTR.pack(size, kind) + data + b"\0" * (-size & _ATTR_ALIGN)


def message(kind: int, queue_num: int, attributes: bytes, flags: int = 0, seq: int = 0) -> bytes:
    """One nfnetlink message to (or, in tests, from) queue ``queue_num``."""
    size = HEADER_SIZE + len(attributes)
    return (
        _HEADER.pack(size, kind, NLM_F_REQUEST | flags, seq, 0)
        + _NFGEN.pack(AF_UNSPEC, NFNETLINK_V0, queue_num)
        + attributes
    )


def config(
    queue_num: int,
    command: int | None = None,
    *,
    copy_range: int | None = None,
    max_len: int | None = None,
    fail_open: bool | None = None,
    seq: int = 0,
) -> bytes:
    """A config message asking for an ack; the kernel applies its parts in this order, so one
    message can bind the queue and set it up."""
    parts = []
    if command is not None:
        parts.append(attribute(NFQA_CFG_CMD, _CONFIG_CMD.pack(command, AF_UNSPEC)))
    if copy_range is not None:
        parts.append(attribute(NFQA_CFG_PARAMS, _CONFIG_PARAMS.pack(copy_range, COPY_PACKET)))
    if max_len is not None:
        parts.append(attribute(NFQA_CFG_QUEUE_MAXLEN, _BE32.pack(max_len)))
    if fail_open is not None:
        parts.append(attribute(NFQA_CFG_FLAGS, _BE32.pack(F_FAIL_OPEN if fail_open else 0)))
        parts.append(attribute(NFQA_CFG_MASK, _BE32.pack(F_FAIL_OPEN)))
    return message(MSG_CONFIG, queue_num, b"".join(parts), NLM_F_ACK, seq)


def verdicts(queue_num: int, drops: Iterable[int], accept_through: int | None) -> bytes:
    """Verdict messages for one batch, to be sent in one go: a ``DROP`` per dropped id first,
    then one batch ``ACCEPT`` for every packet still held with an id up to ``accept_through``
    (the kernel handles the messages in order, so the drops stand)."""
    parts = [
        message(
            MSG_VERDICT, queue_num, attribute(NFQA_VERDICT_HDR, _VERDICT_HDR.pack(NF_DROP, id_))
        )
        for id_ in drops
    ]
    if accept_through is not None:
        header = attribute(NFQA_VERDICT_HDR, _VERDICT_HDR.pack(NF_ACCEPT, accept_through))
        parts.append(message(MSG_VERDICT_BATCH, queue_num, header))
    return b"".join(parts)


def messages(data: bytes | bytearray | memoryview, size: int) -> Iterator[tuple[int, int, int]]:
    """``(type, start, end)`` of each message in the first ``size`` bytes of ``data``; a
    truncated or impossible header ends the walk with ``ValueError``."""
    offset = 0
    while offset + _HEADER.size <= size:
        length, kind = _HEADER.unpack_from(data, offset)[:2]
        if length < _HEADER.size or offset + length > size:
            raise ValueError(f"netlink message of {length} bytes at {offset} of {size}")
        yield kind, offset, offset + length
        offset += (length + _MSG_ALIGN) & ~_MSG_ALIGN


QueuedPacket = tuple[int, int, int, int, int, int]


class PacketParser:
    """Reads ``MSG_PACKET`` messages: ``(packet id, hook, start, end, hw_at, indev_at)``, where
    ``data[start:end]`` is the IP packet (left in place: the caller decodes it there),
    ``hwaddr(data, hw_at)`` its source MAC and ``ifindex(data, indev_at)`` the index of the
    interface it came in on (read only when wanted).

    The per-packet hot path. The kernel puts the packet header first and the payload last
    (``nfqnl_build_packet_message``), and the attributes between depend only on the hook and
    interfaces, so consecutive messages share one layout. A full walk over the attributes
    remembers it as a ``struct`` that reads every attribute header at once; the next message
    is checked against it in one ``unpack`` and one compare (every header in the chain must
    match exactly, so the result is the walk's), and walked again when it differs.
    """

    def __init__(self) -> None:
        self._headers: struct.Struct | None = None
        self._expected: tuple[int, ...] = ()
        self._payload_at = 0
        self._payload_data = 0
        self._hw_at = 0
        self._indev_at = 0

    def parse(self, data: bytes | bytearray | memoryview, size: int) -> QueuedPacket | None:
        """The packet in ``data[:size]``; ``None`` for another kind of message (an error
        report, say); ``ValueError`` for a cut or impossible one."""
        headers = self._headers
        start = self._payload_data
        if headers is not None and size >= start:
            values = headers.unpack_from(data)
            end = self._payload_at + values[-2]
            if (
                values[:-2] == self._expected
                and values[-1] == NFQA_PAYLOAD
                and start <= end <= size
            ):
                packet_id, _proto, hook = _PACKET_HDR.unpack_from(data, _FIRST_DATA)
                return packet_id, hook, start, end, self._hw_at, self._indev_at
        return self._walk(data, size)

    def _walk(self, data: bytes | bytearray | memoryview, size: int) -> QueuedPacket | None:
        header = _packet_header(data, size)
        if header is None:
            return None
        packet_id, hook, length = header
        chain = [(HEADER_SIZE, length, NFQA_PACKET_HDR)]
        hw_at = indev_at = 0
        offset = (HEADER_SIZE + length + _ATTR_ALIGN) & ~_ATTR_ALIGN
        while offset + _ATTR.size <= size:
            length, attr = _ATTR.unpack_from(data, offset)
            end = offset + length
            if length < _ATTR.size or end > size:
                raise ValueError(f"netlink attribute of {length} bytes at {offset} of {size}")
            if attr == NFQA_PAYLOAD:
                self._remember(chain, offset, hw_at, indev_at)
                return packet_id, hook, offset + _ATTR.size, end, hw_at, indev_at
            if attr == NFQA_HWADDR and length >= _HWADDR_MIN:
                hw_at = offset
            elif attr == NFQA_IFINDEX_INDEV and length == _IFINDEX_SIZE:
                indev_at = offset
            chain.append((offset, length, attr))
            offset = (end + _ATTR_ALIGN) & ~_ATTR_ALIGN
        return packet_id, hook, size, size, hw_at, indev_at

    def _remember(
        self, chain: list[tuple[int, int, int]], payload_at: int, hw_at: int, indev_at: int
    ) -> None:
        fmt, position, expected = [_TYPE], _TYPE_END, [MSG_PACKET]
        for offset, length, attr in chain:
            fmt.append(f"{offset - position}xHH")
            position = offset + _ATTR.size
            expected += (length, attr)
        fmt.append(f"{payload_at - position}xHH")
        self._headers = struct.Struct("".join(fmt))
        self._expected = tuple(expected)
        self._payload_at = payload_at
        self._payload_data = payload_at + _ATTR.size
        self._hw_at = hw_at
        self._indev_at = indev_at


def _packet_header(data: bytes | bytearray | memoryview, size: int) -> tuple[int, int, int] | None:
    """``(packet id, hook, header attribute length)`` of a ``MSG_PACKET`` message, ``None``
    for another kind of message, ``ValueError`` when the message is cut before its header."""
    if size < _FIRST.size:
        raise ValueError(f"netlink message of {size} bytes")
    kind, length, attr = _FIRST.unpack_from(data)
    if kind != MSG_PACKET:
        return None
    if attr != NFQA_PACKET_HDR or length < _ATTR.size + _PACKET_HDR.size or size < _PACKET_HDR_END:
        raise ValueError("packet message without a packet header")
    packet_id, _proto, hook = _PACKET_HDR.unpack_from(data, _FIRST_DATA)
    return packet_id, hook, length


def packet_id(data: bytes | bytearray | memoryview, size: int) -> int | None:
    """The id of a packet message whose packet header is whole, however broken the rest."""
    try:
        header = _packet_header(data, size)
    except ValueError:
        return None
    return header[0] if header else None


def hwaddr(data: bytes | bytearray | memoryview, at: int) -> bytes | None:
    """The address in the ``NFQA_HWADDR`` attribute at ``at`` (0: none)."""
    if not at:
        return None
    length, address = _PACKET_HW.unpack_from(data, at + _ATTR.size)
    return address[:length]


def ifindex(data: bytes | bytearray | memoryview, at: int) -> int:
    """The interface index in the ``NFQA_IFINDEX_INDEV`` attribute at ``at`` (0: none)."""
    return _BE32.unpack_from(data, at + _ATTR.size)[0] if at else 0


def message_type(data: bytes | bytearray | memoryview) -> int | None:
    """The type of the message at the start of ``data``; ``None`` when it is too short."""
    return _HEADER.unpack_from(data)[1] if len(data) >= _HEADER.size else None


def message_seq(data: bytes | bytearray | memoryview, start: int) -> int:
    """The sequence number of the message at ``start`` (an ack echoes the request's)."""
    return _HEADER.unpack_from(data, start)[3]


def error_code(data: bytes | bytearray | memoryview, start: int, end: int) -> int:
    """The errno of the ``NLMSG_ERROR`` message in ``data[start:end]`` (0 for an ack)."""
    if end - start < _HEADER.size + _ERROR.size:
        raise ValueError(f"error report of {end - start} bytes")
    return -_ERROR.unpack_from(data, start + _HEADER.size)[0]


def error_text(code: int) -> str:
    """``os.strerror``, for any number a message may carry."""
    try:
        return os.strerror(code)
    except (ValueError, OverflowError):
        return f"error {code}"


def packet_message(
    queue_num: int,
    packet_id: int,
    hook: int,
    payload: bytes,
    hw: bytes | None = None,
    indev: int = 0,
) -> bytes:
    """A ``MSG_PACKET`` message as the kernel sends it (for fakes and tests)."""
    parts = [attribute(NFQA_PACKET_HDR, _PACKET_HDR.pack(packet_id, ETH_P_IP, hook))]
    if indev:
        parts.append(attribute(NFQA_IFINDEX_INDEV, _BE32.pack(indev)))
    if hw is not None:
        parts.append(attribute(NFQA_HWADDR, _PACKET_HW.pack(len(hw), hw)))
    parts.append(attribute(NFQA_PAYLOAD, payload))
    return message(MSG_PACKET, queue_num, b"".join(parts))


def verdicts_in(data: bytes) -> Iterator[tuple[int, int, int]]:
    """``(message type, verdict, packet id)`` of each verdict message in ``data`` (for fakes)."""
    for kind, start, _end in messages(data, len(data)):
        _length, attr = _ATTR.unpack_from(data, start + HEADER_SIZE)
        if attr != NFQA_VERDICT_HDR:
            raise ValueError(f"verdict message without a verdict header at {start}")
        verdict, packet_id = _VERDICT_HDR.unpack_from(data, start + HEADER_SIZE + _ATTR.size)
        yield kind, verdict, packet_id
