"""The seams of p2pwall, named with ``zope.interface`` so tests plug in fakes and new P2P
protocols plug in as detectors."""

from __future__ import annotations

from zope.interface import Attribute, Interface


class IDetector(Interface):
    """Knows one protocol's wire format and what ftwall does when it sees it.

    A detector may call the engine's public methods (``learn``, ``lock``, ``note_hello``,
    ``probe_answered``, ``spoof``...) and returns a verdict when it has decided, or ``None``
    to let the next detector and then the engine's generic rules decide.
    """

    name = Attribute("Short name used in events and stats, e.g. 'fasttrack'.")

    def inspect(packet, hook, engine):
        """Look at one decoded packet seen on ``hook``; return a ``Verdict`` or ``None``."""


class ISpoofer(Interface):
    """Sends forged UDP datagrams: pongs from a peer's address, probes from the gateway's."""

    def send_udp(src, sport, dst, dport, payload):
        """Send ``payload`` from ``src:sport`` to ``dst:dport`` (packed addresses).

        ``src`` may be ``None``: the gateway's own address towards ``dst``. Must not block.
        """

    def open():
        """Get ready to send (raw sockets need privileges: called before they are dropped)."""

    def close():
        """Release what ``open`` took."""


class IEventSink(Interface):
    """ftwall's event classes (u U t T c p x m) and debug classes (d a D t h p)."""

    def wants(cls):
        """True when event class ``cls`` is logged anywhere (cheap; hot-path guard)."""

    def wants_debug(cls):
        """True when debug class ``cls`` is enabled."""

    def event(cls, fmt, **fields):
        """Log an event of class ``cls`` (dropped if the class is not enabled)."""

    def packet(cls, packet, reason):
        """Log a verdict event (u U t T) about ``packet``, with its MAC if ``m`` is on."""

    def debug(cls, fmt, **fields):
        """Log a debug message of debug class ``cls``."""


class IClientObserver(Interface):
    """Told when a green host becomes a locked P2P client and when it is released."""

    def client_locked(addr):
        """``addr`` (packed) is now locked."""

    def client_released(addr):
        """``addr`` (packed) is no longer locked."""


class IVerdictTarget(Interface):
    """One packet held by the kernel, waiting for its verdict (NetfilterQueue's Packet)."""

    hook = Attribute("The netfilter hook number the packet was queued from.")

    def get_payload():
        """The packet's bytes, from the IP header on."""

    def get_hw():
        """The source MAC address as bytes, or ``None``."""

    def accept():
        """Let the packet go on."""

    def drop():
        """Discard the packet."""


class IPacketSource(Interface):
    """Hands queued packets (``IVerdictTarget``) to a callback; NetfilterQueue's shape."""

    def bind(queue_num, user_callback, max_len, mode, range, sock_len):
        """Attach to kernel queue ``queue_num``."""

    def unbind():
        """Detach from the kernel queue."""

    def get_fd():
        """The file descriptor that becomes readable when packets are waiting."""

    def run_socket(sock):
        """Deliver waiting packets to the callback: call ``sock.recv(4096)`` in a loop and
        hand each message to the callback; an ``OSError`` with ENOBUFS means "go on", one
        with EAGAIN or EWOULDBLOCK ends the call, any other propagates. (A message is one
        packet; the callback's exceptions propagate too.)"""
