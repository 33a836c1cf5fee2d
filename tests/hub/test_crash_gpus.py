"""No GPU twice, no orphan (issue 13): SIGKILL the hub at many instants of a spawn and of a stop;
after each restart every workspace process of the platform is one the hub lists (with its pid),
the GPUs of the live processes are all different and are exactly those the hub holds, and the
next GPU spawn gets a GPU that no live process has."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.bed.hub import PASSWORDS, Client, Hub, running_hub

# seconds after the request; a local workspace takes about 1-2 s to start and to stop
SPAWN_DELAYS = (0.0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.45, 0.7, 1.0, 1.4, 2.0)
STOP_DELAYS = (0.0, 0.05, 0.1, 0.2, 0.4, 0.7, 1.2, 2.0)
INSTANTS = [("spawn", d) for d in SPAWN_DELAYS] + [("stop", d) for d in STOP_DELAYS]


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    with running_hub(tmp_path_factory.mktemp("gpucrash"), traits={"Spawner.poll_interval": 1}) as h:
        yield h


def workspace_processes(hub: Hub) -> dict[int, list[str]]:
    """The live workspaces of this hub, found as an attacker would, in /proc: the pid of each
    workspace's first process (what it started, the workspace's sshd among them, carries the same
    environment) -> the GPU indices of its CUDA_VISIBLE_DEVICES."""
    api = f"JUPYTERHUB_API_URL=http://127.0.0.1:{hub.hub_port}/hub/api".encode()
    found: dict[int, tuple[int, list[str]]] = {}  # pid -> (parent pid, GPUs)
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            environ = Path(f"/proc/{name}/environ").read_bytes().split(b"\0")
            stat = Path(f"/proc/{name}/stat").read_text()
        except OSError:
            continue
        state, ppid = stat[stat.rfind(")") + 2 :].split()[:2]
        if api not in environ or state in "ZX":
            continue
        if any(e.startswith(b"JUPYTERHUB_SERVICE_NAME=") for e in environ):  # the hub's services
            continue
        visible = next((e for e in environ if e.startswith(b"CUDA_VISIBLE_DEVICES=")), b"=")
        found[int(name)] = (int(ppid), [i for i in visible.decode().split("=", 1)[1].split(",") if i])
    workspaces = {}
    for pid, (_parent, gpus) in found.items():
        root = pid
        while found.get(root, (0, []))[0] in found:
            root = found[root][0]
        assert gpus == found[root][1], f"process {pid} of workspace {root} has other GPUs"
        workspaces[root] = found[root][1]
    return workspaces


def hub_servers(admin: Client) -> dict[tuple[str, str], tuple[int | None, list[str]]]:
    """What the hub lists as running: (user, server) -> (pid, GPU indices) from its saved state."""
    users = admin.api("GET", "/users?state=active").json()
    return {
        (u["name"], name): (s["state"].get("pid"), [str(i) for i in s["state"].get("aidc", {}).get("gpus", [])])
        for u in users
        for name, s in u["servers"].items()
    }


def assert_consistent(hub: Hub, admin: Client, what: str, timeout: float = 20) -> dict[int, list[str]]:
    """No GPU in two live workspaces at any sample; and, once the hub's poll caught up with
    processes that were exiting when it restarted, the live processes are exactly the hub's."""
    deadline = time.monotonic() + timeout
    while True:
        procs = workspace_processes(hub)
        held = [g for gpus in procs.values() for g in gpus]
        assert len(held) == len(set(held)), f"{what}: a GPU held by two live workspaces: {procs}"
        servers = hub_servers(admin)
        pids = {pid for pid, _ in servers.values()}
        believed = sorted(g for _, gpus in servers.values() for g in gpus)
        if set(procs) == pids and sorted(held) == believed:
            return procs
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{what}: live workspace processes {procs} are not the hub's servers {servers};"
                f" hub log:\n{hub.log_tail(40)}"
            )
        time.sleep(0.3)


def test_sigkill_at_any_instant_of_a_spawn_or_stop_leaves_no_orphan_and_no_gpu_twice(hub: Hub) -> None:
    assert len(INSTANTS) >= 20
    clients = {name: hub.login(name, PASSWORDS[name]) for name in ("admin", "alice", "bob", "dave")}
    admin, alice, bob, dave = clients["admin"], clients["alice"], clients["bob"], clients["dave"]
    # a server that runs through every crash: adopted each time, its GPU never handed out again
    assert alice.spawn("base", tenant="lab", profile="h100-x1").status_code in (201, 202)
    alice.wait_ready("base")

    for kind, delay in INSTANTS:
        what = f"SIGKILL {delay}s after the {kind} request of bob/k"
        if kind == "stop":
            assert bob.spawn("k", tenant="lab", profile="h100-x1").status_code in (201, 202)
            bob.wait_ready("k")

        def request(kind: str = kind) -> None:
            try:
                if kind == "spawn":
                    bob.spawn("k", tenant="lab", profile="h100-x1")
                else:
                    bob.api("DELETE", "/users/bob/servers/k")
            except Exception:  # the hub dies under our feet: that is the point
                pass

        thread = threading.Thread(target=request)
        thread.start()
        time.sleep(delay)
        hub.kill()
        thread.join(30)
        hub.start()

        admin.wait_settled()
        before = assert_consistent(hub, admin, what)
        assert ("alice", "base") in hub_servers(admin), f"{what}: the running server was not adopted"
        # the next GPU spawn, of another tenant, gets a GPU no live process has
        assert dave.spawn("next", tenant="startup", profile="h100-x1").status_code in (201, 202), what
        dave.wait_ready("next")
        after = assert_consistent(hub, admin, f"{what}, then dave's spawn")
        (new,) = set(after) - set(before)
        assert after[new] and not set(after[new]) & {g for p, gpus in before.items() for g in gpus}, what

        for client, server in ((dave, "next"), (bob, "k")):
            if server in client.api("GET", f"/users/{client.name}").json()["servers"]:
                client.stop_server(server)

    alice.stop_server("base")
    assert workspace_processes(hub) == {}
