"""Wiring: ``makeService`` turns options into the running daemon.

Read top to bottom to follow a packet: a queue reader (``--reader``: the native one or the
NetfilterQueue package's, ``open_reader``) hands it to the ``PacketHandler``, which decodes it
and asks the ``Engine`` for a verdict (``build_engine``); the engine asks its detectors,
consults the block and lock tables and acts through the spoofer and the event log. Around it,
``build_services`` adds what keeps it running: timers send probes and expire locks, age learned
blocks, re-read the gateway's addresses and green interfaces, and flush the store file; SIGHUP
reloads (and reopens the ``--json-events`` file); the control port and the metrics endpoint
listen. With ``--enforce kernel`` the kernel drops by p2pwall's sets (``p2pwall.kernel``):
``KernelService`` writes what the engine learns into them and reads back the locks the
kernel makes by itself. Services start in the order they are added (privileged start
first, for all of them, then start) and stop in reverse: the store is loaded and the raw sockets
opened before the queue is bound, and the queue is released first.

Failing like a Unix daemon: a ``StartError`` anywhere in building or starting ends the daemon
with its one line and exit status 1, with ``-n`` and daemonised alike (``daemon.py``).
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from functools import partial
from typing import Any

from twisted.application.internet import TimerService
from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.interfaces import IReactorThreads, IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure

from . import sdnotify
from .allow import AllowList
from .commands import Controller, read_queue_stats
from .control import ControlFactory, ControlService
from .daemon import CapabilityService, LaunchStderr, ReloadService, one_line_failures
from .detectors.dns import DnsDetector
from .engine import Engine
from .errors import KernelSetsError, StartError
from .events import EventLog, JsonEventFile
from .handler import PacketHandler
from .hooks import CommandHooks
from .interfaces import IKernelSets, INeighbours, ISpoofer
from .kernel.backends import open_sets
from .kernel.sync import POLL_INTERVAL, FlushingSpoofer, KernelSync
from .localaddrs import AddressWatch
from .metrics import DaemonCollector, MetricsService, MetricsSite
from .neighbours import KernelNeighbours
from .networks import LINK_LOCAL, GreenNetworks
from .nfq_package import NetfilterQueueReader, open_netfilterqueue
from .nfqueue import KernelQueue, NativeReader, QueueReader, Reactor
from .options import Options
from .packet import Verdict
from .registry import REGISTRY
from .rtnetlink import LinkAddress, addresses
from .spoof import RawSpoofer
from .store import ClientDirectory, StoreFile
from .tables import BlockTable, LockTable

log = Logger()

# Seconds between re-reads of the gateway's own addresses and of the green interfaces' networks
# (a DHCP lease or a router advertisement may change them).
LOCAL_ADDRESSES_INTERVAL = 60.0


def makeService(
    options: Options,
    reactor: IReactorTime | None = None,
    packet_source: Callable[[], Any] | None = None,
    spoofer: ISpoofer | None = None,
    read_addresses: Callable[[], list[LinkAddress]] = addresses,
    neighbours: INeighbours | None = None,
    kernel_sets: Callable[[str], IKernelSets] = open_sets,
) -> DaemonService:
    """Build the daemon; tests pass a fake reactor, packet source (what the chosen reader
    reads: a ``FakeKernelQueue``, a ``FakeNetfilterQueue``), spoofer, address list,
    neighbour table and kernel sets (``--enforce kernel``)."""
    if reactor is None:
        from twisted.internet import reactor  # type: ignore[no-redef]
    with one_line_failures():
        json_events = open_json_events(options["json-events"])
        engine = build_engine(options, reactor, spoofer, neighbours, json_events)
        kernel = open_kernel_sync(options, engine, reactor, kernel_sets)
        return build_services(
            options, engine, reactor, packet_source, read_addresses, json_events, kernel
        )


def open_kernel_sync(
    options: Options,
    engine: Engine,
    reactor: IReactorTime,
    kernel_sets: Callable[[str], IKernelSets],
) -> KernelSync | None:
    """With ``--enforce kernel``, what keeps the kernel's sets equal to the engine's tables;
    a one-line ``StartError`` when the sets cannot be opened."""
    if options["enforce"] != "kernel":
        return None
    try:
        sync = KernelSync(engine, kernel_sets(options["sets"]), reactor)
    except KernelSetsError as error:
        raise StartError(str(error)) from None
    # A forged pong only once the kernel knows the peer it names (``FlushingSpoofer``).
    engine.spoofer = FlushingSpoofer(engine.spoofer, sync)
    return sync


def open_json_events(path: str | None) -> JsonEventFile | None:
    """The ``--json-events`` file, opened now (as root, before ``--uid``); a one-line
    ``StartError`` when it cannot be."""
    if not path:
        return None
    try:
        return JsonEventFile(path)
    except OSError as error:
        raise StartError(f"--json-events {path}: {error.strerror or error}") from None


def build_engine(
    options: Options,
    reactor: IReactorTime,
    spoofer: ISpoofer | None = None,
    neighbours: INeighbours | None = None,
    json_events: JsonEventFile | None = None,
) -> Engine:
    """The policy and its collaborators: what decides each packet. The detectors are the
    registry's (``p2pwall.registry``), in its order, each configured by its own options."""
    events = EventLog(
        syslog=options["syslog-classes"],
        stderr=options["stderr-classes"],
        debug=options["debug-classes"],
        json=options["json-event-classes"],
        json_target=json_events,
    )
    probe_source = options["probe-source"]
    spoofer = spoofer or RawSpoofer(probe_source.packed if probe_source else None)
    # With --green-if, the interfaces' networks join these at the first address read.
    green = options["green"] if not options["green-if"] else [*options["green"], LINK_LOCAL]
    engine = Engine(
        clock=reactor,
        blocks=BlockTable(options["max-peers"]),
        clients=LockTable(options["time-lock"], options["max-clients"]),
        green=GreenNetworks(green),
        detectors=[entry.detector.from_options(options) for entry in REGISTRY],
        spoofer=spoofer,
        events=events,
        accept_all=options["accept-all"],
        dry_run=options["dry-run"],
        allowed=AllowList(options["allow"]),
        max_spoofs=options["max-spoofs"],
        # Whose MAC owns a green address: a packet with another one teaches nothing.
        neighbours=neighbours or KernelNeighbours(reactor),
        max_probes=options["max-probes"],
    )
    return engine


def reload_detectors(engine: Engine) -> list[str]:
    """Every detector re-reads its files; their problems, one line each."""
    return [problem for detector in engine.detectors for problem in detector.reload(engine)]


def reload_function(
    engine: Engine, patterns: str | None, kernel: KernelSync | None
) -> Callable[[], list[str]] | None:
    """What SIGHUP and the control port's ``reload`` do: the detectors re-read their files
    (with ``-D``), then the kernel's sets are written anew (``--enforce kernel``); ``None``
    when there is nothing to reload. The problems, one line each."""
    if not patterns and kernel is None:
        return None

    def reload() -> list[str]:
        problems = reload_detectors(engine) if patterns else []
        if kernel is not None:
            try:
                kernel.load()
            except KernelSetsError as error:
                problems.append(str(error))
        return problems

    return reload


def build_services(
    options: Options,
    engine: Engine,
    reactor: IReactorTime,
    packet_source: Callable[[], Any] | None,
    read_addresses: Callable[[], list[LinkAddress]],
    json_events: JsonEventFile | None = None,
    kernel: KernelSync | None = None,
) -> DaemonService:
    """Everything around the engine, in start order; the queue comes last."""
    watch = AddressWatch(engine, options["green-if"], options["green"], read_addresses)
    top = DaemonService(engine, options, watch, LaunchStderr())
    CapabilityService().setServiceParent(top)
    SpooferService(engine.spoofer).setServiceParent(top)
    AddressService(watch, reactor).setServiceParent(top)
    if options["store-file"]:
        StoreService(
            StoreFile(options["store-file"], options["store-max-age"], engine.origins),
            engine,
            options["store-interval"],
            reactor,
        ).setServiceParent(top)
    max_age = options["store-max-age"]
    prune = partial(prune_blocks, engine, max_age)
    timer(prune_interval(max_age), prune, reactor).setServiceParent(top)
    if options["client-dir"]:
        directory = ClientDirectory(options["client-dir"], clock=reactor)
        engine.observers.append(directory)
        ClientDirectoryService(directory).setServiceParent(top)
    if options["on-lock"] or options["on-release"]:
        hooks = CommandHooks(reactor, engine, options["on-lock"], options["on-release"])
        engine.observers.append(hooks)
        hooks.setServiceParent(top)

    timer(tick_interval(options["time-lock"]), engine.tick, reactor).setServiceParent(top)
    if kernel is not None:
        # After the store: the first copy into the kernel holds what it loaded.
        KernelService(kernel).setServiceParent(top)
        timer(POLL_INTERVAL, kernel.poll, reactor).setServiceParent(top)

    # Only the DNS patterns (-D) are read from a file today; a reload also copies the tables
    # into the kernel's sets anew.
    reload = reload_function(engine, options["dns-patterns"], kernel)
    reopen = [json_events.reopen] if json_events else []
    initial = partial(reload_detectors, engine) if options["dns-patterns"] else None
    ReloadService(reload, reactor, reopen, initial).setServiceParent(top)

    queue_stats = partial(read_queue_stats, options["queue"])

    def reader_stats() -> dict[str, int] | None:
        # reading is assigned below; the reader exists once the queue is bound.
        return reading.reader.stats() if reading.reader else None

    if options["control"]:
        control = ControlFactory(
            Controller(
                engine,
                names=next(d.banned for d in engine.detectors if isinstance(d, DnsDetector)),
                reload=reload,
                queue_stats=queue_stats,
                dump_dir=options["dump-dir"],
                reader_stats=reader_stats,
                run=thread_runner(reactor),
            )
        )
        ControlService(options["control"], control, reactor).setServiceParent(top)
    if options["metrics"]:
        collector = DaemonCollector(engine, queue_stats, reader_stats, reactor.seconds())
        MetricsService(options["metrics"], MetricsSite(collector), reactor).setServiceParent(top)

    reading = QueueService(
        partial(open_reader, options, engine, reactor, packet_source, kernel), options["queue"]
    )
    reading.setServiceParent(top)
    return top


def open_reader(
    options: Options,
    engine: Engine,
    reactor: Reactor,
    transport: Callable[[], Any] | None,
    kernel: KernelSync | None = None,
) -> QueueReader:
    """Bind the queue with the ``--reader`` chosen: ``transport`` opens what it reads (by
    default a ``KernelQueue``, or a ``NetfilterQueue`` from the package). ``OSError`` when the
    kernel refuses. With kernel enforcement, what a packet taught reaches the kernel's sets
    before its verdict (``KernelSync.deciding``)."""
    queue_num = options["queue"]
    decide = kernel.deciding(engine.verdict) if kernel is not None else engine.verdict
    name = f"NFQUEUE {queue_num}"
    failure_verdict = Verdict[options["failure-verdict"].upper()]
    if options["reader"] == "netfilterqueue":
        try:
            nfq = (transport or open_netfilterqueue)()
        except ImportError:
            raise StartError(
                "--reader netfilterqueue needs the NetfilterQueue package (pip install "
                "NetfilterQueue; it builds against libnetfilter-queue-dev)"
            ) from None
        handler = PacketHandler(decide, failure_verdict, NetfilterQueueReader.copy_range)
        return NetfilterQueueReader(
            nfq,
            queue_num,
            handler,
            reactor,
            max_len=options["max-queue-len"],
            sock_len=options["buffer"],
            name=name,
        )
    open_queue = transport or partial(
        KernelQueue,
        queue_num,
        max_len=options["max-queue-len"],
        sock_len=options["buffer"],
        fail_open=options["fail-open"],
    )
    queue = open_queue()
    handler = PacketHandler(decide, failure_verdict, NativeReader.copy_range)
    return NativeReader(queue, handler, reactor, name=name)


class DaemonService(MultiService):
    """The whole daemon; ``engine`` and ``watch`` are kept for the control port's and the
    tests' sake. Starting logs the settings in effect, then starts the parts."""

    def __init__(
        self, engine: Engine, options: Options, watch: AddressWatch, launch: LaunchStderr
    ) -> None:
        super().__init__()
        self.engine = engine
        self.options = options
        self.watch = watch
        self.launch = launch

    def privilegedStartService(self) -> None:
        with one_line_failures(self.launch.report):
            super().privilegedStartService()

    def startService(self) -> None:
        with one_line_failures(self.launch.report):
            log.info("{settings}", settings=settings_line(self.options, self.engine, self.watch))
            for warning in settings_warnings(self.options):
                log.warn("{line}", line=warning)
            super().startService()
        self.launch.close()
        # Type=notify: systemd starts the units after this one only now, with the queue bound.
        sdnotify.ready(f"reading NFQUEUE {self.options['queue']}")


def settings_line(options: Options, engine: Engine, watch: AddressWatch) -> str:
    """The settings in effect, on one line: what the admin checks first when nothing blocks."""
    detectors = ", ".join(detector.name for detector in engine.detectors)
    patterns = options["dns-patterns"] or "none (banned names only)"
    interfaces = ",".join(watch.interfaces) or "none found"
    kernel = options["enforce"] == "kernel"
    enforcer = f"the kernel ({options['sets']} sets)" if kernel else "the queue"
    return (
        f"p2pwall: green networks {engine.green}; "
        f"green interfaces {interfaces}{' (--green-if)' if options['green-if'] else ''}; "
        f"time lock {options['time-lock']:g} s; "
        f"FastTrack UDP blocking {'off (-n)' if options['no-udp-block'] else 'on'}; "
        f"detectors {detectors}; DNS patterns {patterns}; "
        f"queue {options['queue']} (reader {options['reader']}); "
        f"store file {options['store-file'] or 'none'}; "
        f"enforced by {enforcer}"
        f"{'; ACCEPT-ALL' if options['accept-all'] else ''}"
        f"{'; DRY RUN' if options['dry-run'] else ''}"
        f"{'; allowed ' + ','.join(map(str, options['allow'])) if options['allow'] else ''}"
    )


def settings_warnings(options: Options) -> list[str]:
    """Settings under which the daemon protects less than an admin would expect."""
    warnings = []
    if options["green-default"]:
        ranges = ", ".join(str(n) for n in options["green"])
        warnings.append(
            f"WARNING: no --green-if and no --green: protecting only the private ranges "
            f"({ranges}); hosts on any other LAN prefix are NOT protected"
        )
    if options["no-udp-block"]:
        warnings.append(
            "WARNING: UDP blocking is OFF (-n, for testing): FastTrack clients reach peers "
            "over UDP and are not kept in their UDP phase"
        )
    if options["accept-all"]:
        warnings.append("WARNING: accept-all is on: every packet is accepted, nothing is blocked")
    if options["dry-run"]:
        warnings.append(
            "WARNING: dry run: packets are decided and logged ('would drop') but none is dropped"
        )
    return warnings


def timer(interval: float, work: Callable[[], None], clock: IReactorTime) -> TimerService:
    """A ``TimerService`` that logs a failing run and keeps going: a ``LoopingCall`` stops for
    good at the first exception, which would leave every lock in place for ever."""

    def guarded() -> None:
        try:
            work()
        except Exception:
            log.failure("periodic {work} failed", work=getattr(work, "__qualname__", work))

    service = TimerService(interval, guarded)
    service.clock = clock
    return service


def prune_interval(max_age: float) -> float:
    """How often learned blocks are aged: a tenth of ``--store-max-age``, at most an hour."""
    return min(max_age / 10, 3600.0)


def prune_blocks(engine: Engine, max_age: float) -> int:
    """Forget learned blocks not seen for ``max_age`` seconds (with or without a store file)."""
    pruned = engine.blocks.prune(engine.clock.seconds() - max_age)
    if pruned:
        log.info("forgot {count} blocks not seen for {age:.0f} s", count=pruned, age=max_age)
    return pruned


def tick_interval(time_lock: float) -> float:
    """How often locks and probes are checked: a tenth of the lock, between 50 and 100 ms.

    A tick looks at no more than ``engine.TICK_ACTIONS`` locks (so it never stalls the
    daemon), and an idle tick costs one heap peek: ticking often is what keeps releases on time
    after a burst of thousands of clients."""
    return min(0.1, max(0.05, time_lock / 10)) if time_lock else 1.0


class AddressService(Service):
    """Reads the gateway's addresses and the green interfaces before anything starts (the
    start line shows them, the queue needs them), then on a timer."""

    def __init__(self, watch: AddressWatch, clock: IReactorTime) -> None:
        self.watch = watch
        self._timer = timer(LOCAL_ADDRESSES_INTERVAL, watch.refresh, clock)

    def privilegedStartService(self) -> None:
        self.watch.refresh()
        super().privilegedStartService()

    def startService(self) -> None:
        super().startService()
        self._timer.startService()

    def stopService(self) -> None:
        super().stopService()
        self._timer.stopService()


class KernelService(Service):
    """Checks and fills the kernel's sets at start (a one-line ``StartError`` when they are
    missing or refuse), follows the tables while running."""

    def __init__(self, sync: KernelSync) -> None:
        self.sync = sync

    def startService(self) -> None:
        try:
            self.sync.start()
        except KernelSetsError as error:
            raise StartError(str(error)) from None
        super().startService()

    def stopService(self) -> None:
        super().stopService()
        self.sync.stop()


class SpooferService(Service):
    """Opens the raw sockets while privileged, closes them at the end."""

    def __init__(self, spoofer: ISpoofer) -> None:
        self.spoofer = spoofer

    def privilegedStartService(self) -> None:
        try:
            self.spoofer.open()
        except OSError as error:
            raise StartError(f"cannot open raw sockets to spoof: {error}") from None
        super().privilegedStartService()

    def stopService(self) -> None:
        super().stopService()
        self.spoofer.close()


# What a refused bind most likely means (the kernel says EPERM for both).
BIND_HINTS = {errno.EPERM: "another program reads that queue, or no CAP_NET_ADMIN"}


class QueueService(Service):
    """Binds the kernel queue while privileged and reads it while running."""

    def __init__(self, make_reader: Callable[[], QueueReader], queue_num: int) -> None:
        self._make_reader = make_reader
        self._queue_num = queue_num
        self.reader: QueueReader | None = None

    def privilegedStartService(self) -> None:
        try:
            self.reader = self._make_reader()
        except OSError as error:
            hint = BIND_HINTS.get(error.errno, "it needs root and the nfnetlink_queue module")
            raise StartError(
                f"cannot bind NFQUEUE {self._queue_num}: {error.strerror or error} ({hint})"
            ) from None
        super().privilegedStartService()

    def startService(self) -> None:
        if self.reader is None:
            self.privilegedStartService()
        super().startService()
        assert self.reader is not None
        self.reader.startReading()
        log.info("reading NFQUEUE {queue}", queue=self._queue_num)

    def stopService(self) -> None:
        super().stopService()
        if self.reader is not None:
            self.reader.close()
            log.info("released NFQUEUE {queue}", queue=self._queue_num)


Runner = Callable[..., "Deferred[int]"]

# When only last-seen times changed, the store file is written every this many intervals (10 min
# at the default 60 s): they matter only against --store-max-age (days), and a stop writes them.
REFRESHES_WRITTEN_EVERY = 10


def thread_runner(reactor: IReactorTime) -> Runner:
    """Run a function in the reactor's thread pool; right here if it has none (a test clock)."""
    if not IReactorThreads.providedBy(reactor):
        return maybeDeferred
    threads: IReactorThreads = reactor  # type: ignore[assignment]
    return lambda work, *args: deferToThreadPool(threads, threads.getThreadPool(), work, *args)


class StoreService(Service):
    """Loads learned peers before the queue is bound, writes them on a timer and at shutdown.

    The load runs in ``privilegedStartService``, which twistd calls for every service before it
    starts any: the queue, added after this service, is not bound (and holds no packets) while a
    big file is read. A write is skipped when the table has not changed since the last one
    (``BlockTable.changes``); last-seen refreshes alone are written every
    ``REFRESHES_WRITTEN_EVERY``-th interval. The reactor thread only takes a snapshot (two list
    copies); formatting and writing run through ``run`` (the reactor's thread pool by default),
    one write at a time. ``stopService`` returns the last write's Deferred, so twistd waits.
    """

    def __init__(
        self,
        store: StoreFile,
        engine: Engine,
        interval: float,
        clock: IReactorTime,
        run: Runner | None = None,
    ) -> None:
        self.store = store
        self.engine = engine
        self._timer = timer(interval, self.save, clock)
        self._run = run or thread_runner(clock)
        self._loaded = False
        self._written: tuple[int, int] | None = None
        self._held = 0
        self._writing: Deferred | None = None

    def privilegedStartService(self) -> None:
        self._load()
        super().privilegedStartService()

    def startService(self) -> None:
        if not self._loaded:
            self._load()
        super().startService()
        self._timer.startService()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        self._timer.stopService()
        return self.save(final=True)

    def _load(self) -> None:
        engine = self.engine
        blocks = engine.blocks
        # The addresses are read before the store (AddressService comes first): a stored
        # learned block of a green or gateway address is a bad line.
        loaded = self.store.load(blocks, engine.clock.seconds(), engine.green, engine.local)
        self._loaded = True
        self._written = (blocks.changes, blocks.refreshes)  # the file holds what was loaded
        log.info("loaded {count} blocks from {path}", count=loaded, path=self.store.path)

    def save(self, final: bool = False) -> Deferred[None]:
        """Write the table if it changed; fires when written (or failed, which is logged).

        While a write is under way the timer's turn is skipped; the final save follows it.
        Nothing is written before the file was loaded: that would lose the stored blocks."""
        if not self._loaded:
            return succeed(None)
        if self._writing is not None:
            if not final:
                return succeed(None)
            return self._writing.addCallback(lambda _: self.save(final=True))
        blocks = self.engine.blocks
        state = (blocks.changes, blocks.refreshes)
        if self._written is not None:
            if state == self._written:
                return succeed(None)
            if state[0] == self._written[0] and not final:
                self._held += 1
                if self._held < REFRESHES_WRITTEN_EVERY:
                    return succeed(None)
        self._held = 0
        self._written = state
        writing = self._run(self.store.write, blocks.snapshot(), self.engine.clock.seconds())
        self._writing = writing
        return writing.addCallbacks(self._wrote, self._failed)

    def _wrote(self, _count: int) -> None:
        self._writing = None

    def _failed(self, failure: Failure) -> None:
        self._writing = None
        self._written = None  # the next turn tries again
        if failure.check(OSError):
            log.error("writing {path} failed: {error}", path=self.store.path, error=failure.value)
        else:
            log.failure("writing {path} failed", failure, path=self.store.path)


class ClientDirectoryService(Service):
    """Starts the client directory empty and leaves it empty: no lock outlives the daemon."""

    def __init__(self, directory: ClientDirectory) -> None:
        self.directory = directory

    def startService(self) -> None:
        super().startService()
        self.directory.start()

    def stopService(self) -> None:
        super().stopService()
        self.directory.clear()
