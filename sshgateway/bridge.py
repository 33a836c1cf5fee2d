"""Session bridges: each channel a person opens on the gateway is mirrored by one channel to the
workspace's sshd, byte for byte, with flow control both ways.

- :class:`SessionBridge` (shell, exec, subsystem such as sftp; scp and rsync are exec): PTY with
  terminal type, size and modes, window changes, environment, signals, break, EOF, exit status
  or exit signal.
- :class:`ForwardBridge` (``direct-tcpip``, ``ssh -L``): a TCP stream to a port inside the workspace.

What the person sends before the workspace channel is open (while a stopped server starts) is
held: the first chunk in memory, the rest in the SSH window (reading is paused), so nothing is lost.
The gateway's own lines on the session's stderr (a server's start, a refusal) are said in the
person's language (:mod:`sshgateway.speech`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import asyncssh

from i18n import DEFAULT_LOCALE, _

from . import speech
from .audit import AuditLog, SessionRecord

log = logging.getLogger("sshgateway.bridge")

STDERR = asyncssh.EXTENDED_DATA_STDERR

# opens the workspace-side channel: (session factory, command, subsystem, pty, env, progress, record)
# -> (channel, session)
Opener = Callable[..., Awaitable[Any]]


class _Upstream(asyncssh.SSHClientSession[bytes]):
    """The workspace side of a SessionBridge: relays everything back to the person."""

    def __init__(self, bridge: SessionBridge):
        self.bridge = bridge
        self.chan: asyncssh.SSHClientChannel[bytes] | None = None
        self.exit_status: int | None = None
        self.exit_signal: tuple[str, bool, str, str] | None = None

    def connection_made(self, chan: Any) -> None:
        self.chan = chan

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        self.bridge.record.bytes_out += len(data)
        self.bridge.chan.write(data, datatype)

    def eof_received(self) -> bool:
        self.bridge.chan.write_eof()
        return True

    def exit_status_received(self, status: int) -> None:
        self.exit_status = status

    def exit_signal_received(self, signal: str, core_dumped: bool, msg: str, lang: str) -> None:
        self.exit_signal = (signal, core_dumped, msg, lang)

    def pause_writing(self) -> None:
        self.bridge.chan.pause_reading()

    def resume_writing(self) -> None:
        self.bridge.chan.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.bridge.upstream_closed(self, exc)


class SessionBridge(asyncssh.SSHServerSession[bytes]):
    """The person's side of a shell, exec or subsystem session; the gateway's own lines on it are
    said in ``locale``, the person's language."""

    def __init__(
        self, open_upstream: Opener, audit: AuditLog, record: SessionRecord, locale: str | None = DEFAULT_LOCALE
    ):
        self.open_upstream, self.audit, self.record = open_upstream, audit, record
        self.locale = locale
        self.chan: asyncssh.SSHServerChannel[bytes] = None  # type: ignore[assignment]
        self.upstream: _Upstream | None = None
        self.pty: tuple[str, tuple[int, int, int, int], dict[int, int]] | None = None
        self.command: str | None = None
        self.subsystem: str | None = None
        self.task: asyncio.Task[None] | None = None
        self.finished = False
        self.held: list[tuple[bytes, asyncssh.DataType]] = []
        self.held_eof = False

    def connection_made(self, chan: Any) -> None:
        self.chan = chan

    def pty_requested(self, term_type: str, term_size: tuple[int, int, int, int], term_modes: Any) -> bool:
        self.pty = (term_type, term_size, dict(term_modes))
        return True

    def shell_requested(self) -> bool:
        self.record.kind = "shell"
        return True

    def exec_requested(self, command: str) -> bool:
        self.record.kind, self.record.command, self.command = "exec", command, command
        return True

    def subsystem_requested(self, subsystem: str) -> bool:
        self.record.kind, self.record.command, self.subsystem = "subsystem", subsystem, subsystem
        return True

    def session_started(self) -> None:
        self.task = asyncio.ensure_future(self._start())

    def _say(self, line: object) -> None:
        """Write ``line`` (a :class:`i18n.Text`, or a line the hub wrote) on the person's stderr, in
        their language."""
        if self.finished:
            return
        end = "\r\n" if self.pty else "\n"
        said = speech.say(line, self.locale)
        self.chan.write((end.join(said.splitlines()) + end).encode(), STDERR)

    async def _start(self) -> None:
        try:
            chan, session = await self.open_upstream(
                lambda: _Upstream(self),
                command=self.command,
                subsystem=self.subsystem,
                pty=self.pty,
                env=dict(self.chan.get_environment()),
                progress=self._say,
                record=self.record,
            )
        except Refusal as e:
            self.record.error = e.message
            if self.finished:
                return
            self._say(e.message)
            self.chan.exit(1)
            return
        except Exception as e:
            log.exception("cannot open %s for %s", self.record.kind, self.record.user)
            self.record.error = f"{type(e).__name__}: {e}"
            if self.finished:
                return
            self._say(
                _(
                    "The gateway could not reach the workspace: {error}. Try again; if it persists, tell the admins.",
                    error=str(e),
                )
            )
            self.chan.exit(1)
            return
        self.upstream = session
        if self.finished:  # the person left while the workspace was starting
            chan.close()
            return
        for data, datatype in self.held:
            chan.write(data, datatype)
        if self.held_eof:
            chan.write_eof()
        self.held = []
        self.chan.resume_reading()

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        self.record.bytes_in += len(data)
        if self.upstream is not None and self.upstream.chan is not None:
            self.upstream.chan.write(data, datatype)
        else:
            self.held.append((data, datatype))
            self.chan.pause_reading()

    def eof_received(self) -> bool:
        if self.upstream is not None and self.upstream.chan is not None:
            self.upstream.chan.write_eof()
        else:
            self.held_eof = True
        return True

    def terminal_size_changed(self, width: int, height: int, pixwidth: int, pixheight: int) -> None:
        if self.pty:
            self.pty = (self.pty[0], (width, height, pixwidth, pixheight), self.pty[2])
        if self.upstream is not None and self.upstream.chan is not None:
            self.upstream.chan.change_terminal_size(width, height, pixwidth, pixheight)

    def signal_received(self, signal: str) -> None:
        if self.upstream is not None and self.upstream.chan is not None:
            self.upstream.chan.send_signal(signal)

    def break_received(self, msec: int) -> bool:
        if self.upstream is not None and self.upstream.chan is not None:
            self.upstream.chan.send_break(msec)
            return True
        return False

    def pause_writing(self) -> None:
        if self.upstream is not None and self.upstream.chan is not None:
            self.upstream.chan.pause_reading()

    def resume_writing(self) -> None:
        if self.upstream is not None and self.upstream.chan is not None:
            self.upstream.chan.resume_reading()

    def upstream_closed(self, upstream: _Upstream, exc: Exception | None) -> None:
        if upstream.exit_signal is not None:
            signal, core, msg, lang = upstream.exit_signal
            self.record.error = f"killed by signal {signal}"  # i18n: the audit record, for the operator
            self.chan.exit_with_signal(signal, core, msg, lang)
        elif upstream.exit_status is not None:
            self.record.exit_status = upstream.exit_status
            self.chan.exit(upstream.exit_status)
        else:
            if exc is not None:
                self.record.error = f"workspace connection lost: {exc}"  # i18n: the audit record, for the operator
            self.chan.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.finished = True
        if self.upstream is not None and self.upstream.chan is not None:
            self.upstream.chan.close()
        if self.record.exit_status is None and self.upstream is not None:
            self.record.exit_status = self.upstream.exit_status
        self.audit.write(self.record)


class Refusal(Exception):
    """The session cannot go on; ``message`` tells the person why and what to do (a
    :class:`i18n.Text`, or the hub's own message)."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class _UpstreamTCP(asyncssh.SSHTCPSession[bytes]):
    def __init__(self, bridge: ForwardBridge):
        self.bridge = bridge
        self.chan: asyncssh.SSHTCPChannel[bytes] | None = None

    def connection_made(self, chan: Any) -> None:
        self.chan = chan
        chan.pause_reading()  # until the person's channel is open

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        self.bridge.record.bytes_out += len(data)
        assert self.bridge.chan is not None
        self.bridge.chan.write(data)

    def eof_received(self) -> bool:
        assert self.bridge.chan is not None
        self.bridge.chan.write_eof()
        return True

    def pause_writing(self) -> None:
        assert self.bridge.chan is not None
        self.bridge.chan.pause_reading()

    def resume_writing(self) -> None:
        assert self.bridge.chan is not None
        self.bridge.chan.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.bridge.chan is not None:
            self.bridge.chan.close()


class ForwardBridge(asyncssh.SSHTCPSession[bytes]):
    """The person's side of ``ssh -L``: created once the workspace side is open."""

    def __init__(self, audit: AuditLog, record: SessionRecord):
        self.audit, self.record = audit, record
        self.upstream = _UpstreamTCP(self)
        self.chan: asyncssh.SSHTCPChannel[bytes] | None = None

    def connection_made(self, chan: Any) -> None:
        self.chan = chan

    def session_started(self) -> None:
        if self.upstream.chan is not None:
            self.upstream.chan.resume_reading()

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        self.record.bytes_in += len(data)
        if self.upstream.chan is not None:
            self.upstream.chan.write(data)

    def eof_received(self) -> bool:
        if self.upstream.chan is not None:
            self.upstream.chan.write_eof()
        return True

    def pause_writing(self) -> None:
        if self.upstream.chan is not None:
            self.upstream.chan.pause_reading()

    def resume_writing(self) -> None:
        if self.upstream.chan is not None:
            self.upstream.chan.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.upstream.chan is not None:
            self.upstream.chan.close()
        self.audit.write(self.record)
