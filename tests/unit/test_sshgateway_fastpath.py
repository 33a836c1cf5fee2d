"""The gateway's one change to asyncssh's send path (sshgateway/fastpath.py): a data packet goes out
alone, not behind an empty SSH_MSG_IGNORE, and only where no CBC cipher is allowed."""

from __future__ import annotations

import asyncio

import asyncssh
from asyncssh.constants import MSG_IGNORE
from asyncssh.packet import String

from sshgateway.fastpath import skip_ignore_padding
from sshgateway.server import CIPHERS


class _Server(asyncssh.SSHServer):
    def begin_auth(self, username: str) -> bool:
        return False  # no authentication: this is about packets


async def _packets_for(payload: bytes) -> tuple[int, int, int]:
    """(bytes the server read, packets the client sent for them, packets for one explicit MSG_IGNORE)."""

    async def handle(process: asyncssh.SSHServerProcess[bytes]) -> None:
        n = 0
        while chunk := await process.stdin.read(1 << 16):
            n += len(chunk)
        process.stdout.write(str(n).encode())
        process.exit(0)

    key = asyncssh.generate_private_key("ssh-ed25519")
    server = await asyncssh.create_server(
        _Server,
        "127.0.0.1",
        0,
        server_host_keys=[key],
        process_factory=handle,
        encryption_algs=list(CIPHERS),
        encoding=None,
    )
    port = server.sockets[0].getsockname()[1]
    try:
        async with asyncssh.connect(
            "127.0.0.1", port, username="x", known_hosts=None, client_keys=None, agent_path=None, config=None,
            encryption_algs=list(CIPHERS),
        ) as conn:  # fmt: skip
            before = conn._send_seq
            result = await conn.run("copy", input=payload, encoding=None)
            packets = conn._send_seq - before
            before = conn._send_seq
            conn.send_packet(MSG_IGNORE, String(b"explicit"))
            explicit = conn._send_seq - before
    finally:
        server.close()
    assert isinstance(result.stdout, bytes)
    return int(result.stdout), packets, explicit


def test_data_packets_go_out_without_an_ignore_packet_each() -> None:
    assert skip_ignore_padding(CIPHERS) is None
    assert skip_ignore_padding(CIPHERS) is None  # twice is once
    size = 4 * 1024 * 1024
    received, packets, explicit = asyncio.run(_packets_for(b"x" * size))
    assert received == size
    data_packets = size // 32768  # asyncssh's packets of channel data
    # the data, and a few for the channel (open, request, EOF, close, window); asyncssh alone sent
    # twice as many: each behind an empty MSG_IGNORE
    assert data_packets <= packets < data_packets + 16, packets
    assert explicit == 1  # a MSG_IGNORE sent on purpose still goes out


def test_it_changes_nothing_where_cbc_is_allowed() -> None:
    reason = skip_ignore_padding([*CIPHERS, "aes128-cbc"])
    assert reason is not None and "CBC" in reason
    assert not any("cbc" in c for c in CIPHERS)
