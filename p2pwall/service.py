"""Wiring: ``makeService`` turns options into the running daemon.

Read top to bottom to follow a packet: the kernel queue (``QueueReader``) decodes it and asks the
``Engine`` for a verdict; the engine asks its detectors, consults the block and lock tables and
acts through the spoofer and the event log. Timers send probes and expire locks, and flush the
store file. Services start in the order they are added and stop in reverse, so the queue is
bound last (after the store is loaded) and released first.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from functools import partial

from twisted.application import strports
from twisted.application.internet import TimerService
from twisted.application.service import MultiService, Service
from twisted.internet.interfaces import IReactorThreads, IReactorTime
from twisted.logger import Logger

from .control import ControlFactory, read_queue_stats
from .detectors.dns import DnsDetector
from .detectors.fasttrack import FastTrackDetector
from .engine import Engine
from .events import EventLog
from .interfaces import IPacketSource, ISpoofer
from .networks import GreenNetworks
from .nfqueue import QueueReader
from .options import Options
from .packet import Verdict
from .spoof import RawSpoofer
from .store import ClientDirectory, StoreFile
from .tables import BlockTable, LockTable

log = Logger()


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
    dns = DnsDetector(options["dns-patterns"])
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
        )
        strports.service(options["control"], control, reactor=reactor).setServiceParent(top)

    reading = QueueService(
        lambda: QueueReader(
            options["queue"],
            engine.verdict,
            reactor,
            source=packet_source() if packet_source else None,
            max_len=options["max-queue-len"],
            sock_len=options["buffer"],
            failure_verdict=Verdict[options["failure-verdict"].upper()],
            want_mac=events.wants_mac,
        ),
        options["queue"],
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


class StoreService(Service):
    """Loads learned peers at start, writes them on a timer and at shutdown."""

    def __init__(
        self, store: StoreFile, engine: Engine, interval: float, clock: IReactorTime
    ) -> None:
        self.store = store
        self.engine = engine
        self._timer = timer(interval, self.save, clock)

    def startService(self) -> None:
        super().startService()
        loaded = self.store.load(self.engine.blocks, self.engine.clock.seconds())
        log.info("loaded {count} blocks from {path}", count=loaded, path=self.store.path)
        self._timer.startService()

    def stopService(self) -> None:
        super().stopService()
        self._timer.stopService()
        self.save()

    def save(self) -> None:
        try:
            self.store.save(self.engine.blocks, self.engine.clock.seconds())
        except OSError as error:
            log.error("writing {path} failed: {error}", path=self.store.path, error=error)


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
