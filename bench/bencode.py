"""Bencode on the packet path (issue 11, section 2): what reading one DHT message or tracker
reply costs with p2pwall's bounded decoder (``p2pwall.bencode``), with fastbencode when it is
importable (not a dependency: ``pip install fastbencode`` to compare), and what the wire layer
(``p2pwall.detectors.btwire``) costs per message, cheap rejects and peer extraction included.

Real messages from the lab captures in tests/data, plus larger built ones (the most peers a
reply can name). Everything runs in-process, best of N windows, the decoders taking turns
window by window so load changes hit them alike. ``python -m bench.bencode`` prints a Markdown
report (``--json``: the numbers).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import struct
import sys
import timeit
from collections.abc import Callable, Sequence
from pathlib import Path

from scapy.layers.inet import TCP, UDP
from scapy.utils import rdpcap

from bench.probes import machine
from bench.report import table
from p2pwall import bencode
from p2pwall.detectors import btwire

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"
HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n"


def payloads(name: str) -> list[bytes]:
    """The UDP and TCP payloads of one capture in tests/data, in order."""
    found = []
    for frame in rdpcap(str(DATA / name)):
        layer = frame[UDP] if UDP in frame else frame[TCP]
        found.append(bytes(layer.payload))
    return found


def messages() -> dict[str, tuple[str, bytes]]:
    """Label -> (kind, payload): ``krpc`` payloads are whole datagrams, ``http`` ones whole
    tracker replies (the decoders read their body)."""
    lt = payloads("bt-libtorrent.pcap")
    trd = payloads("bt-transmission.pcap")
    aria2 = payloads("bt-aria2.pcap")
    values = [struct.pack("!IH", 0xC6130000 + n, 6881) for n in range(100)]
    node_id = bytes(range(20))
    nodes = b"".join(
        bytes(range(n, n + 20)) + struct.pack("!IH", 0xC6130100 + n, 6881) for n in range(8)
    )
    big = bencode.encode(
        {"ip": values[0], "r": {"id": node_id, "nodes": nodes, "token": b"t" * 8, "values": values},
         "t": b"gp", "v": b"LT\x02\x08", "y": "r"}
    )  # fmt: skip
    compact = b"".join(struct.pack("!IH", 0xC6130000 + n, 6881) for n in range(btwire.MAX_PEERS))
    many = _reply({"interval": 1800, "peers": compact})
    dicts = [
        {"ip": f"198.19.{n // 250}.{n % 250 + 1}", "peer id": bytes(20), "port": 6881}
        for n in range(50)
    ]
    return {
        "KRPC ping query (aria2, real)": ("krpc", aria2[7]),
        "KRPC get_peers query (libtorrent, real)": ("krpc", lt[7]),
        "KRPC reply, 2 values, d1:r (aria2 node, real)": ("krpc", aria2[9]),
        "KRPC reply, 3 values + nodes, d2:ip (libtorrent node, real)": ("krpc", trd[12]),
        "KRPC reply, 100 values + 8 nodes (built)": ("krpc", big),
        "tracker reply, 4 compact peers (opentracker, real)": ("http", lt[1]),
        "tracker reply, 200 compact peers (built)": ("http", many),
        "tracker reply, 50 dictionary peers (built)": ("http", _reply({"peers": dicts})),
    }  # fmt: skip


def _reply(body: dict) -> bytes:
    data = bencode.encode(body)
    return HEAD % len(data) + data


def decoders() -> dict[str, Callable[[bytes], object]]:
    """p2pwall's decoder, then fastbencode's when importable."""
    found: dict[str, Callable[[bytes], object]] = {"p2pwall.bencode": bencode.decode}
    with contextlib.suppress(ImportError):
        found["fastbencode"] = importlib.import_module("fastbencode").bdecode
    return found


def body(kind: str, payload: bytes) -> bytes:
    """What a decoder is given: the datagram, or the reply's body."""
    return payload if kind == "krpc" else payload[payload.index(b"\r\n\r\n") + 4 :]


def wire(kind: str) -> Callable[[bytes], object]:
    return btwire.parse_krpc if kind == "krpc" else btwire.parse_tracker_reply


def best_us(call: Callable[[], object], size: int) -> float:
    number = max(20, int(4000 / (1 + size // 100)))
    return timeit.timeit(call, number=number) / number * 1e6


def costs(repeat: int) -> list[dict]:
    """Best-of-``repeat`` µs per message for each decoder and the wire function; the
    candidates take turns window by window."""
    found = decoders()
    rows = []
    for label, (kind, payload) in messages().items():
        data = body(kind, payload)
        parse = wire(kind)
        candidates = {name: (lambda d=d: d(data)) for name, d in found.items()}  # noqa: B023
        candidates["btwire"] = lambda: parse(payload)  # noqa: B023
        best = dict.fromkeys(candidates, float("inf"))
        for _ in range(repeat):
            for name, call in candidates.items():
                best[name] = min(best[name], best_us(call, len(payload)))
        peers = parse(payload)
        rows.append(
            {
                "message": label,
                "bytes": len(payload),
                "peers": len(peers if isinstance(peers, tuple) else peers.values),
                "us": best,
            }
        )
    return rows


def rejects(repeat: int) -> dict[str, float]:
    """What the wire functions cost on what they are not for: a uTP data packet (the most
    common UDP payload of a running client) and a random-looking 1,400-byte datagram."""
    utp = payloads("bt-libtorrent.pcap")[2]
    noise = bytes((n * 97 + 13) % 256 for n in range(1400))
    calls = {
        "parse_krpc, uTP data": lambda: btwire.parse_krpc(utp),
        "parse_krpc, 1,400 noise bytes": lambda: btwire.parse_krpc(noise),
        "parse_udp_tracker_request, uTP data": lambda: btwire.parse_udp_tracker_request(utp),
        "is_utp_syn, uTP data": lambda: btwire.is_utp_syn(utp),
        "parse_tracker_reply, 1,400 noise bytes": lambda: btwire.parse_tracker_reply(noise),
    }
    best = dict.fromkeys(calls, float("inf"))
    for _ in range(repeat):
        for name, call in calls.items():
            best[name] = min(best[name], timeit.timeit(call, number=20000) / 20000 * 1e6)
    return best


def hostile() -> dict[str, tuple[Callable[[bytes], object], bytes]]:
    """The costliest packets for each wire function: as many tiny values as fit (empty
    strings, the cheapest token to send and among the dearest to read)."""
    head, tail = b"d1:rd1:xl", b"ee1:t2:aa1:y1:re"
    krpc = head + b"0:" * ((btwire.MAX_KRPC - len(head) - len(tail)) // 2) + tail
    http = HEAD.replace(b"Content-Length: %d\r\n", b"")

    def reply(size: int) -> bytes:
        return http + b"d5:xxxxxl" + b"0:" * ((size - len(http) - 11) // 2) + b"ee"

    return {
        f"KRPC datagram, {len(krpc):,} B of empty strings (read up to the value cap)": (
            btwire.parse_krpc,
            krpc,
        ),
        "tracker reply, one 1,460-byte segment of empty strings": (
            btwire.parse_tracker_reply,
            reply(1460),
        ),
        "tracker reply, 16 KiB of empty strings (the most read of a reply)": (
            btwire.parse_tracker_reply,
            reply(16384),
        ),
    }


def worst(repeat: int) -> dict[str, float]:
    """Best-of-``repeat`` µs for each of ``hostile()``."""
    return {
        label: min(timeit.repeat(lambda: parse(data), number=10, repeat=repeat)) / 10 * 1e6  # noqa: B023
        for label, (parse, data) in hostile().items()
    }


def report(results: dict) -> str:
    names = list(results["costs"][0]["us"])
    lines = [f"Command: `{results['command']}`  ", f"Machine: {results['machine']}", ""]
    lines += [f"### Reading one message, µs (best of {results['repeat']} windows)", ""]
    headers = ["message", "bytes", "peers", *(f"{n} µs" for n in names)]
    if "fastbencode" in names:
        headers.append("p2pwall.bencode / fastbencode")
    rows = []
    for row in results["costs"]:
        cells = [row["message"], row["bytes"], row["peers"], *(row["us"][n] for n in names)]
        if "fastbencode" in names:
            cells.append(row["us"]["p2pwall.bencode"] / row["us"]["fastbencode"])
        rows.append(cells)
    lines += [table(headers, rows), ""]
    lines += [
        "The decoders read the datagram or the reply's body; btwire is the whole wire function "
        "(`parse_krpc` on the datagram, `parse_tracker_reply` on the whole HTTP reply): checks, "
        "decode and the peers as packed tuples.",
        "",
        f"### Rejecting what is not BitTorrent signalling, µs (best of {results['repeat']})",
        "",
        table(["call", "µs"], list(results["rejects"].items())),
        "",
        f"### The most work one packet can cause, µs (best of {results['repeat']})",
        "",
        table(["packet", "µs"], list(results["worst"].items())),
        "",
    ]
    if "fastbencode" not in names:
        lines += ["fastbencode was not importable: its column is missing.", ""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bencode", description=__doc__)
    parser.add_argument("--repeat", type=int, default=7, help="timing windows per candidate")
    parser.add_argument("--json", action="store_true", help="print the numbers as JSON")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    command = "python -m bench.bencode " + " ".join(sys.argv[1:] if argv is None else argv)
    results = {
        "command": command.strip(),
        "machine": machine(),
        "repeat": args.repeat,
        "costs": costs(args.repeat),
        "rejects": rejects(args.repeat),
        "worst": worst(args.repeat),
    }
    print(json.dumps(results, indent=2) if args.json else report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
