"""DNS's queue rules: answers from the outside, in the reply direction of flows a green host or
the gateway opened, on their way to a green host or to the gateway.

The core puts them below its ``-i GREEN -j RETURN`` guards (nft: ``iifname != ...``), so
neither the internet nor a green host can forge one to train the block list; they always pass
while no daemon reads the queue (the daemon never drops an answer).
"""

from __future__ import annotations

from zope.interface import implementer

from ..detectors.dns import DNS_PORT
from . import FORWARD, INPUT, IptablesContext, IRuleFragment, NftContext, Rules, words


@implementer(IRuleFragment)
class DnsRules:
    name = "dns"
    flags = (("no-dns", "Do not queue DNS answers (no DNS auto-training)."),)
    chains = ()

    def __init__(self, off: frozenset[str] = frozenset()) -> None:
        self.on = "no-dns" not in off

    def iptables(self, context: IptablesContext) -> Rules[list[str]]:
        if not self.on:
            return Rules()
        answer = [*context.reply, *context.answer]
        port = str(DNS_PORT)
        return Rules(outside={
            FORWARD: [["-p", "udp", "--sport", port, *answer],
                      ["-p", "tcp", "--sport", port, "!", "--syn", *answer]],
            INPUT: [["-p", "udp", "--sport", port, *answer]],
        })  # fmt: skip

    def nft(self, context: NftContext) -> Rules[str]:
        if not self.on:
            return Rules()
        answer = words(context.reply, context.answer)
        return Rules(outside={
            FORWARD: [f"udp sport {DNS_PORT} {answer}",
                      f"tcp sport {DNS_PORT} tcp flags & syn == 0 {answer}"],
            INPUT: [f"udp sport {DNS_PORT} {answer}"],
        })  # fmt: skip
