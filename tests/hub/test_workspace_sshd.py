"""The workspace side of SSH alone, behind a real hub and proxy: alice's server runs an sshd that
is reachable as a websocket at ``/user/alice/sshd/`` by whoever the hub lets reach her server, and
that accepts the key the gateway derives for that server only.

The test plays the gateway: it opens the websocket with a platform admin's token (which has
``access:servers``), bridges it to a local TCP port, and runs an SSH client (asyncssh) over it with
``sshgateway.workspace_keys.server_key``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncssh
import pytest
from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.websocket import WebSocketClientConnection, websocket_connect

from sshgateway.workspace_keys import load_secret, server_key
from tests.bed.hub import PASSWORDS, Client, Hub, running_hub, stop_all_servers


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    with running_hub(tmp_path_factory.mktemp("sshd-hub")) as h:
        yield h


@pytest.fixture(scope="module")
def people(hub: Hub) -> Iterator[dict[str, Client]]:
    clients = {name: hub.login(name, PASSWORDS[name]) for name in ("admin", "alice", "bob")}
    yield clients
    stop_all_servers(clients.values())


async def open_websocket(hub: Hub, path: str, token: str) -> WebSocketClientConnection:
    url = f"{hub.url.replace('http://', 'ws://')}{path}"
    request = HTTPRequest(url, headers={"Authorization": f"token {token}"}, connect_timeout=30, request_timeout=60)
    return await websocket_connect(request)


@asynccontextmanager
async def bridge(hub: Hub, path: str, token: str) -> AsyncIterator[int]:
    """A local TCP port whose every connection is a new websocket to ``path`` (what the gateway does)."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ws = await open_websocket(hub, path, token)

        async def upstream() -> None:
            while data := await reader.read(65536):
                await ws.write_message(data, binary=True)
            ws.close()

        async def downstream() -> None:
            while (message := await ws.read_message()) is not None:
                writer.write(message if isinstance(message, bytes) else message.encode())
                await writer.drain()
            writer.close()

        await asyncio.gather(upstream(), downstream(), return_exceptions=True)

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


def ssh(port: int, key: asyncssh.SSHKey, user: str) -> Any:
    return asyncssh.connect(
        "127.0.0.1",
        port,
        username=user,  # the workspace's account: the person's own (jupyter-alice) when the hub runs as root
        client_keys=[key],
        known_hosts=None,
        agent_path=None,
        connect_timeout=60,
    )


def test_the_gateway_key_of_the_server_gets_in_and_no_other(hub: Hub, people: dict[str, Client]) -> None:
    alice, admin = people["alice"], people["admin"]
    assert alice.spawn(tenant="lab", profile="h100-x1").status_code in (201, 202)
    alice.wait_ready()
    secret = load_secret(str(hub.data_dir))  # the hub's: the spawner created it
    account = hub.account("alice")

    async def run() -> None:
        t0 = time.monotonic()
        async with bridge(hub, "/user/alice/sshd/", admin.token) as port:
            async with ssh(port, server_key(secret, "alice", ""), account) as conn:
                first = time.monotonic() - t0
                result = await conn.run("whoami; pwd; echo gpus=$CUDA_VISIBLE_DEVICES token=$JUPYTERHUB_API_TOKEN")
                t1 = time.monotonic()
                assert (await conn.run("true")).exit_status == 0
                again = time.monotonic() - t1
            print(f"\nfirst connection (sshd started on demand) {first:.2f}s; a command on it {again * 1000:.0f}ms")
            assert result.exit_status == 0, result.stderr
            user, home, env = str(result.stdout).splitlines()
            assert user == account
            assert home == str(hub.homes / "alice")  # the workspace's home, not the account's
            assert env.startswith("gpus=") and env != "gpus=" and env.endswith(" token=")  # its GPU, not its token

            async with ssh(port, server_key(secret, "alice", ""), account) as conn:  # sshd runs on: a second connection
                assert (await conn.run("exit 3")).exit_status == 3

            for wrong in (server_key(secret, "bob", ""), server_key(secret, "alice", "other")):
                with pytest.raises(asyncssh.PermissionDenied):
                    async with ssh(port, wrong, account):
                        pass

    asyncio.run(run())
    assert sshd_processes(hub), "the workspace's sshd should run while the server runs"
    alice.stop_server()
    deadline = time.monotonic() + 15
    while sshd_processes(hub) and time.monotonic() < deadline:
        time.sleep(0.3)
    assert sshd_processes(hub) == [], "the workspace's sshd must stop with the workspace"


def sshd_processes(hub: Hub) -> list[int]:
    """Pids of the sshd listeners of this hub's workspaces (their config is in the homes of this hub)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        text = b" ".join(cmdline)  # sshd rewrites its title: "sshd: /usr/sbin/sshd -D -e -f <config> [listener] ..."
        if b"sshd" in cmdline[0] and str(hub.homes).encode() in text:
            found.append(int(proc.name))
    return found


def test_only_those_the_hub_lets_reach_the_server_get_the_websocket(hub: Hub, people: dict[str, Client]) -> None:
    alice, bob = people["alice"], people["bob"]
    if "" not in alice.api("GET", "/users/alice").json()["servers"]:
        assert alice.spawn(tenant="lab", profile="cpu").status_code in (201, 202)
    alice.wait_ready()

    async def run() -> None:
        with pytest.raises(HTTPClientError) as refused:
            await open_websocket(hub, "/user/alice/sshd/", bob.token)
        assert refused.value.code in (302, 403)  # bob's token does not reach alice's server
        ws = await open_websocket(hub, "/user/alice/sshd/", people["admin"].token)
        ws.write_message(b"SSH-2.0-probe\r\n", binary=True)
        banner = await asyncio.wait_for(ws.read_message(), 30)
        assert isinstance(banner, bytes) and banner.startswith(b"SSH-2.0-OpenSSH")
        ws.close()

    asyncio.run(run())
