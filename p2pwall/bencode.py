"""Bencode (BEP 3): a bounded reader for what untrusted hosts send (DHT messages, tracker
replies), and the writer the lab and the tests make torrents and messages with.

Why bounded: a reply comes from a host nobody vouches for, and it is read on the daemon's one
thread. So nesting depth, the number of values and the digits of a number or length are capped,
the reader is a loop with its own stack (no recursion a crafted reply could exhaust), and it
raises nothing but ``BencodeError``. Dictionary keys may come in any order (BEP 3 asks for
sorted keys; not every client sorts them); a repeated key keeps its last value.

Values: ``int``, ``bytes``, ``list`` and ``dict`` with ``bytes`` keys.

Why not fastbencode: it is 15 to 25 times faster (0.5 against 9 µs for a real DHT ping, 1 against
18 µs for a real get_peers reply; ``python -m bench.bencode``, bench/RESULTS.md), but it refuses
dictionaries whose keys are not sorted ("dict keys disordered"). BEP 3 asks for sorted keys and
the five lab clients sort them (all 2,005 DHT messages of their captures), but a client that does
not would go unseen, and issue 11 asks for any key order. 10 to 20 µs per message is affordable
for the few packets of each flow the daemon reads; a compiled dependency is not needed for it.
"""

from __future__ import annotations

MAX_DEPTH = 32
MAX_VALUES = 65_536
# Digits of an integer (a 64-bit number has at most 20) and of a string's length prefix.
MAX_INT_DIGITS = 20
MAX_LENGTH_DIGITS = 9

Value = int | bytes | list | dict

_DIGITS = frozenset(b"0123456789")
_INT, _LIST, _DICT, _END = ord("i"), ord("l"), ord("d"), ord("e")


def encode(value: object) -> bytes:
    """``value`` (int, str or bytes, list or tuple, dict) bencoded, dictionary keys sorted."""
    if isinstance(value, bool):
        raise TypeError("bencode has no booleans")
    if isinstance(value, int):
        return b"i%de" % value
    if isinstance(value, str):
        value = value.encode()
    if isinstance(value, bytes):
        return b"%d:%s" % (len(value), value)
    if isinstance(value, list | tuple):
        return b"l" + b"".join(encode(item) for item in value) + b"e"
    if isinstance(value, dict):
        items = sorted((k.encode() if isinstance(k, str) else k, v) for k, v in value.items())
        return b"d" + b"".join(encode(k) + encode(v) for k, v in items) + b"e"
    raise TypeError(f"cannot bencode {type(value).__name__}")


class BencodeError(ValueError):
    """The data is not one bencoded value within the reader's bounds; says why and where."""


def decode(
    data: bytes | bytearray | memoryview,
    max_depth: int = MAX_DEPTH,
    max_values: int = MAX_VALUES,
) -> Value:
    """The one value ``data`` holds, with nothing after it."""
    value, end = decode_prefix(data, 0, max_depth, max_values)
    if end != len(data):
        raise BencodeError(f"{len(data) - end} bytes after the value at {end}")
    return value


def decode_prefix(
    data: bytes | bytearray | memoryview,
    start: int = 0,
    max_depth: int = MAX_DEPTH,
    max_values: int = MAX_VALUES,
) -> tuple[Value, int]:
    """The value starting at ``start`` and the offset just after it."""
    data = bytes(data)
    size = len(data)
    # Each frame: the container being filled and, for a dict, the key waiting for its value.
    stack: list[list] = []
    values = 0
    at = start
    while True:
        if at >= size:
            raise BencodeError(f"data ends at {at} inside a value")
        kind = data[at]
        if kind == _END:
            if not stack:
                raise BencodeError(f"'e' with nothing open at {at}")
            container, key = stack.pop()
            if key is not None:
                raise BencodeError(f"dictionary key without a value before {at}")
            value, at = container, at + 1
        else:
            values += 1
            if values > max_values:
                raise BencodeError(f"more than {max_values} values")
            if kind in (_LIST, _DICT):
                if len(stack) >= max_depth:
                    raise BencodeError(f"nested deeper than {max_depth} at {at}")
                stack.append([[] if kind == _LIST else {}, None])
                at += 1
                continue
            if kind == _INT:
                value, at = _integer(data, at + 1)
            elif kind in _DIGITS:
                value, at = _string(data, at)
            else:
                raise BencodeError(f"unexpected byte {kind:#04x} at {at}")
        if not stack:
            return value, at
        frame = stack[-1]
        container = frame[0]
        if isinstance(container, list):
            container.append(value)
        elif frame[1] is None:
            if not isinstance(value, bytes):
                raise BencodeError(f"dictionary key is not a string before {at}")
            frame[1] = value
        else:
            container[frame[1]] = value
            frame[1] = None


def _integer(data: bytes, at: int) -> tuple[int, int]:
    """``i<digits>e`` from just after the ``i``: no leading zeros, no ``-0``."""
    end = data.find(b"e", at, at + MAX_INT_DIGITS + 2)
    if end < 0:
        raise BencodeError(f"integer at {at - 1} has no 'e' within {MAX_INT_DIGITS} digits")
    text = data[at:end]
    digits = text[1:] if text[:1] == b"-" else text
    if (
        not digits
        or len(digits) > MAX_INT_DIGITS
        or not _DIGITS.issuperset(digits)
        or (digits[0] == 0x30 and (len(digits) > 1 or text[:1] == b"-"))
    ):
        raise BencodeError(f"bad integer {text!r} at {at - 1}")
    return int(text), end + 1


def _string(data: bytes, at: int) -> tuple[bytes, int]:
    """``<length>:<bytes>``: the length's digits are bounded, the bytes must all be there."""
    colon = data.find(b":", at, at + MAX_LENGTH_DIGITS + 1)
    if colon < 0:
        raise BencodeError(f"string length at {at} has no ':' within {MAX_LENGTH_DIGITS} digits")
    digits = data[at:colon]
    if not _DIGITS.issuperset(digits) or (digits[0] == 0x30 and len(digits) > 1):
        raise BencodeError(f"bad string length {digits!r} at {at}")
    begin = colon + 1
    end = begin + int(digits)
    if end > len(data):
        raise BencodeError(f"string at {at} runs {end - len(data)} bytes past the end")
    return data[begin:end], end
