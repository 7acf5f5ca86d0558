"""python libtorrent roles for the BitTorrent lab: DHT nodes, a seeder, a green leecher.

Run with the system interpreter (``/usr/bin/python3``): Debian's python3-libtorrent is built for
it, not for a virtualenv. Standalone on purpose (no repository imports), and every role ends by
itself after ``--seconds``, so nothing outlives a run even if the lab's teardown never comes.

    btnode.py dht --bind IP:PORT ... [--router IP:PORT] --seconds N
    btnode.py seed --bind IP:PORT --torrent F --dir D [--router IP:PORT] --seconds N
    btnode.py leech --bind IP:PORT --torrent F|MAGNET --dir D [--router IP:PORT] [--no-dht]
                    --seconds N

``leech`` requires encryption (RC4, both directions), prints one JSON line with what it got
(``bytes`` complete, ``received`` payload bytes downloaded, ``pieces``) and exits 0 when the
download is complete, 7 when it is not. ``--no-dht`` turns DHT and PEX off (trackers only).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time

import libtorrent as lt

POLL = 0.2


def settings(bind: str, router: str, forced: bool, dht: bool = True) -> dict:
    """Session settings for one lab node: no UPnP/NAT-PMP, DHT limits lifted for one /16, the
    lab tracker's self-signed HTTPS certificate accepted.

    No DHT rate-limit blocking: a lab runs client after client from one green address, and
    libtorrent would otherwise ignore that address for 5 minutes after a client's start-up
    burst (more than 5 queries a second), so the next client's DHT would get no answer.
    """
    policy = lt.enc_policy.pe_forced if forced else lt.enc_policy.pe_enabled
    return {
        "listen_interfaces": bind,
        "outgoing_interfaces": bind.rsplit(":", 1)[0],
        "enable_dht": dht,
        "validate_https_trackers": False,
        "dht_bootstrap_nodes": router,
        "dht_restrict_routing_ips": False,
        "dht_restrict_search_ips": False,
        "dht_block_ratelimit": 100000,
        "dht_upload_rate_limit": 1000000,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "allow_multiple_connections_per_ip": True,
        "out_enc_policy": policy,
        "in_enc_policy": policy,
        "allowed_enc_level": lt.enc_level.pe_rc4 if forced else lt.enc_level.both,
        "alert_mask": lt.alert.category_t.error_notification,
    }


def run_dht(args: argparse.Namespace) -> int:
    """Nodes that know each other: the router has no bootstrap list, the rest add one another."""
    sessions = [lt.session(settings(bind, args.router or "", False)) for bind in args.bind]
    endpoints = [bind.rsplit(":", 1) for bind in args.bind]
    for session in sessions:
        for ip, port in endpoints:
            session.add_dht_node((ip, int(port)))
    time.sleep(args.seconds)
    return 0


def add(session: lt.session, args: argparse.Namespace, seed: bool) -> lt.torrent_handle:
    if args.torrent.startswith("magnet:"):
        params = lt.parse_magnet_uri(args.torrent)
    else:
        params = lt.add_torrent_params()
        params.ti = lt.torrent_info(args.torrent)
    params.save_path = args.dir
    if seed:
        params.flags |= lt.torrent_flags.seed_mode
    if args.no_dht:
        params.flags |= lt.torrent_flags.disable_pex
    return session.add_torrent(params)


def run_seed(args: argparse.Namespace) -> int:
    session = lt.session(settings(args.bind[0], args.router or "", False))
    add(session, args, seed=True)
    time.sleep(args.seconds)
    return 0


def run_leech(args: argparse.Namespace) -> int:
    session = lt.session(settings(args.bind[0], args.router or "", True, not args.no_dht))
    handle = add(session, args, seed=False)
    start = time.monotonic()
    deadline = start + args.seconds
    status = handle.status()
    encrypted = 0
    while time.monotonic() < deadline:
        status = handle.status()
        encrypted = max(
            encrypted, sum(1 for p in handle.get_peer_info() if p.flags & p.rc4_encrypted)
        )
        if status.total_wanted and status.total_wanted_done == status.total_wanted:
            break
        time.sleep(POLL)
    complete = bool(status.total_wanted) and status.total_wanted_done == status.total_wanted
    report = {
        "complete": complete,
        "bytes": status.total_wanted_done,
        "received": status.total_payload_download,
        "wanted": status.total_wanted,
        "pieces": status.num_pieces,
        "seconds": round(time.monotonic() - start, 2),
        "encrypted_peers": encrypted,
    }
    print(json.dumps(report), flush=True)
    return 0 if complete else 7


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("role", choices=("dht", "seed", "leech"))
    parser.add_argument("--bind", action="append", required=True, help="IP:PORT (repeat for dht)")
    parser.add_argument("--router", help="DHT bootstrap node IP:PORT")
    parser.add_argument("--torrent", help="a .torrent file or a magnet link")
    parser.add_argument("--dir")
    parser.add_argument("--no-dht", action="store_true", help="leech: DHT and PEX off")
    parser.add_argument("--seconds", type=float, required=True)
    args = parser.parse_args(argv)
    if args.role != "dht" and not (args.torrent and args.dir):
        parser.error(f"{args.role} needs --torrent and --dir")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    return {"dht": run_dht, "seed": run_seed, "leech": run_leech}[args.role](args)


if __name__ == "__main__":
    sys.exit(main())
