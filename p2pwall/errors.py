"""Errors the admin must fix before the daemon can run."""

from __future__ import annotations


class StartError(Exception):
    """A problem found while starting (a bad file, a missing directory, a busy port...).

    Its message is the one line the admin sees; the daemon exits non-zero with it, never with a
    traceback."""


class KernelSetsError(Exception):
    """The kernel refused a batch of set changes, or p2pwall's sets are not there
    (``--enforce kernel``); the message is one line."""
