"""Wiring: ``makeService`` turns options into the running daemon.

Read top to bottom to follow a packet: the kernel queue (``QueueReader``) decodes it and asks the
``Engine`` for a verdict; the engine asks its detectors, consults the block and lock tables and
acts through the spoofer and the event log. Timers send probes and expire locks, age learned
blocks, and flush the store file. Services start in the order they are added (privileged
start first, for all of them, then start) and stop in reverse: the store is loaded and the raw
sockets opened before the queue is bound, and the queue is released first.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from functools import partial

from twisted.application import strports
from twisted.application.internet import TimerService
from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.interfaces import IReactorThreads, IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure

from .control import ControlFactory, read_queue_stats
from .detectors.dns import DnsDetector
from .detectors.fasttrack import FastTrackDetector
from .engine import Engine
from .events import EventLog
from .interfaces import IPacketSource, ISpoofer
from .localaddrs import read_local_addresses
from .names import BannedNames
from .networks import GreenNetworks
from .nfqueue import KernelQueue, QueueReader
from .options import Options
from .packet import Verdict
from .spoof import RawSpoofer
from .store import ClientDirectory, StoreFile
from .tables import BlockTable, LockTable

log = Logger()

# Seconds between re-reads of the gateway's own addresses (a DHCP lease may change them).
LOCAL_ADDRESSES_INTERVAL = 60.0


class DaemonService(MultiService):
    """The whole daemon; ``engine`` is kept for the control port's and the tests' sake."""

    def __init__(self, engine: Engine) -> None:
        super().__init__()
        self.engine = engine


def makeService(
    options: Options,
    reactor: IReactorTime | None = None,
    packet_source: Callable[[], IPacketSource] | None = None,
    spoofer: ISpoofer | None = None,
) -> DaemonService:
    """Build the daemon; tests pass a fake reactor, packet source and spoofer."""
    if reactor is None:
        from twisted.internet import reactor  # type: ignore[no-redef]

    events = EventLog(
        syslog=options["syslog-classes"],
        stderr=options["stderr-classes"],
        debug=options["debug-classes"],
    )
    probe_source = options["probe-source"]
    spoofer = spoofer or RawSpoofer(probe_source.packed if probe_source else None)
    # Wired even without -D, so ban-dns-name works: p2pwall-rules queues DNS answers anyway.
    banned = BannedNames(f"{options['store-file']}.names" if options["store-file"] else None)
    banned.load()
    dns = DnsDetector(options["dns-patterns"], banned)
    engine = Engine(
        clock=reactor,
        blocks=BlockTable(options["max-peers"]),
        clients=LockTable(options["time-lock"], options["max-clients"]),
        green=GreenNetworks(options["green"]),
        detectors=[FastTrackDetector(), dns],
        spoofer=spoofer,
        events=events,
        no_udp_block=options["no-udp-block"],
        accept_all=options["accept-all"],
        max_spoofs=options["max-spoofs"],
    )

    top = DaemonService(engine)
    SpooferService(spoofer).setServiceParent(top)
    if options["store-file"]:
        StoreService(
            StoreFile(options["store-file"], options["store-max-age"]),
            engine,
            options["store-interval"],
            reactor,
        ).setServiceParent(top)
    timer(LOCAL_ADDRESSES_INTERVAL, partial(refresh_local, engine), reactor).setServiceParent(top)
    max_age = options["store-max-age"]
    prune = partial(prune_blocks, engine, max_age)
    timer(prune_interval(max_age), prune, reactor).setServiceParent(top)
    if options["client-dir"]:
        directory = ClientDirectory(options["client-dir"])
        engine.observers.append(directory)
        ClientDirectoryService(directory).setServiceParent(top)

    timer(tick_interval(options["time-lock"]), engine.tick, reactor).setServiceParent(top)

    reload = None
    if options["dns-patterns"]:
        reload = partial(dns.reload, engine)
        PatternsService(reload, reactor).setServiceParent(top)

    if options["control"]:
        control = ControlFactory(
            engine,
            names=dns.banned,
            reload=reload,
            queue_stats=lambda: read_queue_stats(options["queue"]),
            dump_dir=options["dump-dir"],
            # reading is assigned below; the reader exists once the queue is bound.
            reader_stats=lambda: reading.reader.stats() if reading.reader else None,
            run=thread_runner(reactor),
        )
        strports.service(options["control"], control, reactor=reactor).setServiceParent(top)

    queue_num = options["queue"]
    open_queue = packet_source or partial(
        KernelQueue,
        queue_num,
        max_len=options["max-queue-len"],
        sock_len=options["buffer"],
        fail_open=options["fail-open"],
    )
    reading = QueueService(
        lambda: QueueReader(
            open_queue(),
            engine.verdict,
            reactor,
            failure_verdict=Verdict[options["failure-verdict"].upper()],
            want_mac=events.wants_mac,
            name=f"NFQUEUE {queue_num}",
        ),
        queue_num,
    )
    reading.setServiceParent(top)
    return top


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


def refresh_local(engine: Engine) -> None:
    """Tell the engine the gateway's own addresses (never learned as peers)."""
    engine.local = read_local_addresses()


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
    """How often locks and probes are checked: a tenth of the lock, between 50 ms and 1 s."""
    return min(1.0, max(0.05, time_lock / 10)) if time_lock else 1.0


class SpooferService(Service):
    """Opens the raw sockets while privileged, closes them at the end."""

    def __init__(self, spoofer: ISpoofer) -> None:
        self.spoofer = spoofer

    def privilegedStartService(self) -> None:
        try:
            self.spoofer.open()
        except OSError as error:
            raise SystemExit(f"p2pwall: cannot open raw sockets to spoof: {error}") from None
        super().privilegedStartService()

    def stopService(self) -> None:
        super().stopService()
        self.spoofer.close()


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
            raise SystemExit(
                f"p2pwall: cannot bind NFQUEUE {self._queue_num}: {error}. It needs root "
                "(CAP_NET_ADMIN), the nfnetlink_queue module, and no other program on that queue."
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
        blocks = self.engine.blocks
        loaded = self.store.load(blocks, self.engine.clock.seconds())
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


class PatternsService(Service):
    """Loads the DNS patterns at start (after the store, so .wsx IPs are blocked fresh) and
    again on SIGHUP, as daemons do; the signal handler only hands the work to the reactor."""

    def __init__(self, reload: Callable[[], object], reactor: IReactorThreads) -> None:
        self._reload = reload
        self._reactor = reactor
        self._previous: Callable | int | None = None

    def startService(self) -> None:
        super().startService()
        self._reload()
        previous = signal.signal(signal.SIGHUP, self._hangup)
        self._previous = signal.SIG_DFL if previous is None else previous

    def stopService(self) -> None:
        super().stopService()
        if self._previous is not None:
            signal.signal(signal.SIGHUP, self._previous)
            self._previous = None

    def _hangup(self, signum: int, frame: object) -> None:
        self._reactor.callFromThread(self._reload)
