"""Every interface provider in ``p2pwall`` and every public fake in ``p2pwall.testing`` checked
with ``zope.interface.verify``: an instance with ``verifyObject`` (the attributes and method
signatures an interface names, on the object callers get), and every class that implements an
interface, found by walking the package, with ``verifyClass``. The NetfilterQueue package's
fakes, which no zope interface describes, are held to the package's own classes."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import struct
from collections.abc import Callable, Iterable, Iterator
from unittest import SkipTest

from twisted.application.service import IService
from twisted.internet.interfaces import (
    IHalfCloseableProtocol,
    IProtocol,
    IReactorCore,
    IReactorFDSet,
    IReactorFromThreads,
    IReactorTime,
    IReadDescriptor,
)
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementedBy, providedBy
from zope.interface.exceptions import BrokenMethodImplementation
from zope.interface.interface import InterfaceClass
from zope.interface.verify import verifyClass, verifyObject

import p2pwall
from p2pwall import interfaces, netlink, nfqueue, testing
from p2pwall.control import ControlProtocol
from p2pwall.detectors.bittorrent import BitTorrentDetector, PingProbe
from p2pwall.detectors.dns import DnsDetector
from p2pwall.detectors.fasttrack import FastTrackDetector, HelloProbe
from p2pwall.events import EventLog
from p2pwall.fragments import IRuleFragment
from p2pwall.fragments.bittorrent import BitTorrentRules
from p2pwall.fragments.dns import DnsRules
from p2pwall.fragments.fasttrack import FastTrackRules
from p2pwall.handler import PacketHandler
from p2pwall.hooks import CommandHooks
from p2pwall.kernel.ipset import IpsetSets
from p2pwall.kernel.nftsets import NftSets
from p2pwall.kernel.sync import FlushingSpoofer, KernelSync
from p2pwall.neighbours import KernelNeighbours
from p2pwall.nfq_package import NetfilterQueueReader, NfqPacket
from p2pwall.nfqueue import NativeReader
from p2pwall.packet import ACCEPT
from p2pwall.registry import REGISTRY
from p2pwall.spoof import RawSpoofer
from p2pwall.store import ClientDirectory

from .kernel.support import RecordingNft
from .kernel.test_ipsetsets import FakeIpset


class AckingNetlinkSocket:
    """Just enough of a netlink socket for ``KernelQueue``'s bind handshake, without the
    kernel: every message sent is acked, nothing else ever arrives."""

    def __init__(self, *args: object) -> None:
        self._answers: list[bytes] = []

    def bind(self, address: object) -> None:
        pass

    def setsockopt(self, *args: object) -> None:
        pass

    def settimeout(self, timeout: float) -> None:
        pass

    def setblocking(self, flag: bool) -> None:
        pass

    def send(self, data: bytes) -> int:
        header = struct.pack("=IHHII", 36, netlink.NLMSG_ERROR, 0, netlink.message_seq(data, 0), 0)
        self._answers.append(header + struct.pack("=i", 0) + data[:16])
        return len(data)

    def recv(self, size: int) -> bytes:
        return self._answers.pop(0)

    def recv_into(self, buffer: bytearray) -> int:
        raise BlockingIOError

    def fileno(self) -> int:
        return 99

    def close(self) -> None:
        pass


def kernel_queue(test: SynchronousTestCase) -> nfqueue.KernelQueue:
    patched = test.patch(nfqueue.socket, "socket", AckingNetlinkSocket)
    try:
        return nfqueue.KernelQueue(3)
    finally:
        patched.restore()  # the socket module is everyone's


def fake_kernel_queue(test: SynchronousTestCase) -> testing.FakeKernelQueue:
    queue = testing.FakeKernelQueue()
    test.addCleanup(queue.close)
    return queue


def handler() -> PacketHandler:
    return PacketHandler(lambda packet, hook: ACCEPT)


def native_reader(test: SynchronousTestCase) -> NativeReader:
    reader = NativeReader(fake_kernel_queue(test), handler(), MemoryReactorClock())
    test.addCleanup(reader.close)
    return reader


def netfilterqueue_reader(test: SynchronousTestCase) -> NetfilterQueueReader:
    reader = NetfilterQueueReader(testing.FakeNetfilterQueue(), 0, handler(), MemoryReactorClock())
    test.addCleanup(reader.close)
    return reader


# Each provider: how to build one, and the interfaces it must provide (at least).
Build = Callable[[SynchronousTestCase], object]
PROVIDERS: dict[str, tuple[Build, tuple[InterfaceClass, ...]]] = {
    "p2pwall.nfqueue.KernelQueue": (
        kernel_queue,
        (interfaces.IPacketSource, interfaces.IVerdictTarget),
    ),
    "p2pwall.spoof.RawSpoofer": (lambda test: RawSpoofer(), (interfaces.ISpoofer,)),
    "p2pwall.neighbours.KernelNeighbours": (
        lambda test: KernelNeighbours(Clock(), read=dict),
        (interfaces.INeighbours,),
    ),
    "p2pwall.detectors.fasttrack.FastTrackDetector": (
        lambda test: FastTrackDetector(),
        (interfaces.IDetector,),
    ),
    "p2pwall.detectors.dns.DnsDetector": (lambda test: DnsDetector(), (interfaces.IDetector,)),
    "p2pwall.detectors.fasttrack.HelloProbe": (
        lambda test: HelloProbe(b"hello", 1214, 2000),
        (interfaces.IProbe,),
    ),
    "p2pwall.detectors.bittorrent.BitTorrentDetector": (
        lambda test: BitTorrentDetector(),
        (interfaces.IDetector,),
    ),
    "p2pwall.detectors.bittorrent.PingProbe": (lambda test: PingProbe(6881), (interfaces.IProbe,)),
    "p2pwall.fragments.bittorrent.BitTorrentRules": (
        lambda test: BitTorrentRules(),
        (IRuleFragment,),
    ),
    "p2pwall.engine.Engine": (lambda test: testing.make_engine(), (interfaces.IEngine,)),
    "p2pwall.fragments.fasttrack.FastTrackRules": (lambda test: FastTrackRules(), (IRuleFragment,)),
    "p2pwall.fragments.dns.DnsRules": (lambda test: DnsRules(), (IRuleFragment,)),
    "p2pwall.events.EventLog": (lambda test: EventLog(), (interfaces.IEventSink,)),
    "p2pwall.store.ClientDirectory": (
        lambda test: ClientDirectory(test.mktemp()),
        (interfaces.IClientObserver,),
    ),
    "p2pwall.handler.PacketHandler": (lambda test: handler(), (interfaces.IPacketHandler,)),
    "p2pwall.hooks.CommandHooks": (
        lambda test: CommandHooks(MemoryReactorClock(), testing.make_engine()),
        (interfaces.IClientObserver, IService),
    ),
    "p2pwall.nfqueue.NativeReader": (native_reader, (IReadDescriptor,)),
    "p2pwall.nfq_package.NetfilterQueueReader": (netfilterqueue_reader, (IReadDescriptor,)),
    "p2pwall.control.ControlProtocol": (
        lambda test: ControlProtocol(),
        (IHalfCloseableProtocol, IProtocol),
    ),
    "p2pwall.kernel.nftsets.NftSets": (
        lambda test: NftSets(RecordingNft()),
        (interfaces.IKernelSets,),
    ),
    "p2pwall.kernel.ipset.IpsetSets": (
        lambda test: IpsetSets(FakeIpset()),
        (interfaces.IKernelSets,),
    ),
    "p2pwall.kernel.sync.FlushingSpoofer": (
        lambda test: FlushingSpoofer(
            testing.RecordingSpoofer(),
            KernelSync(testing.make_engine(), testing.FakeKernelSets(), Clock()),
        ),
        (interfaces.ISpoofer,),
    ),
    # The public fakes.
    "p2pwall.testing.FakeKernelSets": (
        lambda test: testing.FakeKernelSets(),
        (interfaces.IKernelSets,),
    ),
    "p2pwall.testing.FakeKernelQueue": (
        fake_kernel_queue,
        (interfaces.IPacketSource, interfaces.IVerdictTarget),
    ),
    "p2pwall.testing.RecordingSpoofer": (
        lambda test: testing.RecordingSpoofer(),
        (interfaces.ISpoofer,),
    ),
    "p2pwall.testing.MemoryEvents": (lambda test: testing.MemoryEvents(), (interfaces.IEventSink,)),
    "p2pwall.testing.FakeProbe": (lambda test: testing.FakeProbe(), (interfaces.IProbe,)),
    "p2pwall.testing.ThreadsReactor": (
        lambda test: testing.ThreadsReactor(),
        (IReactorTime, IReactorFDSet, IReactorCore),
    ),
}

# ``verifyClass`` sees only what a class defines; these attributes are set on each instance
# (``verifyObject`` above checks them there).
PER_INSTANCE = {
    # The socket's own bound method, one attribute lookup less per packet.
    ("p2pwall.nfqueue.KernelQueue", "IPacketSource"): "recv_into",
}


def qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def package_classes() -> Iterator[type]:
    """Every class defined in a ``p2pwall`` module that implements an interface."""
    for info in pkgutil.walk_packages(p2pwall.__path__, "p2pwall."):
        module = importlib.import_module(info.name)
        for value in vars(module).values():
            if (
                inspect.isclass(value)
                and value.__module__ == module.__name__
                and list(implementedBy(value))
            ):
                yield value


class VerifyObjectTests(SynchronousTestCase):
    def test_every_provider_verifies_every_interface_it_provides(self) -> None:
        for name, (build, required) in PROVIDERS.items():
            provider = build(self)
            self.assertEqual(qualified(type(provider)), name)
            provided = list(providedBy(provider))
            for iface in required:
                self.assertTrue(iface.providedBy(provider), f"{name} lacks {iface.__name__}")
            self.assertTrue(provided, f"{name} provides no interface")
            for iface in provided:
                with self.subTest(provider=name, interface=iface.__name__):
                    verifyObject(iface, provider)

    def test_every_registered_detector_class_is_a_detector_factory(self) -> None:
        for entry in REGISTRY:
            with self.subTest(detector=entry.name):
                verifyObject(interfaces.IDetectorFactory, entry.detector)
                self.assertEqual(entry.detector.name, entry.name)

    def test_threads_reactor_runs_call_from_thread_with_the_interface_signature(self) -> None:
        """It declares ``IReactorFromThreads``: its one addition fits the interface."""
        reactor = testing.ThreadsReactor()
        verifyObject(IReactorFromThreads, reactor)
        called = []
        reactor.callFromThread(called.append, 1)
        self.assertEqual(called, [1])

    def test_every_class_with_its_own_implementer_has_an_instance_verified(self) -> None:
        declared = {
            qualified(cls) for cls in package_classes() if list(implementedBy(cls).declared)
        }
        self.assertEqual(declared - set(PROVIDERS), set())


class VerifyClassTests(SynchronousTestCase):
    def test_every_implementing_class_in_the_package(self) -> None:
        classes = list(package_classes())
        self.assertGreaterEqual(len(classes), len(PROVIDERS))
        for cls in classes:
            for iface in implementedBy(cls):
                exempt = PER_INSTANCE.get((qualified(cls), iface.__name__))
                with self.subTest(cls=qualified(cls), interface=iface.__name__):
                    if exempt is None:
                        verifyClass(iface, cls)
                    else:
                        # Still set per instance: once the class defines it, drop the entry.
                        self.assertNotIn(exempt, dir(cls))
                        self.assertIn(exempt, iface.names())

    def test_a_broken_provider_is_caught(self) -> None:
        """The check itself: a method with the wrong signature fails."""

        class Broken(testing.RecordingSpoofer):
            def send_udp(self, src, sport) -> None:  # type: ignore[override]
                pass

        self.assertRaises(BrokenMethodImplementation, verifyObject, interfaces.ISpoofer, Broken())


class PackageFakeTests(SynchronousTestCase):
    """The NetfilterQueue package has no zope interface: its fakes are held to the package's
    own classes, member by member, on what ``NetfilterQueueReader`` uses."""

    def package(self):
        try:
            import netfilterqueue
        except ImportError:
            raise SkipTest("the NetfilterQueue package is not installed (pip install .)") from None
        return netfilterqueue

    def assertSameSignatures(self, fake: type, real: type, names: Iterable[str]) -> None:
        for name in names:
            with self.subTest(member=name):
                self.assertEqual(
                    list(inspect.signature(getattr(fake, name)).parameters),
                    list(inspect.signature(getattr(real, name)).parameters),
                )

    def test_fake_queue_has_the_packages_methods(self) -> None:
        real = self.package().NetfilterQueue
        self.assertSameSignatures(
            testing.FakeNetfilterQueue, real, ("bind", "unbind", "get_fd", "run_socket")
        )

    def test_fake_packet_and_the_packages_have_what_the_reader_reads(self) -> None:
        methods = sorted(name for name in vars(NfqPacket) if not name.startswith("_"))
        attributes = sorted(NfqPacket.__annotations__)
        self.assertEqual(
            (methods, attributes), (["accept", "drop", "get_hw", "get_payload"], ["hook", "indev"])
        )
        real = self.package().Packet
        for name in attributes:
            self.assertTrue(hasattr(real, name), name)
        self.assertSameSignatures(testing.FakeNfqPacket, real, methods)
        queue = testing.FakeNetfilterQueue()
        self.addCleanup(queue.unbind)
        packet = testing.FakeNfqPacket(queue, 1, 2, b"data", None, 3)
        self.assertEqual((packet.hook, packet.indev), (2, 3))
