"""Telling systemd how the daemon is doing (``sd_notify``), with ``socket`` alone.

Under ``Type=notify`` systemd counts the service as started only when it says ``READY=1`` on
the datagram socket named by ``$NOTIFY_SOCKET``: saying it once the queue is bound means
``systemctl start`` returns when packets are being read, and units ordered after p2pwall wait
for that. A name starting with ``@`` is in the abstract namespace. Without the variable (not
under systemd) every call does nothing. A failure to send is logged, never raised: the daemon
must not stop over its status message.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

from twisted.logger import Logger

log = Logger()

ENVIRONMENT = "NOTIFY_SOCKET"


def address(name: str) -> str | bytes:
    """The ``sendto`` address for ``$NOTIFY_SOCKET``: a path, or ``@name`` as an abstract one."""
    if name.startswith("@"):
        return b"\0" + name[1:].encode()
    return name


def message(fields: Mapping[str, str]) -> bytes:
    """``KEY=value`` lines; a newline in a value would start a new assignment, so it is a space."""
    lines = (f"{key}={' '.join(str(value).splitlines())}" for key, value in fields.items())
    return "\n".join(lines).encode()


def notify(environ: Mapping[str, str] | None = None, **fields: str) -> bool:
    """Send ``fields`` (``READY="1"``, ``STATUS=...``) to the service manager.

    True when sent; False without ``$NOTIFY_SOCKET`` or when sending failed (logged). The
    socket never blocks: a full receive queue is a logged failure, not a stalled reactor."""
    name = (os.environ if environ is None else environ).get(ENVIRONMENT, "")
    if not name:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)
            sock.sendto(message(fields), address(name))
    except OSError as error:
        log.error("cannot notify systemd at {name}: {error}", name=name, error=error)
        return False
    return True


def ready(status: str | None = None, environ: Mapping[str, str] | None = None) -> bool:
    """The daemon is serving: ``READY=1``, with a one-line ``STATUS`` for ``systemctl status``."""
    fields = {"READY": "1"}
    if status is not None:
        fields["STATUS"] = status
    return notify(environ, **fields)
