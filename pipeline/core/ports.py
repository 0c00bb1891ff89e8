"""Free TCP ports on the loopback interface, for the local servers the pipeline starts (cluster
tasks, Beam's local job service)."""

from __future__ import annotations

import socket

LOOPBACK = "127.0.0.1"


def free_loopback_port() -> int:
    """A TCP port free on the loopback interface now: bind port 0, read it, close.

    Another process could take it before the caller's server binds it; that server then fails
    to start, which its caller reports.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]
