"""Protocol detectors: one module per P2P protocol, each an ``IDetector``."""
