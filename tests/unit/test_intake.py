"""The hub listens with a backlog that holds a storm's connections (hub_config/intake.py)."""

from __future__ import annotations

import asyncio
import subprocess

import pytest
from tornado.httpserver import HTTPServer
from tornado.tcpserver import TCPServer
from tornado.web import Application

from hub_config.intake import raise_listen_backlog


def backlog_of(port: int) -> int:
    """The backlog of the socket listening on ``port``: ``ss -ltn``'s Send-Q column for it."""
    out = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True, check=True).stdout
    return int(out.split()[2])


def listening_backlog(**listen: int) -> int:
    async def main() -> int:
        server = HTTPServer(Application())
        server.listen(0, "127.0.0.1", **listen)
        try:
            port = next(iter(server._sockets.values())).getsockname()[1]
            return backlog_of(port)
        finally:
            server.stop()

    return asyncio.run(main())


@pytest.fixture
def restore_listen(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(HTTPServer, "listen", TCPServer.listen)  # tornado's own, whatever ran before


@pytest.mark.usefixtures("restore_listen")
def test_listen_without_a_backlog_gets_the_raised_one_and_an_explicit_one_wins() -> None:
    assert listening_backlog() == 128  # tornado's default, what JupyterHub gets by itself
    raise_listen_backlog(1500)
    assert listening_backlog() == 1500
    raise_listen_backlog(900)  # again: replaced, not wrapped twice
    assert listening_backlog() == 900
    assert listening_backlog(backlog=64) == 64
