from twisted.application.service import ServiceMaker

p2pwall = ServiceMaker(
    "p2pwall",
    "p2pwall.service",
    "Block P2P clients (FastTrack, WinMX, OpenNAP) on NFQUEUE",
    "p2pwall",
)
