"""p2pwall-napigator: keep the daemon's blocks in step with an OpenNAP server list.

ftwall blocked OpenNAP by being told every server (its Napigator script). This tool fetches a
list (http(s) URL or file; Napigator text, HTML table or .wsx, told apart by ``serverlist``)
and turns it into control commands: ``block IP:PORT`` for a literal address; for a host name,
``ban-dns-name NAME`` (DNS training learns the addresses clients look up) and, with
``--resolve``, ``block ADDR:PORT`` for each address it resolves to now. It sends only the
difference from what it sent before (remembered in ``--state``): new entries are added, entries
gone from the list are removed. A list that cannot be fetched or holds no server changes
nothing, so a site's error page cannot unblock everything; a name that fails to resolve keeps
the blocks it had. Several lists may share one state file: each list's commands are kept apart,
and an entry gone from one list is not undone while another list still sent it.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import ipaddress
import json
import socket
import sys
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TextIO
from urllib.parse import urlsplit

from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorCore
from twisted.internet.threads import deferToThreadPool

from ..packet import endpoint_text
from ..store import write_atomically
from ..version import version_line
from . import react_main
from .ctl import EXIT_ERR, EXIT_NO_REPLY, EXIT_OK, ControlError, connect, default_endpoint, exchange
from .serverlist import ServerEntry, detect_format, parse_server_list

MAX_LIST_BYTES = 16 << 20
UNDO = {"block": "unblock", "ban-dns-name": "unban-dns-name"}

Resolver = Callable[[str], list[str]]
Sent = dict[str, str]  # command line -> the list host it came from


def resolve(name: str) -> list[str]:
    """The IPv4 and IPv6 addresses of ``name`` (blocking: runs in a thread)."""
    infos = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]).partition("%")[0] for info in infos})


def fetch(source: str, timeout: float) -> bytes:
    """The list's bytes from an http(s) URL or a file (blocking: runs in a thread)."""
    if urlsplit(source).scheme in ("http", "https"):
        request = urllib.request.Request(source, headers={"User-Agent": "p2pwall-napigator"})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            data = response.read(MAX_LIST_BYTES + 1)
    else:
        with open(source, "rb") as handle:
            data = handle.read(MAX_LIST_BYTES + 1)
    if len(data) > MAX_LIST_BYTES:
        raise ValueError(f"list larger than {MAX_LIST_BYTES >> 20} MiB")
    return data


def decode(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def literal_ip(host: str) -> bytes | None:
    try:
        return ipaddress.ip_address(host).packed
    except ValueError:
        return None


def _block(ip: bytes, port: int) -> str:
    return f"block {endpoint_text(ip, port)}"


def wanted(
    entries: Iterable[ServerEntry], addresses: Mapping[str, list[str] | None], previous: Sent
) -> Sent:
    """The commands the list calls for, each with its list host.

    ``addresses`` maps host names to their addresses, or to None when resolving failed: then
    the blocks sent for that name before are kept.
    """
    items: Sent = {}
    for entry in entries:
        ip = literal_ip(entry.host)
        if ip is not None:
            items[_block(ip, entry.port)] = entry.host
            continue
        items[f"ban-dns-name {entry.host}"] = entry.host
        resolved = addresses.get(entry.host, [])
        if resolved is None:
            items.update(
                (command, host)
                for command, host in previous.items()
                if host == entry.host and command.startswith("block ")
            )
        else:
            for address in resolved:
                items[_block(ipaddress.ip_address(address).packed, entry.port)] = entry.host
    return items


def load_state(path: Path) -> dict[str, Sent]:
    """What earlier runs sent and the daemon accepted, by list source; empty before the first
    run. A file of the first format (one list, ``{"sent": ...}``) is read as the list ``""``."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    if isinstance(data, dict) and "sent" in data and "sources" not in data:
        data = {"sources": {"": data["sent"]}}
    sources = data.get("sources") if isinstance(data, dict) else None
    if not isinstance(sources, dict) or not all(
        isinstance(source, str) and _is_sent(sent) for source, sent in sources.items()
    ):
        raise ValueError("not a p2pwall-napigator state file")
    return sources


def _is_sent(sent: object) -> bool:
    return isinstance(sent, dict) and all(
        isinstance(host, str) and isinstance(command, str) and command.split(" ")[0] in UNDO
        for command, host in sent.items()
    )


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold ``path``'s lock file: two lists' runs never write the state file over each other."""
    with open(f"{path}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def save_state(path: Path, source: str, sent: Sent) -> None:
    """Replace ``source``'s part of the state file, keeping the other lists' parts as they are
    on disk now (another list may have run meanwhile)."""
    with locked(path):
        try:
            sources = load_state(path)
        except (OSError, ValueError):
            sources = {}
        sources.pop("", None)  # a first-format file's list is this one: it ran alone before
        sources[source] = sent
        write_atomically(path, json.dumps({"sources": sources}, indent=1, sort_keys=True) + "\n")


class Tracker:
    """One list source and what has been sent for it; ``run`` does one round."""

    def __init__(
        self,
        reactor: IReactorCore,
        args: argparse.Namespace,
        out: TextIO = sys.stdout,
        resolver: Resolver = resolve,
    ) -> None:
        self.reactor = reactor
        self.args = args
        self.out = out
        self.resolver = resolver
        self.state = Path(args.state) if args.state else None
        self.sent: Sent = {}
        if self.state is not None:
            try:
                sources = load_state(self.state)
            except (OSError, ValueError) as error:
                self.report(f"ignoring state file {self.state}: {error}; sending everything")
            else:
                self.sent = sources.get(args.source, sources.get("", {}))

    def others(self) -> set[str]:
        """The commands other lists sharing the state file have sent (read now)."""
        if self.state is None:
            return set()
        try:
            sources = load_state(self.state)
        except (OSError, ValueError):
            return set()
        return {
            command
            for source, sent in sources.items()
            if source not in (self.args.source, "")
            for command in sent
        }

    def report(self, line: str) -> None:
        self.out.write(line + "\n")
        self.out.flush()

    def _in_thread(self, function: Callable, *args: object) -> defer.Deferred:
        return deferToThreadPool(self.reactor, self.reactor.getThreadPool(), function, *args)

    async def run(self) -> int:
        """Fetch, diff and send; the exit status for this round."""
        source = self.args.source
        try:
            text = decode(await self._in_thread(fetch, source, self.args.timeout))
        except (OSError, ValueError) as error:
            self.report(f"cannot fetch {source}: {error}; nothing changed")
            return EXIT_ERR
        entries = parse_server_list(text)
        if not entries:
            self.report(f"no servers in {source} (format {detect_format(text)}); nothing changed")
            return EXIT_ERR
        items = wanted(entries, await self._resolve(entries), self.sent)
        before = set(self.sent.values())
        adds = [command for command in items if self.args.full or command not in self.sent]
        gone = [command for command in self.sent if command not in items]
        others = self.others()
        removes = [command for command in gone if command not in others]
        for command in gone:
            if command in others:
                del self.sent[command]  # another list still wants it: not undone
        self.sent.update((command, host) for command, host in items.items() if command in self.sent)
        refused = 0
        if adds or gone:
            try:
                refused = await self._send(adds, removes, items)
            except ControlError as error:
                self.report(f"p2pwall-napigator: {error}")
                return EXIT_NO_REPLY
            finally:
                self._save()
        hosts = set(items.values())
        self.report(
            f"{len(entries)} servers from {source} ({detect_format(text)}): "
            f"{len(hosts - before)} new, {len(before - hosts)} gone; commands: "
            f"{len(adds)} added, {len(removes)} removed, {refused} refused, "
            f"{len(items) - len(adds)} unchanged"
        )
        return EXIT_ERR if refused else EXIT_OK

    async def _resolve(self, entries: list[ServerEntry]) -> dict[str, list[str] | None]:
        if not self.args.resolve:
            return {}
        names = sorted({e.host for e in entries if literal_ip(e.host) is None})
        results = await defer.DeferredList(
            [self._in_thread(self.resolver, name) for name in names], consumeErrors=True
        )
        addresses: dict[str, list[str] | None] = {}
        for name, (ok, result) in zip(names, results, strict=True):
            addresses[name] = result if ok else None
            if not ok:
                self.report(f"cannot resolve {name}: {result.value}; keeping its blocks")
        return addresses

    async def _send(self, adds: list[str], removes: list[str], items: Sent) -> int:
        """Send the changes over one connection; return how many additions were refused."""
        client = await connect(self.reactor, self.args.control, self.args.timeout)
        refused = 0
        try:
            for command in adds:
                reply = await exchange(self.reactor, client, command, self.args.timeout)
                self.report(f"{command} -> {reply.final}")
                if reply.ok:
                    self.sent[command] = items[command]
                else:
                    refused += 1
            for command in removes:
                verb, _, rest = command.partition(" ")
                undo = f"{UNDO[verb]} {rest}"
                reply = await exchange(self.reactor, client, undo, self.args.timeout)
                self.report(f"{undo} -> {reply.final}")
                # Either way it is no longer there: an ERR means someone removed it already.
                del self.sent[command]
        finally:
            client.transport.loseConnection()
        return refused

    def _save(self) -> None:
        if self.state is not None:
            save_state(self.state, self.args.source, self.sent)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="p2pwall-napigator",
        description="Block the servers of an OpenNAP server list through p2pwall's control "
        "port, sending only what changed since the last run.",
        epilog="Exit status (without --interval): 0 done, 1 list unusable or a command "
        "refused, 2 cannot reach the daemon.",
    )
    parser.add_argument("--version", action="version", version=version_line("p2pwall-napigator"))
    parser.add_argument("source", help="http(s) URL or file: Napigator text, HTML table or .wsx")
    parser.add_argument(
        "--control",
        default=default_endpoint(),
        metavar="ENDPOINT",
        help="control port client endpoint (default: as p2pwall-ctl's)",
    )
    parser.add_argument(
        "--state", metavar="FILE", help="remember what was sent here (default: only in memory)"
    )
    parser.add_argument(
        "--interval", type=float, default=0, metavar="SECONDS", help="repeat; default: run once"
    )
    parser.add_argument(
        "--resolve",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also block the addresses host names resolve to (default: yes)",
    )
    parser.add_argument(
        "--full", action="store_true", help="send every entry again, not only the new ones"
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds (default 30)")
    args = parser.parse_args(argv)
    if args.interval < 0:
        parser.error("--interval must be positive")
    return args


async def napigator(
    reactor: IReactorCore,
    args: argparse.Namespace,
    out: TextIO = sys.stdout,
    resolver: Resolver = resolve,
) -> int:
    """Run once and return the exit status, or every ``--interval`` seconds until stopped."""
    tracker = Tracker(reactor, args, out, resolver)
    if not args.interval:
        return await tracker.run()
    loop = task.LoopingCall(lambda: defer.ensureDeferred(tracker.run()))
    loop.clock = reactor
    await loop.start(args.interval)
    return EXIT_OK


def main(argv: list[str] | None = None) -> None:
    react_main(parse_args, napigator, argv)


if __name__ == "__main__":
    main()
