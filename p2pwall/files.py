"""Opening the admin's files safely: a FIFO or device named by mistake must not hang the daemon.

``open()`` on a FIFO blocks until a writer comes, which would freeze the start (or a reload, on
the reactor thread). These helpers open without blocking and refuse anything but a regular file.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO


def open_regular(path: str | os.PathLike[str]) -> BinaryIO:
    """``path`` opened for binary reading; ``OSError`` ("not a regular file") for a FIFO, a
    device, a socket or a directory, found without blocking."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular(path: str | os.PathLike[str]) -> bytes:
    """The whole of a regular file (see ``open_regular``)."""
    with open_regular(path) as handle:
        return handle.read()


def is_special(path: Path) -> bool:
    """True when ``path`` exists as neither a regular file nor a directory (a FIFO, a device,
    a socket): reading it could block for ever or never end."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))
