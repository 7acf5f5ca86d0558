"""Read DNS messages with ``struct`` and offsets, bounded everywhere.

Why: DNS answers are read on the reactor thread, so every microsecond spent on one is taken from
every other packet's verdict. Scapy took 11 ms for one answer with 88 records, and a green host
asking for such answers 200 times a second stalled the daemon. This reader gives what DNS
training and its debug classes need (header, questions, records with A/AAAA addresses and the
names of CNAME, NS and PTR records; other data stays bytes) and nothing more.

Bounds: at most ``MAX_RECORDS`` records per section (a larger count is refused before anything is
read), names of at most ``MAX_NAME`` bytes reached through at most ``MAX_HOPS`` compression
pointers, each pointing strictly before itself. A pointer loop therefore grows the name until a
limit refuses it. The name starting at each offset is worked out once per message, so records
pointing at the question cost a dictionary lookup each. Anything that is not a whole message
raises ``Malformed``, and nothing else is raised.
"""

from __future__ import annotations

import ipaddress
import re
import struct
from typing import NamedTuple

MAX_RECORDS = 512
MAX_NAME = 255
MAX_HOPS = 64

A, NS, CNAME, SOA, PTR, MX, TXT, AAAA, SRV, OPT = 1, 2, 5, 6, 12, 15, 16, 28, 33, 41
IN = 1

_TYPE_NAMES = {
    A: "A", NS: "NS", CNAME: "CNAME", SOA: "SOA", PTR: "PTR", MX: "MX", TXT: "TXT",
    AAAA: "AAAA", SRV: "SRV", OPT: "OPT", 64: "SVCB", 65: "HTTPS", 255: "ANY",
}  # fmt: skip
_CLASS_NAMES = {IN: "IN", 3: "CH", 4: "HS", 255: "ANY"}
_ADDRESS_SIZES = {A: 4, AAAA: 16}
_NAME_TYPES = frozenset((NS, CNAME, PTR))  # types whose data is one name
_HEADER = struct.Struct("!6H")
_QUESTION = struct.Struct("!HH")
_RECORD = struct.Struct("!HHIH")
# Name bytes shown as themselves: printable ASCII except space and backslash (RFC 1035 5.1);
# the others are written ``\\DDD``, so a hostile name cannot put spaces or line breaks into logs
# or the store file. Names are lowercased.
_PLAIN_BYTES = bytes(b for b in range(256) if 0x20 < b < 0x7F and b != 0x5C)
_PLAIN = re.compile(b"[" + re.escape(_PLAIN_BYTES) + b"]*")
_BYTE_TEXT = tuple(chr(b).lower() if b in _PLAIN_BYTES else f"\\{b:03d}" for b in range(256))
# Debug output shows at most this much of an undecoded record's data.
_SHOWN_RDATA = 32


class Malformed(Exception):
    """The data is not a whole DNS message; the text says where reading stopped."""


class Header(NamedTuple):
    """The fixed 12 bytes: read without touching the rest of the message."""

    id: int
    flags: int
    qdcount: int
    ancount: int
    nscount: int
    arcount: int

    @property
    def qr(self) -> bool:
        return self.flags >> 15 == 1

    @property
    def opcode(self) -> int:
        return self.flags >> 11 & 0xF

    @property
    def rcode(self) -> int:
        return self.flags & 0xF

    @property
    def records(self) -> int:
        """Questions and records the counts announce: an upper bound of the work to read them."""
        return self.qdcount + self.ancount + self.nscount + self.arcount


class Question(NamedTuple):
    name: str
    qtype: int
    qclass: int
    unicast: bool  # mDNS "QU": the top bit of the class field


class Record(NamedTuple):
    owner: str
    rtype: int
    rclass: int
    cache_flush: bool  # mDNS: the top bit of the class field
    ttl: int
    data: bytes | str  # A/AAAA: the packed address; CNAME/NS/PTR: the name; others: raw rdata


class Message(NamedTuple):
    header: Header
    questions: list[Question]
    answers: list[Record]
    authority: list[Record]
    additional: list[Record]


# NamedTuple classes call a Python __new__; tuple's own costs a third as much per record.
_new = tuple.__new__


def header(message: bytes | bytearray) -> Header:
    """The header alone; ``Malformed`` when the message is shorter than one or announces more
    than ``MAX_RECORDS`` records in a section."""
    if len(message) < _HEADER.size:
        raise Malformed(f"{len(message)} bytes, shorter than a header")
    head = Header(*_HEADER.unpack_from(message))
    if max(head[2:]) > MAX_RECORDS:
        raise Malformed(f"more than {MAX_RECORDS} records in a section")
    return head


def read(message: bytes | bytearray) -> Message:
    """The whole message: every section must be there; bytes after the last record are ignored
    (as scapy, which this replaces, did)."""
    data = bytes(message)
    head = header(data)
    names: dict[int, _Name] = {}
    pos = _HEADER.size
    questions: list[Question] = []
    for _ in range(head.qdcount):
        name, pos = _name(data, pos, names)
        if pos + 4 > len(data):
            raise Malformed(f"question cut at {pos}")
        qtype, qclass = _QUESTION.unpack_from(data, pos)
        questions.append(_new(Question, (name, qtype, qclass & 0x7FFF, qclass > 0x7FFF)))
        pos += 4
    answers, pos = _records(data, pos, head.ancount, names)
    authority, pos = _records(data, pos, head.nscount, names)
    additional, pos = _records(data, pos, head.arcount, names)
    return Message(head, questions, answers, authority, additional)


def _records(
    data: bytes, pos: int, count: int, names: dict[int, _Name]
) -> tuple[list[Record], int]:
    records: list[Record] = []
    size = len(data)
    for _ in range(count):
        owner, pos = _name(data, pos, names)
        if pos + 10 > size:
            raise Malformed(f"record cut at {pos}")
        rtype, rclass, ttl, rdlength = _RECORD.unpack_from(data, pos)
        pos += 10
        stop = pos + rdlength
        if stop > size:
            raise Malformed(f"record data past the end at {pos}")
        if rtype in _NAME_TYPES:
            rdata: bytes | str
            rdata, after = _name(data, pos, names)
            if after != stop:
                raise Malformed(f"name data of the wrong length at {pos}")
        else:
            rdata = data[pos:stop]
            if _ADDRESS_SIZES.get(rtype, rdlength) != rdlength:
                raise Malformed(f"address of the wrong length at {pos}")
        records.append(_new(Record, (owner, rtype, rclass & 0x7FFF, rclass > 0x7FFF, ttl, rdata)))
        pos = stop
    return records, pos


# The name starting at an offset: its text (``text[first:]``: the names at the offsets of one
# walk share the text of the longest, so a long name costs no copy per label), its label bytes
# (each label's length byte included, the root's not), the pointers followed, and where it ends
# in place. A plain tuple: one is made per label, and a NamedTuple costs twice as much to make.
_Name = tuple[str, int, int, int, int]


def _name(data: bytes, start: int, names: dict[int, _Name]) -> tuple[str, int]:
    """The name at ``start`` and the offset after it; ``names`` remembers every offset's name."""
    known = names.get(start)
    if known is None:
        # Most owners are a lone pointer to a name read before: skip the walk for them.
        if data[start : start + 1] >= b"\xc0" and start + 1 < len(data):
            target = (data[start] & 0x3F) << 8 | data[start + 1]
            known = names.get(target)
            if known is not None and target < start and known[3] < MAX_HOPS:
                return known[0][known[1] :], start + 2
        known = _walk(data, start, names)
    return known[0][known[1] :], known[4]


def _walk(data: bytes, start: int, names: dict[int, _Name]) -> _Name:
    """Follow labels and pointers from ``start`` to the root or to a name read before, then
    remember the name at every offset passed (each one's text is a suffix of the whole)."""
    path: list[tuple[int, bytes | None]] = []  # (offset, its label, or None for a pointer)
    size = hops = 0
    pos = start
    end = len(data)
    while (known := names.get(pos)) is None:
        if pos >= end:
            raise Malformed(f"name past the end at {pos}")
        length = data[pos]
        if length == 0:
            known = names[pos] = ("", 0, 0, 0, pos + 1)
            break
        if length < 0x40:
            label = data[pos + 1 : pos + 1 + length]
            size += length + 1
            if size >= MAX_NAME or len(label) < length:
                raise Malformed(f"label too long at {pos}")
            path.append((pos, label))
            pos += length + 1
        elif length >= 0xC0:
            if pos + 1 >= end:
                raise Malformed(f"pointer cut at {pos}")
            target = (length & 0x3F) << 8 | data[pos + 1]
            hops += 1
            if target >= pos or hops > MAX_HOPS:
                raise Malformed(f"pointer not strictly backwards, or too many, at {pos}")
            path.append((pos, None))
            pos = target
        else:
            raise Malformed(f"unknown label type at {pos}")
    tail, size, hops, after = known[0][known[1] :], size + known[2], hops + known[3], known[4]
    if size >= MAX_NAME or hops > MAX_HOPS:
        raise Malformed(f"name too long at {start}")
    labels = [label for _, label in path if label is not None]
    raw = b".".join(labels)
    if _PLAIN.fullmatch(raw):
        own, widths = raw.decode("ascii").lower(), [len(label) for label in labels]
    else:  # escaped bytes take 4 characters (\\DDD)
        own = "".join(map(_BYTE_TEXT.__getitem__, raw))
        widths = [len(label) + 3 * len(label.translate(None, _PLAIN_BYTES)) for label in labels]
    text = f"{own}.{tail}" if own and tail else own or tail
    chars = len(tail)
    size, hops = known[2], known[3]
    for pos, label in reversed(path):
        if label is None:
            hops += 1
            after = pos + 2
        else:
            chars += widths.pop() + (1 if chars else 0)
            size += len(label) + 1
        known = names[pos] = (text, len(text) - chars, size, hops, after)
    return known


def type_name(rtype: int) -> str:
    return _TYPE_NAMES.get(rtype, f"TYPE{rtype}")


def data_text(record: Record) -> str:
    """The record's data for humans: the address, the name, or the first bytes in hex."""
    data = record.data
    if isinstance(data, str):
        return data
    if record.rtype in _ADDRESS_SIZES:
        return str(ipaddress.ip_address(data))
    more = "..." if len(data) > _SHOWN_RDATA else ""
    return data[:_SHOWN_RDATA].hex() + more


def record_text(record: Record) -> str:
    flush = " flush" if record.cache_flush else ""
    rclass = _CLASS_NAMES.get(record.rclass, f"CLASS{record.rclass}")
    return (
        f"{record.owner or '.'} {record.ttl} {rclass}{flush} {type_name(record.rtype)} "
        f"{data_text(record)}"
    )


def describe(message: Message) -> str:
    """One line with everything in the message (the ``D`` debug class)."""
    head = message.header
    questions = ", ".join(
        f"{q.name or '.'} {_CLASS_NAMES.get(q.qclass, f'CLASS{q.qclass}')}"
        f"{' QU' if q.unicast else ''} {type_name(q.qtype)}"
        for q in message.questions
    )
    sections = [
        f"id {head.id} flags {head.flags:#06x} opcode {head.opcode} rcode {head.rcode}",
        f"question: {questions or '-'}",
    ]
    for title, records in (
        ("answer", message.answers),
        ("authority", message.authority),
        ("additional", message.additional),
    ):
        sections.append(f"{title}: {', '.join(map(record_text, records)) or '-'}")
    return "; ".join(sections)
