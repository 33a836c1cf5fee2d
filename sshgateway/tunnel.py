"""A byte stream over a websocket, shaped as an asyncssh tunnel.

The workspace's sshd is reachable only as a websocket through the hub's proxy
(``/user/<name>/<server>/sshd/``, jupyter-server-proxy's raw socket proxying). asyncssh accepts
as ``tunnel`` any object with ``create_connection(protocol_factory, host, port)``: this one opens
the websocket and feeds binary messages to the SSH protocol, and its writes to the websocket.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.websocket import WebSocketClientConnection, WebSocketClosedError, WebSocketError, websocket_connect

log = logging.getLogger("sshgateway.tunnel")


class TunnelError(Exception):
    """The websocket to the workspace could not be opened; the message is for people. ``retry``:
    worth trying again in a moment (the proxy has no route yet, a gateway error, no connection)."""

    def __init__(self, message: str, retry: bool):
        super().__init__(message)
        self.retry = retry


class WebSocketTransport(asyncio.Transport):
    """Writes go out as binary websocket messages; received messages go to the protocol."""

    def __init__(self, ws: WebSocketClientConnection, url: str):
        super().__init__()
        self.ws, self.url = ws, url
        self._protocol: asyncio.Protocol | None = None
        self._closing = False
        self._reader: asyncio.Task[None] | None = None
        self._pending: list[bytes] = []

    def start(self, protocol: asyncio.Protocol) -> None:
        self._protocol = protocol
        self._reader = asyncio.ensure_future(self._read_loop())

    async def _read_loop(self) -> None:
        assert self._protocol is not None
        error: Exception | None = None
        try:
            while True:
                message = await self.ws.read_message()
                if message is None:
                    break
                self._protocol.data_received(message if isinstance(message, bytes) else message.encode())
        except Exception as e:  # the protocol must hear about any end of the stream
            error = e
        self._closing = True
        self._protocol.connection_lost(error)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        # SSH writes packet by packet; one websocket message per event-loop turn instead of per
        # packet saves framing, proxy and syscall work for bulk transfers (scp, rsync)
        if self._closing:
            return
        self._pending.append(bytes(data))
        if len(self._pending) == 1:
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        data, self._pending = b"".join(self._pending), []
        if self._closing or not data:
            return
        try:
            self.ws.write_message(data, binary=True)
        except WebSocketClosedError:
            self.close()

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if not self._closing:
            self._flush()
            self._closing = True
            self.ws.close()

    def abort(self) -> None:
        self.close()

    def can_write_eof(self) -> bool:
        return False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            return (self.url, 0)
        return default


class WebSocketTunnel:
    """``tunnel=`` for :func:`asyncssh.connect`: the host and port it is given are ignored."""

    def __init__(self, url: str, headers: dict[str, str], timeout: float = 60.0):
        self.url, self.headers, self.timeout = url, headers, timeout

    async def create_connection(
        self, protocol_factory: Callable[[], asyncio.Protocol], host: str, port: int
    ) -> tuple[WebSocketTransport, asyncio.Protocol]:
        request = HTTPRequest(
            self.url, headers=self.headers, connect_timeout=self.timeout, request_timeout=self.timeout
        )
        try:
            ws = await websocket_connect(request, max_message_size=64 * 1024 * 1024)
        except HTTPClientError as e:
            raise TunnelError(
                f"The workspace's SSH endpoint {self.url} answered {e.code} {e.message}"
                " (is the workspace image missing sshd or jupyter-server-proxy?)",
                retry=e.code in (502, 503, 504, 599),
            ) from None
        except (OSError, WebSocketError) as e:
            raise TunnelError(f"Cannot reach the hub's proxy at {self.url}: {e}", retry=True) from None
        # SSH sends many small packets (keystrokes, window adjusts): without this, Nagle's algorithm
        # and the peer's delayed ACKs add ~40 ms to every keystroke
        if ws.protocol is not None:
            ws.protocol.set_nodelay(True)
        transport = WebSocketTransport(ws, self.url)
        protocol = protocol_factory()
        protocol.connection_made(transport)
        transport.start(protocol)
        return transport, protocol
