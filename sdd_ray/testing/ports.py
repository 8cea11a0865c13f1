"""A loopback port for a server under test, held from the moment it is chosen until the server is gone.

Probing a free port and releasing it leaves a window in which another process can take it. Ray Serve's
proxy binds with SO_REUSEPORT (its default on Linux), so a socket bound the same way, and not listening,
holds the port for the test or benchmark while the proxy binds it too and takes every connection.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def reserved_port(host: str = "127.0.0.1") -> Iterator[int]:
    """A port on `host` bound here for the whole block (never released to others) that Serve's proxy can bind too."""
    with socket.socket() as held:
        held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        held.bind((host, 0))
        yield held.getsockname()[1]
