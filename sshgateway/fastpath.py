"""One change to asyncssh's send path, for the gateway's connections: no empty SSH_MSG_IGNORE
before every packet.

asyncssh (2.24) sends an empty ``SSH_MSG_IGNORE`` ahead of every packet once encryption is on
(``SSHConnection.send_packet``: "insert an ignore packet into the stream"), the countermeasure that
RFC 4251 (9.3.1) describes against chosen-plaintext attacks on CBC-mode ciphers. The gateway never
negotiates a CBC cipher (:data:`sshgateway.server.CIPHERS`: AES-GCM and AES-CTR, towards people and
towards workspaces), where it protects nothing, and OpenSSH does not send them either. On a bulk
copy it was a quarter of the gateway's CPU (py-spy, ``benchmarks/ssh.py``): every data packet became
two encryptions and two ``send()`` calls.

:func:`skip_ignore_padding` wraps ``SSHConnection.send_packet`` so that the MSG_IGNORE sent from
inside ``send_packet`` itself, while it sends another packet, is dropped; any other MSG_IGNORE goes
out as before. It applies only to the asyncssh it was written for (its ``send_packet`` holds that
insertion) and only when no CBC cipher is allowed; otherwise it changes nothing and says so.
"""

# i18n: operator: why the fast path is off goes to the gateway's log
from __future__ import annotations

import inspect
from collections.abc import Iterable
from typing import Any

from asyncssh.connection import SSHConnection
from asyncssh.constants import MSG_IGNORE, MSG_KEX_LAST

_INSERTION = "self.send_packet(MSG_IGNORE, String(b''))"


def skip_ignore_padding(ciphers: Iterable[str]) -> str | None:
    """Drop the per-packet MSG_IGNORE of asyncssh's connections in this process. Returns None when
    done (or done before), else why not (for the log)."""
    if any("cbc" in c for c in ciphers):
        return "a CBC cipher is allowed, which the padding packets protect"
    original = SSHConnection.send_packet
    if getattr(original, "aidc_fast_path", False):
        return None
    try:
        source = inspect.getsource(original)
    except (OSError, TypeError):
        return "the source of asyncssh's send_packet cannot be read"
    if _INSERTION not in source:
        return "this asyncssh's send_packet is not the one the change was written for"

    def send_packet(self: Any, pkttype: int, *args: bytes, handler: Any = None) -> None:
        depth = self.__dict__.get("_aidc_sending", 0)
        if pkttype == MSG_IGNORE and depth:
            return  # the padding packet ahead of the packet being sent
        if pkttype <= MSG_KEX_LAST:
            original(self, pkttype, *args, handler=handler)
            return
        self._aidc_sending = depth + 1
        try:
            original(self, pkttype, *args, handler=handler)
        finally:
            self._aidc_sending = depth

    send_packet.aidc_fast_path = True  # type: ignore[attr-defined]
    SSHConnection.send_packet = send_packet  # type: ignore[method-assign]
    return None
