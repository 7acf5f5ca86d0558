"""p2pwall: a Twisted daemon that keeps P2P clients on the green network from reaching peers."""

import re
from pathlib import Path

from setuptools import setup

setup(
    name="p2pwall",
    # One version, the package's own (p2pwall.__version__), which --version and stats print.
    version=re.search(r'__version__ = "([^"]+)"', Path("p2pwall/__init__.py").read_text())[1],
    description="ftwall re-created: block FastTrack, WinMX and OpenNAP clients via NFQUEUE",
    long_description=Path("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="GPL-2.0-or-later",
    python_requires=">=3.11",
    packages=[
        "p2pwall",
        "p2pwall.detectors",
        "p2pwall.fragments",
        "p2pwall.kernel",
        "p2pwall.tools",
        "twisted.plugins",
    ],
    package_data={"twisted": ["plugins/p2pwall_plugin.py"]},
    install_requires=[
        "twisted>=24.3,<27",
        "zope.interface>=6,<9",
        "scapy>=2.5,<2.9",
        # -D patterns: RE2 matches in linear time, so no pattern can stall the daemon.
        "google-re2>=1.1,<2",
        # --reader netfilterqueue; built against libnetfilter-queue-dev (install-deps.sh).
        "NetfilterQueue>=1.1,<2",
        # --metrics: the Prometheus text format and its Twisted resource.
        "prometheus_client>=0.20,<1",
        # --enforce kernel --sets ipset: the daemon writes ipset sets over netlink (pure Python).
        "pyroute2>=0.9,<0.10",
    ],
    extras_require={"dev": ["ruff>=0.6"]},
    entry_points={
        "console_scripts": [
            "p2pwall-rules = p2pwall.tools.rules:main",
            "p2pwall-ctl = p2pwall.tools.ctl:main",
            "p2pwall-napigator = p2pwall.tools.napigator:main",
        ],
    },
)
