"""Keeping CAP_NET_ADMIN and CAP_NET_RAW across ``twistd --uid/--gid``.

The kernel checks CAP_NET_ADMIN on every message to ``nfnetlink_queue``, verdicts included, not
only when the queue is bound: a daemon that gave up root after binding would refuse every
packet (EPERM) and blackhole the green hosts. So before twistd switches the user, the
capabilities are kept (``PR_SET_KEEPCAPS``), and after it, the two the daemon needs are made
effective again and every other one is dropped (``capset``), through ``ctypes``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

PR_SET_KEEPCAPS = 8
CAP_NET_ADMIN = 12
CAP_NET_RAW = 13
NEEDED = 1 << CAP_NET_ADMIN | 1 << CAP_NET_RAW
_VERSION_3 = 0x20080522  # _LINUX_CAPABILITY_VERSION_3: two 32-bit words per set


class _Header(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _Data(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def _check(result: int) -> None:
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def keep_across_setuid() -> None:
    """Keep the permitted capabilities when the user changes (cleared again by execve)."""
    _check(_libc.prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0))


def effective() -> int:
    """This process's effective capabilities (the low 32 bits, where the needed ones are)."""
    header = _Header(_VERSION_3, 0)
    data = (_Data * 2)()
    _check(_libc.capget(ctypes.byref(header), data))
    return data[0].effective


def restore_needed() -> None:
    """Make CAP_NET_ADMIN and CAP_NET_RAW effective and permitted, and nothing else: after a
    switch to another user, they are permitted only if ``keep_across_setuid`` came first."""
    header = _Header(_VERSION_3, 0)
    data = (_Data * 2)()
    data[0].effective = data[0].permitted = NEEDED
    _check(_libc.capset(ctypes.byref(header), data))
