"""The seams of p2pwall, named with ``zope.interface`` so tests plug in fakes and new P2P
protocols plug in as detectors."""

from __future__ import annotations

from zope.interface import Attribute, Interface


class IDetector(Interface):
    """Knows one protocol's wire format and what ftwall does when it sees it.

    It acts through the narrow ``IEngine`` it is handed and returns a verdict when it has
    decided, or ``None`` to let the next detector and then the engine's generic rules decide.
    """

    name = Attribute("Short name used in events and stats, e.g. 'fasttrack'.")
    wants = Attribute(
        "The (IP protocol, hook) pairs whose packets it inspects, e.g. {(17, Hook.FORWARD)}: "
        "the engine asks each detector only about those, so adding one costs the others nothing."
    )
    origins = Attribute("The ``origins.Origin`` of every block it learns.")

    def inspect(packet, hook, engine):
        """Look at one decoded packet seen on ``hook``; return a ``Verdict`` or ``None``."""

    def reload(engine):
        """Re-read what the detector reads from files (SIGHUP, the control port's
        ``reload``); the problems found, one line each (none: an empty list)."""


class IDetectorFactory(Interface):
    """A detector class, as the registry (``p2pwall.registry``) lists it: what it adds to
    the daemon's options, debug classes and metrics, and how it is built from the options."""

    name = Attribute("The detector's name, as its instances have it.")
    opt_flags = Attribute("Its ``usage.Options`` flags (``optFlags`` rows).")
    opt_parameters = Attribute("Its ``usage.Options`` parameters (``optParameters`` rows).")
    debug_classes = Attribute("Its debug classes: {letter: meaning}.")
    counters = Attribute(
        "The ``stats`` keys it counts, as metrics: (key, metric name without p2pwall_ and "
        "_total, help) rows."
    )

    def from_options(options):
        """A detector configured by the daemon's parsed options."""


class IProbe(Interface):
    """How a locked client of one protocol is asked whether it still runs: the gateway sends
    ``payload()`` from ``source_port`` to the client's ``port``; only a packet ``answers``
    accepts as the reply restarts the lock."""

    protocol = Attribute("The ``origins.Protocol`` it probes for; its family keys the probe.")
    port = Attribute("The client's port the probe goes to.")
    source_port = Attribute("The gateway's port it comes from, where the reply is expected.")

    def payload():
        """The bytes of the next probe (a protocol with transaction ids makes a new one)."""

    def answers(packet):
        """Whether ``packet``, from the client to the gateway, replies to the last probe."""


class IEngine(Interface):
    """What a detector may use of the engine: the facts about the network, the evidence
    check, and the actions (learn, lock, probe, spoof, count). Nothing else of it."""

    clock = Attribute("The ``IReactorTime`` the engine decides by.")
    events = Attribute("The ``IEventSink``.")
    green = Attribute("The green networks (``networks.GreenNetworks``): ``addr in green``.")
    green_ifindexes = Attribute("Indexes of the green interfaces (``--green-if``).")

    def evidence(packet):
        """Whether ``packet`` speaks for its source address (its MAC owns it); counted when
        not."""

    def learn(peer, port, client, origin, seen_from=None, name=None, by=None):
        """Block ``peer:port`` for ``client`` (``b""``: every host) with origin name
        ``origin``; True when new."""

    def learn_from(packet, peer, port, origin, name=None):
        """Block ``peer:port`` (an ``Origin``'s learnable port) for the host that sent
        ``packet``; for every host once a second host reveals it too."""

    def learn_for(client, peer, port, origin):
        """Block ``peer:port`` (an ``Origin``'s learnable port) for ``client`` alone: a peer
        named in a reply from an untrusted outside host to ``client``."""

    def lock(addr, reason, packet=None, protocol=None):
        """(Re)start ``addr``'s time lock for ``protocol`` (an ``origins.Protocol``); the
        client, or ``None`` when nothing was locked."""

    def probe_with(addr, probe):
        """Probe the locked client ``addr`` with ``probe`` (an ``IProbe``), replacing the
        probe of the same protocol family."""

    def probe_of(addr, family):
        """The ``IProbe`` of protocol ``family`` the locked client ``addr`` gets, or None."""

    def is_locked_for(addr, protocol):
        """Whether ``addr`` holds a running lock it got by speaking ``protocol`` (a name)."""

    def probe_answered(packet, family):
        """Whether ``packet`` answers the last probe of ``family`` sent to its source; if so
        the lock restarts."""

    def spoof(src, sport, dst, dport, payload):
        """Send a forged UDP datagram, within the engine's spoof budget."""

    def count(key, n=1):
        """Add ``n`` to the ``stats`` counter ``key``."""


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

    def packet(cls, packet, reason, verdict=None):
        """Log a verdict event (u U t T) about ``packet``, with its MAC if ``m`` is on;
        ``verdict`` words what was done when it is not what ``cls`` says (``would drop`` in
        dry-run mode)."""

    def debug(cls, fmt, **fields):
        """Log a debug message of debug class ``cls``."""


class INeighbours(Interface):
    """The gateway's neighbour table (ARP / NDP): which MAC address owns a green address.

    A queued packet carries its sender's MAC; when it is not the one the gateway talks to for
    the packet's source address, the source address is forged and the packet is no evidence
    about that host."""

    def verified(addr, mac):
        """True when ``mac`` (bytes, or ``None`` on a link without MAC addresses) may speak
        for ``addr`` (packed): the neighbour entry names it, or the link has no MACs."""


class IClientObserver(Interface):
    """Told when a green host becomes a locked P2P client and when it is released."""

    def client_locked(addr):
        """``addr`` (packed) is now locked."""

    def client_released(addr):
        """``addr`` (packed) is no longer locked."""


class IPacketSource(Interface):
    """The kernel queue's netlink socket: one message per queued packet (``netlink``'s
    ``MSG_PACKET``), now and then an error report about a verdict."""

    def fileno():
        """The file descriptor that becomes readable when messages are waiting."""

    def recv_into(buffer):
        """Copy the next message into ``buffer`` and return its size. Raises
        ``BlockingIOError`` when none is waiting, ``OSError`` ENOBUFS after the kernel dropped
        messages for a full socket buffer (the next call goes on)."""

    def close():
        """Detach from the kernel queue (``--queue-bypass`` rules then let packets through)."""


class IVerdictTarget(Interface):
    """Where the verdicts of one batch of packets go (the kernel queue)."""

    def set_verdicts(drops, accept_through):
        """Drop the packets whose ids are in ``drops``, then accept every packet still held
        with an id up to ``accept_through`` (``None``: accept none)."""


class IPacketHandler(Interface):
    """What a queue reader hands each queued packet to, whichever reader it is: the one place
    that decodes, decides and keeps the rule that every packet gets exactly one verdict. A
    reader only moves bytes and verdicts; it holds no policy."""

    failure_verdict = Attribute(
        "The ``Verdict`` for a packet whose handling failed, or whose message the reader "
        "could not read (``--failure-verdict``)."
    )

    def handle(data, start, end, hook, mac, indev):
        """The verdict for the IP packet in ``data[start:end]``, queued on ``hook`` (its
        sender's MAC or ``None``, the index of its input interface or 0). Never raises: a
        failure is counted, logged and answered with ``failure_verdict``."""

    def stats():
        """The handler's counters, as the control port's ``stats`` shows them."""


class IKernelSets(Interface):
    """The kernel's sets that enforce what the daemon learned (``--enforce kernel``), written
    in batches: each call is one transaction the kernel applies whole or refuses
    (``KernelSetsError``, one line). Elements and locks are ``kernel.elements``'."""

    name = Attribute("Which sets: 'nft' or 'ipset'.")

    def check(lock_seconds):
        """Fail when the sets are missing, or time locks out after another time than the
        daemon's ``lock_seconds``."""

    def load(blocks, allowed):
        """Replace every block element with ``blocks`` ((``Element``, action) pairs) and the
        allowed networks with ``allowed``; the number of elements written."""

    def set_allowed(networks):
        """Replace the allowed networks."""

    def apply(add, replace, remove, locks, unlocks):
        """One batch: new (``Element``, action) pairs, pairs whose element is there with
        another action, ``Element``s to remove, ``Lock``s to (re)start for their seconds, and
        (family, address text) pairs to unlock."""

    def locks():
        """The clients the sets hold locked, as ``Lock``s with their seconds left."""

    def clear():
        """Empty every block and lock set (accept-all: the kernel drops nothing)."""
