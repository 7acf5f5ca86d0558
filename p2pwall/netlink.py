"""The NFQUEUE netlink protocol (``nfnetlink_queue``), as bytes in and bytes out; no I/O.

p2pwall speaks it itself rather than through libnetfilter_queue for three things the bindings
lack: **batch verdicts** (one ``NFQNL_MSG_VERDICT_BATCH`` accepts every packet of a reactor turn
up to an id, so a turn costs one ``send`` instead of one per packet), a copy range of a whole
64 KiB packet (NetfilterQueue caps it at 4016 bytes, truncating large DNS answers), and the
``NFQA_CFG_F_FAIL_OPEN`` flag. Layouts follow ``linux/netfilter/nfnetlink_queue.h``: netlink
headers are host order, nfnetlink payloads network order, attributes padded to 4 bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator

NETLINK_NETFILTER = 12
NFNL_SUBSYS_QUEUE = 3

NLMSG_ERROR = 2
NLM_F_REQUEST = 1
NLM_F_ACK = 4

MSG_PACKET = NFNL_SUBSYS_QUEUE << 8 | 0
MSG_VERDICT = NFNL_SUBSYS_QUEUE << 8 | 1
MSG_CONFIG = NFNL_SUBSYS_QUEUE << 8 | 2
MSG_VERDICT_BATCH = NFNL_SUBSYS_QUEUE << 8 | 3

# Attributes of a queued packet (NFQA_*).
NFQA_PACKET_HDR = 1
NFQA_VERDICT_HDR = 2
NFQA_HWADDR = 9
NFQA_PAYLOAD = 10

# Attributes and values of a config message (NFQA_CFG_*).
NFQA_CFG_CMD = 1
NFQA_CFG_PARAMS = 2
NFQA_CFG_QUEUE_MAXLEN = 3
NFQA_CFG_MASK = 4
NFQA_CFG_FLAGS = 5
CMD_BIND = 1
CMD_UNBIND = 2
COPY_PACKET = 2
F_FAIL_OPEN = 1
MAX_COPY_RANGE = 0xFFFF

# The biggest message: netlink and nfnetlink headers, the metadata attributes, a 64 KiB packet.
MAX_MESSAGE = 0x10000 + 1024

_HEADER = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, seq, portid
_NFGEN = struct.Struct("!BBH")  # nfgenmsg: family, version, queue number
_ATTR = struct.Struct("=HH")  # nlattr: length, type
_PACKET_HDR = struct.Struct("!IHB")  # packet id, hw protocol, hook
_VERDICT_HDR = struct.Struct("!II")  # verdict, packet id
_ERROR = struct.Struct("=i")
_HWADDR_LEN = struct.Struct("!H")
_BE32 = struct.Struct("!I")

HEADER_SIZE = _HEADER.size + _NFGEN.size
_ALIGN = 3


def attribute(kind: int, data: bytes) -> bytes:
    """One netlink attribute, padded to a multiple of 4 bytes."""
    size = _ATTR.size + len(data)
    return _ATTR.pack(size, kind) + data + b"\0" * (-size & _ALIGN)


def message(kind: int, queue_num: int, attributes: bytes, flags: int = 0, seq: int = 0) -> bytes:
    """One nfnetlink message to (or, in tests, from) queue ``queue_num``."""
    size = HEADER_SIZE + len(attributes)
    return (
        _HEADER.pack(size, kind, NLM_F_REQUEST | flags, seq, 0)
        + _NFGEN.pack(0, 0, queue_num)
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
        parts.append(attribute(NFQA_CFG_CMD, struct.pack("!BxH", command, 0)))
    if copy_range is not None:
        parts.append(attribute(NFQA_CFG_PARAMS, struct.pack("!IB", copy_range, COPY_PACKET)))
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
        message(MSG_VERDICT, queue_num, attribute(NFQA_VERDICT_HDR, _VERDICT_HDR.pack(0, id_)))
        for id_ in drops
    ]
    if accept_through is not None:
        header = attribute(NFQA_VERDICT_HDR, _VERDICT_HDR.pack(1, accept_through))
        parts.append(message(MSG_VERDICT_BATCH, queue_num, header))
    return b"".join(parts)


def message_kind(buffer: bytes | bytearray | memoryview) -> int:
    """The type of the message at the start of ``buffer``."""
    return _HEADER.unpack_from(buffer)[1]


def messages(data: bytes | bytearray | memoryview, size: int) -> Iterator[tuple[int, int, int]]:
    """``(type, start, end)`` of each message in the first ``size`` bytes of ``data``; a
    truncated or impossible header ends the walk with ``ValueError``."""
    offset = 0
    while offset + _HEADER.size <= size:
        length, kind = _HEADER.unpack_from(data, offset)[:2]
        if length < _HEADER.size or offset + length > size:
            raise ValueError(f"netlink message of {length} bytes at {offset} of {size}")
        yield kind, offset, offset + length
        offset += (length + _ALIGN) & ~_ALIGN


def attributes(
    data: bytes | bytearray | memoryview, start: int, end: int
) -> dict[int, tuple[int, int]]:
    """Where each attribute's data lies in ``data[start:end]``: ``{type: (first, stop)}``."""
    found = {}
    unpack = _ATTR.unpack_from
    while start + 4 <= end:
        length, kind = unpack(data, start)
        if length < 4 or start + length > end:
            raise ValueError(f"netlink attribute of {length} bytes at {start} of {end}")
        found[kind & 0x3FFF] = (start + 4, start + length)
        start += (length + _ALIGN) & ~_ALIGN
    return found


def queued_packet(
    data: bytes | bytearray | memoryview, size: int
) -> tuple[int, int, bytes, bytes | None]:
    """``(packet id, hook, IP packet, source MAC or None)`` of a ``MSG_PACKET`` message."""
    found = attributes(data, HEADER_SIZE, size)
    first, _ = found[NFQA_PACKET_HDR]
    packet_id, _proto, hook = _PACKET_HDR.unpack_from(data, first)
    first, stop = found.get(NFQA_PAYLOAD, (0, 0))
    payload = bytes(data[first:stop])
    hw = found.get(NFQA_HWADDR)
    if hw is None:
        return packet_id, hook, payload, None
    length = _HWADDR_LEN.unpack_from(data, hw[0])[0]
    return packet_id, hook, payload, bytes(data[hw[0] + 4 : hw[0] + 4 + min(length, 8)])


def message_seq(data: bytes | bytearray | memoryview, start: int) -> int:
    """The sequence number of the message at ``start`` (an ack echoes the request's)."""
    return _HEADER.unpack_from(data, start)[3]


def error_code(data: bytes | bytearray | memoryview, start: int) -> int:
    """The errno of an ``NLMSG_ERROR`` message (0 for an ack)."""
    return -_ERROR.unpack_from(data, start + _HEADER.size)[0]


def packet_message(
    queue_num: int, packet_id: int, hook: int, payload: bytes, hw: bytes | None = None
) -> bytes:
    """A ``MSG_PACKET`` message as the kernel sends it (for fakes and tests)."""
    parts = [attribute(NFQA_PACKET_HDR, _PACKET_HDR.pack(packet_id, 0x0800, hook))]
    if hw is not None:
        parts.append(
            attribute(NFQA_HWADDR, _HWADDR_LEN.pack(len(hw)) + b"\0\0" + hw.ljust(8, b"\0"))
        )
    parts.append(attribute(NFQA_PAYLOAD, payload))
    return message(MSG_PACKET, queue_num, b"".join(parts))


def verdicts_in(data: bytes) -> Iterator[tuple[int, int, int]]:
    """``(message type, verdict, packet id)`` of each verdict message in ``data`` (for fakes)."""
    for kind, start, end in messages(data, len(data)):
        first, _ = attributes(data, start + HEADER_SIZE, end)[NFQA_VERDICT_HDR]
        verdict, packet_id = _VERDICT_HDR.unpack_from(data, first)
        yield kind, verdict, packet_id
