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
NFQA_IFINDEX_INDEV = 5
NFQA_HWADDR = 9
NFQA_PAYLOAD = 10

# Attributes and values of a config message (NFQA_CFG_*).
NFQA_CFG_CMD = 1
NFQA_CFG_PARAMS = 2
NFQA_CFG_QUEUE_MAXLEN = 3
NFQA_CFG_MASK = 4
NFQA_CFG_FLAGS = 5
CMD_BIND = 1
COPY_PACKET = 2
F_FAIL_OPEN = 1
MAX_COPY_RANGE = 0xFFFF

# The biggest message: netlink and nfnetlink headers, the metadata attributes, a 64 KiB packet.
MAX_MESSAGE = 0x10000 + 1024

_HEADER = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, seq, portid
_FIRST = struct.Struct("=4xH14xHH")  # a message's type, its first attribute's length and type
_NFGEN = struct.Struct("!BBH")  # nfgenmsg: family, version, queue number
_ATTR = struct.Struct("=HH")  # nlattr: length, type
_PACKET_HDR = struct.Struct("!IHB")  # packet id, hw protocol, hook
_VERDICT_HDR = struct.Struct("!II")  # verdict, packet id
_ERROR = struct.Struct("=i")
_HWADDR_LEN = struct.Struct("!H")
_BE32 = struct.Struct("!I")
# nfqnl_msg_packet_hw: address length, 2 bytes padding, 8 address bytes; after its nlattr header.
_HWADDR_MIN = _ATTR.size + 12
_IFINDEX_SIZE = _ATTR.size + _BE32.size

HEADER_SIZE = _HEADER.size + _NFGEN.size
_FIRST_DATA = HEADER_SIZE + _ATTR.size  # where the first attribute's data starts
_TYPE_END = 6  # where a message's type field ends
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
        self._hw_at = 0
        self._indev_at = 0

    def parse(self, data: bytes | bytearray | memoryview, size: int) -> QueuedPacket | None:
        """The packet in ``data[:size]``; ``None`` for another kind of message (an error
        report, say); ``ValueError`` for a cut or impossible one."""
        headers = self._headers
        at = self._payload_at
        if headers is not None and size >= at + 4:
            values = headers.unpack_from(data)
            end = at + values[-2]
            if (
                values[:-2] == self._expected
                and values[-1] == NFQA_PAYLOAD
                and at + 4 <= end <= size
            ):
                packet_id, _proto, hook = _PACKET_HDR.unpack_from(data, _FIRST_DATA)
                return packet_id, hook, at + 4, end, self._hw_at, self._indev_at
        return self._walk(data, size)

    def _walk(self, data: bytes | bytearray | memoryview, size: int) -> QueuedPacket | None:
        header = _packet_header(data, size)
        if header is None:
            return None
        packet_id, hook, length = header
        chain = [(HEADER_SIZE, length, NFQA_PACKET_HDR)]
        hw_at = indev_at = 0
        offset = (HEADER_SIZE + length + _ALIGN) & ~_ALIGN
        while offset + 4 <= size:
            length, attr = _ATTR.unpack_from(data, offset)
            end = offset + length
            if length < 4 or end > size:
                raise ValueError(f"netlink attribute of {length} bytes at {offset} of {size}")
            if attr == NFQA_PAYLOAD:
                self._remember(chain, offset, hw_at, indev_at)
                return packet_id, hook, offset + 4, end, hw_at, indev_at
            if attr == NFQA_HWADDR and length >= _HWADDR_MIN:
                hw_at = offset
            elif attr == NFQA_IFINDEX_INDEV and length == _IFINDEX_SIZE:
                indev_at = offset
            chain.append((offset, length, attr))
            offset = (end + _ALIGN) & ~_ALIGN
        return packet_id, hook, size, size, hw_at, indev_at

    def _remember(
        self, chain: list[tuple[int, int, int]], payload_at: int, hw_at: int, indev_at: int
    ) -> None:
        fmt, position, expected = ["=4xH"], _TYPE_END, [MSG_PACKET]
        for offset, length, attr in chain:
            fmt.append(f"{offset - position}xHH")
            position = offset + _ATTR.size
            expected += (length, attr)
        fmt.append(f"{payload_at - position}xHH")
        self._headers = struct.Struct("".join(fmt))
        self._expected = tuple(expected)
        self._payload_at = payload_at
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
    if attr != NFQA_PACKET_HDR or length < _ATTR.size + _PACKET_HDR.size or size < 32:
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
    length = _HWADDR_LEN.unpack_from(data, at + _ATTR.size)[0]
    return bytes(data[at + 8 : at + 8 + min(length, 8)])


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
    parts = [attribute(NFQA_PACKET_HDR, _PACKET_HDR.pack(packet_id, 0x0800, hook))]
    if indev:
        parts.append(attribute(NFQA_IFINDEX_INDEV, _BE32.pack(indev)))
    if hw is not None:
        parts.append(
            attribute(NFQA_HWADDR, _HWADDR_LEN.pack(len(hw)) + b"\0\0" + hw.ljust(8, b"\0"))
        )
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
