"""p2pwall on a gateway that already has a firewall: the queue rules only ever take traffic away.

The admin's firewall in ``gw``: FORWARD and INPUT policy DROP, established/related accepted,
tcp/80 to the web server allowed, tcp/22 to a public host rejected, udp/5060 to it dropped, and
of the gateway's own UDP services only DNS (53) open to green; 161 and 4000 listen but are
closed. With the daemon running, stopped (``--queue-bypass``) and stopped under
``--no-bypass``, nothing the admin drops gets through.
"""

from __future__ import annotations

import json
import re
import sys

from lab.gateway import Gateway
from lab.netlab import WEB_ADDR

from .support import LabCase

PUBLIC_HOST = "198.19.0.22"
GW = "198.18.1.1"
DNS_ON_GW = f"udp:{GW}:53"
CLOSED_ON_GW = (f"udp:{GW}:161", f"udp:{GW}:4000")
WEB = f"tcp:{WEB_ADDR}:80"
CLOSED_OUTSIDE = (f"tcp:{PUBLIC_HOST}:22", f"tcp:{PUBLIC_HOST}:23", f"udp:{PUBLIC_HOST}:5060")
SECONDS = 120  # responders' bound; a test takes far less
MSS = 1000
NAME = "www.example.test"

# Listens on each proto:ip:port given: UDP echoes, TCP accepts and closes; exits after argv[1] s.
RESPONDER = """\
import selectors, socket, sys, time
selector = selectors.DefaultSelector()
for spec in sys.argv[2:]:
    proto, ip, port = spec.split(":")
    kind = socket.SOCK_DGRAM if proto == "udp" else socket.SOCK_STREAM
    sock = socket.socket(socket.AF_INET, kind)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((ip, int(port)))
    if proto == "tcp":
        sock.listen(64)
    selector.register(sock, selectors.EVENT_READ, proto)
deadline = time.monotonic() + float(sys.argv[1])
while time.monotonic() < deadline:
    for key, _ in selector.select(0.5):
        if key.data == "udp":
            data, peer = key.fileobj.recvfrom(2048)
            key.fileobj.sendto(data, peer)
        else:
            key.fileobj.accept()[0].close()
"""

# Tries every proto:ip:port at once (TCP connect, UDP datagram awaiting its echo) and prints
# {target: reached} after at most argv[1] seconds.
REACH = """\
import json, selectors, socket, sys, time
selector = selectors.DefaultSelector()
reached = {}
for spec in sys.argv[2:]:
    proto, ip, port = spec.split(":")
    reached[spec] = False
    kind = socket.SOCK_DGRAM if proto == "udp" else socket.SOCK_STREAM
    sock = socket.socket(socket.AF_INET, kind)
    sock.setblocking(False)
    if proto == "udp":
        sock.sendto(b"ping", (ip, int(port)))
        selector.register(sock, selectors.EVENT_READ, spec)
    else:
        sock.connect_ex((ip, int(port)))
        selector.register(sock, selectors.EVENT_WRITE, spec)
deadline = time.monotonic() + float(sys.argv[1])
while selector.get_map() and time.monotonic() < deadline:
    for key, _ in selector.select(max(0.0, deadline - time.monotonic())):
        sock = key.fileobj
        if key.data.startswith("udp"):
            try:
                reached[key.data] = sock.recv(2048) == b"ping"
            except OSError:
                pass
        else:
            reached[key.data] = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
        selector.unregister(sock)
print(json.dumps(reached))
"""

IPTABLES_FIREWALL = f"""\
iptables -P FORWARD DROP
iptables -P INPUT DROP
iptables -A INPUT -i lo -j ACCEPT
iptables -A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
iptables -A INPUT -i green0 -p udp --dport 53 -j ACCEPT
iptables -A FORWARD -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
iptables -A FORWARD -p tcp -d {PUBLIC_HOST} --dport 22 -j REJECT --reject-with tcp-reset
iptables -A FORWARD -p udp -d {PUBLIC_HOST} --dport 5060 -j DROP
iptables -A FORWARD -i green0 -p tcp -d {WEB_ADDR} --dport 80 -j ACCEPT
"""

NFT_FIREWALL = f"""\
nft -f - <<'EOF'
table inet filter {{
  chain input {{
    type filter hook input priority filter; policy drop;
    iif lo accept
    ct state established,related accept
    iifname "green0" udp dport 53 accept
  }}
  chain forward {{
    type filter hook forward priority filter; policy drop;
    ct state established,related accept
    ip daddr {PUBLIC_HOST} tcp dport 22 reject with tcp reset
    ip daddr {PUBLIC_HOST} udp dport 5060 drop
    iifname "green0" ip daddr {WEB_ADDR} tcp dport 80 accept
  }}
}}
EOF
"""

# The admin's own mangle rule, as on a PPPoE gateway (a fixed size here, so it shows).
MSS_CLAMP = (
    f"iptables -t mangle -A FORWARD -p tcp --tcp-flags SYN,RST SYN -j TCPMSS --set-mss {MSS}"
)
COUNTERS = re.compile(r"(\[\d+:\d+\]|counter packets \d+ bytes \d+)")


class AdminFirewallCase(LabCase):
    peers = 0

    def setUp(self) -> None:
        super().setUp()
        self.lab.add_public_addr(PUBLIC_HOST)
        self.respond("pub", list(CLOSED_OUTSIDE))
        self.respond("gw", [DNS_ON_GW, *CLOSED_ON_GW])
        everything = [*CLOSED_OUTSIDE, DNS_ON_GW, *CLOSED_ON_GW, WEB]
        self.assertEqual(self.reach(everything), dict.fromkeys(everything, True),
                         "without a firewall every responder answers")  # fmt: skip

    def respond(self, host: str, targets: list[str]) -> None:
        log = f"responder-{host}.log"
        proc = self.lab.spawn(host, [sys.executable, "-c", RESPONDER, str(SECONDS), *targets],
                              log=log)  # fmt: skip
        for target in targets:
            proto, ip, port = target.split(":")
            self.lab.wait_listening(host, proto, ip, int(port), proc, log)

    def reach(self, targets: list[str], seconds: float = 1.5) -> dict[str, bool]:
        done = self.lab.run("user", [sys.executable, "-c", REACH, str(seconds), *targets],
                            capture_output=True, text=True)  # fmt: skip
        self.assertEqual(done.returncode, 0, done.stderr)
        return json.loads(done.stdout)

    def gw_shell(self, script: str) -> str:
        done = self.lab.run("gw", ["sh", "-e"], input=script, capture_output=True, text=True)
        self.assertEqual(done.returncode, 0, done.stderr)
        return done.stdout

    def ruleset(self) -> str:
        """Everything in gw's netfilter, counters left out, nft's tables in name order (a
        table replaced in one transaction is listed last)."""
        saved = self.gw_shell("iptables-save; ip6tables-save\n").splitlines()
        tables = re.split(r"\n(?=table )", self.gw_shell("nft list ruleset\n"))
        listing = [line for line in saved if not line.startswith("#")] + sorted(
            map(str.strip, tables)
        )
        return COUNTERS.sub("", "\n".join(listing))

    def admin_rules(self) -> str:
        """The admin's rules: iptables' in every table, and nft's ``table inet filter``."""
        listing = self.gw_shell(
            "for table in filter mangle raw nat; do iptables -t $table -S; done\n"
            "nft list table inet filter 2>/dev/null || true\n"
        )
        return COUNTERS.sub("", "\n".join(line for line in listing.splitlines()
                                          if not line.startswith(("-P", "-N", "#"))))  # fmt: skip


class ThreeStatesTests(AdminFirewallCase):
    def setUp(self) -> None:
        super().setUp()
        self.lab.start_dns({NAME: WEB_ADDR})

    def check(self, web: bool, state: str) -> None:
        closed = [*CLOSED_OUTSIDE, *CLOSED_ON_GW]
        reached = self.reach([*closed, DNS_ON_GW, WEB])
        dropped = {target: reached[target] for target in closed}
        self.assertEqual(dropped, dict.fromkeys(closed, False), f"{state}: the admin's drops hold")
        self.assertTrue(reached[DNS_ON_GW], f"{state}: the gateway's DNS is never queued")
        self.assertEqual(reached[WEB], web, f"{state}: the allowed web port")
        resolved = self.lab.run("gw", ["dig", "+short", "+time=1", "+tries=1",
                                       f"@{self.lab.addr('dns')}", NAME],
                                capture_output=True, text=True)  # fmt: skip
        message = f"{state}: the gateway's own resolver gets its answers (always bypass)"
        self.assertEqual(resolved.stdout.strip(), WEB_ADDR, message)

    def three_states(self, firewall: str, rules: str) -> None:
        self.gw_shell(firewall)
        gateway = self.gateway(rules=rules)
        self.check(web=True, state="daemon running")
        stats = gateway.stats()
        self.assertGreaterEqual(int(stats["accept_tcp"]), 3, "web, 22, 23: accepted, then judged")
        self.assertGreaterEqual(int(stats["accept_udp"]), 2, "5060 and gw:4000 were queued too")
        gateway.stop()
        self.check(web=True, state="daemon stopped, --queue-bypass")
        closed = Gateway(self.lab, rules=rules, rule_options=["--no-bypass"])
        self.addCleanup(closed.remove_rules)
        closed.install_rules()
        self.check(web=False, state="daemon stopped, --no-bypass")

    def test_iptables_firewall_with_iptables_rules(self) -> None:
        self.three_states(IPTABLES_FIREWALL, "iptables")

    def test_nft_firewall_with_nft_rules(self) -> None:
        """``table inet filter`` with policy drop, the nft rules at priority mangle (queued
        through the lab's xtables hand-off in mangle: this kernel has no nft queue)."""
        self.three_states(NFT_FIREWALL, "nft-xt")


class IdempotencyTests(AdminFirewallCase):
    def apply_twice_then_delete(self, firewall: str, rules: str) -> None:
        self.gw_shell(firewall)
        admin = self.admin_rules()
        gateway = Gateway(self.lab, rules=rules)
        self.addCleanup(gateway.remove_rules)
        gateway.install_rules()
        once = self.ruleset()
        self.assertIn("p2pwall", once)
        gateway.install_rules()
        self.assertEqual(self.ruleset(), once, "a second run changes nothing")
        gateway.remove_rules()
        after = self.ruleset()
        self.assertNotIn("p2pwall", after)
        self.assertNotIn("NFQUEUE", after)
        self.assertNotIn("queue", after)
        self.assertEqual(self.admin_rules(), admin, "the admin's rules are as they were")

    def test_iptables(self) -> None:
        self.apply_twice_then_delete(IPTABLES_FIREWALL, "iptables")

    def test_nft(self) -> None:
        self.apply_twice_then_delete(NFT_FIREWALL, "nft-xt")


class AdminMangleRuleTests(AdminFirewallCase):
    def test_an_accepted_syn_still_gets_the_admins_mss_clamp(self) -> None:
        """Our jump is appended to mangle FORWARD: the daemon's accept ends our chain after the
        admin's mangle rules ran (inserted first, the SYN would skip the clamp)."""
        self.gw_shell(IPTABLES_FIREWALL + MSS_CLAMP + "\n")
        seen = ["INPUT", "-d", WEB_ADDR, "-p", "tcp", "--dport", "80", "--syn", "-m", "tcpmss",
                "--mss", str(MSS)]  # fmt: skip
        self.lab.run("pub", ["iptables", "-A", *seen], check=True)
        gateway = self.gateway()
        forward = self.gw_shell("iptables -t mangle -S FORWARD\n").splitlines()
        self.assertIn("TCPMSS", forward[-2])
        self.assertEqual(forward[-1], "-A FORWARD -j p2pwall-fwd")
        self.assertTrue(self.reach([WEB])[WEB])
        stats = gateway.stats()
        self.assertGreaterEqual(int(stats["accept_tcp"]), 1, "the SYN went through the daemon")
        counted = self.lab.run("pub", ["iptables", "-L", "INPUT", "-v", "-x", "-n"],
                               capture_output=True, text=True).stdout  # fmt: skip
        clamped = [
            line.split()[0] for line in counted.splitlines() if f"tcpmss match {MSS}" in line
        ]
        self.assertEqual(clamped, ["1"], "the SYN arrived with the admin's MSS")
