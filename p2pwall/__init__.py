"""p2pwall: keep peer-to-peer clients on the green network from reaching peers outside.

A modern re-creation of ftwall (the P2Pwall project) as a Twisted daemon fed by NFQUEUE.
"""

__version__ = "0.1.0"
