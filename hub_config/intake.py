"""How the hub takes in a storm of requests (issue 15).

JupyterHub listens with tornado's default backlog of 128 connections. When a thousand people
press *Start* within a second, the proxy opens a connection to the hub for each; the hub takes
them in at the pace of its one event loop (tens of POSTs a second here), and the kernel keeps at
most ``backlog`` connections that the hub has not accepted yet. Those beyond are not refused
outright: the kernel drops their handshake's last step and retries it, and after its retries
(about 15 s) resets them, which the proxy turns into a "503 Service Unavailable" page for the
person. Measured here: 13 of 1,000 such resets in one storm of 1,000 (benchmarks/README.md).
A backlog of :data:`LISTEN_BACKLOG` keeps every such connection until the hub gets to it (the
kernel caps it at ``net.core.somaxconn``, 4096 on current kernels).
"""

from __future__ import annotations

import functools
from typing import Any

from tornado.httpserver import HTTPServer

LISTEN_BACKLOG = 2048


def raise_listen_backlog(backlog: int = LISTEN_BACKLOG) -> None:
    """Make ``HTTPServer.listen``, which JupyterHub calls without a backlog, listen with ``backlog``
    (an explicit ``backlog=`` still wins). Only the hub process's own HTTP servers are concerned.
    Calling it again replaces the value."""
    original = getattr(HTTPServer.listen, "__wrapped__", HTTPServer.listen)

    @functools.wraps(original)
    def listen(self: HTTPServer, port: int, address: str | None = None, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("backlog", backlog)
        original(self, port, address, *args, **kwargs)

    HTTPServer.listen = listen  # type: ignore[method-assign,assignment]
