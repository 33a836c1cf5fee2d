"""The workspace side of SSH alone, behind a real hub: alice's server starts an sshd with itself,
on its own address and the port that the hub's spawner chose and keeps in the server's state; it
accepts the key the gateway derives for that server only, and proves itself with that server's own
host key.

The test plays the gateway: it reads the address from the server's state (as the gateway does, with
``admin:server_state``) and runs an SSH client (asyncssh) with ``sshgateway.workspace_keys``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from sshgateway.procnet import landing_sockets
from sshgateway.routing import sshd_address
from sshgateway.workspace_keys import load_secret, server_host_key, server_key
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


def state_of(admin: Client, user: str, server: str = "") -> dict[str, Any]:
    state: dict[str, Any] = admin.api("GET", f"/users/{user}").json()["servers"][server]["state"]
    return state


def ssh(address: tuple[str, int], key: asyncssh.SSHKey, user: str, host_key: asyncssh.SSHKey | None) -> Any:
    return asyncssh.connect(
        address[0],
        address[1],
        username=user,  # the workspace's account: the person's own (jupyter-alice) when the hub runs as root
        client_keys=[key],
        known_hosts=([host_key.convert_to_public()], [], []) if host_key else None,
        agent_path=None,
        config=None,
        connect_timeout=30,
    )


def test_the_gateway_key_of_the_server_gets_in_and_no_other(hub: Hub, people: dict[str, Client]) -> None:
    alice, admin = people["alice"], people["admin"]
    assert alice.spawn(tenant="lab", profile="h100-x1").status_code in (201, 202)
    alice.wait_ready()
    secret = load_secret(str(hub.data_dir))  # the hub's: the spawner created it
    account = hub.account("alice")
    address = sshd_address(state_of(admin, "alice"))
    assert address is not None and address[0] == "127.0.0.1", state_of(admin, "alice")
    # sshd listens on the server's own address only, from before the server answered the hub
    assert {s.address for s in landing_sockets(*address)} == {"127.0.0.1"}
    host = server_host_key(secret, "alice", "")

    async def run() -> None:
        t0 = time.monotonic()
        async with ssh(address, server_key(secret, "alice", ""), account, host) as conn:
            first = time.monotonic() - t0
            result = await conn.run("whoami; pwd; echo gpus=$CUDA_VISIBLE_DEVICES token=$JUPYTERHUB_API_TOKEN")
            keys = await conn.run("echo host=${AIDC_SSH_HOST_KEY:-none}")
        print(f"\nfirst connection {first * 1000:.0f}ms")
        assert result.exit_status == 0, result.stderr
        user, home, env = str(result.stdout).splitlines()
        assert user == account
        assert home == str(hub.homes / "alice")  # the workspace's home, not the account's
        assert env.startswith("gpus=") and env != "gpus=" and env.endswith(" token=")  # its GPU, not its token
        assert str(keys.stdout).strip() == "host=none"  # nor its sshd's host key

        async with ssh(address, server_key(secret, "alice", ""), account, host) as conn:  # a second connection
            assert (await conn.run("exit 3")).exit_status == 3

        for wrong in (server_key(secret, "bob", ""), server_key(secret, "alice", "other")):
            with pytest.raises(asyncssh.PermissionDenied):
                async with ssh(address, wrong, account, host):
                    pass
        # the gateway expects bob's server's host key at bob's address: alice's sshd cannot pass for it
        with pytest.raises(asyncssh.HostKeyNotVerifiable):
            async with ssh(address, server_key(secret, "alice", ""), account, server_host_key(secret, "bob", "")):
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


def test_sshd_dies_with_a_killed_server_and_its_address_is_forgotten(hub: Hub, people: dict[str, Client]) -> None:
    alice, admin = people["alice"], people["admin"]
    assert alice.spawn(tenant="lab", profile="cpu").status_code in (201, 202)
    alice.wait_ready()
    state = state_of(admin, "alice")
    assert sshd_address(state) is not None and sshd_processes(hub)
    os.kill(state["pid"], signal.SIGKILL)  # not the hub's stop: the server's process dies at once
    deadline = time.monotonic() + 15
    while sshd_processes(hub) and time.monotonic() < deadline:
        time.sleep(0.3)
    assert sshd_processes(hub) == [], "an sshd must not outlive its server (its port may be taken by another)"
    deadline = time.monotonic() + 60  # the hub's poll finds the server gone and clears its state
    while admin.api("GET", "/users/alice").json()["servers"].get("", {}).get("ready") and time.monotonic() < deadline:
        time.sleep(1)
    server = admin.api("GET", "/users/alice").json()["servers"].get("")
    assert server is None or sshd_address(server.get("state") or {}) is None
