"""Spawns the hub refuses, and a hub that dies, with a real hub (production config).

- A spawn refused for want of a free GPU (503) leaves no run in the ledger, and the open runs
  never hold more GPUs than the machine has, even during a burst larger than the inventory.
- A REST body with top-level keys beyond ``user_options`` and ``display_name`` is refused (400),
  not started with the unknown keys silently dropped.
- The hub's services (SSH gateway, quotas service) stop when the hub is killed, even right after
  it started them, and free their ports.

The hub here has 2 H100 for tenant `lab`, whose ceiling is 4 H100 (tests/hub/tenants.yaml): the
tenant's quota admits more than the machine can hand out.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from spawner.accounts import ensure_account, ensure_home
from tests.bed.hub import PASSWORDS, TENANTS, Client, Hub, stop_all_servers

INVENTORY = 2  # H100 of this machine


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    traits = {"Spawner.poll_interval": 2, "Spawner.consecutive_failure_limit": 2}
    h = Hub(tmp_path_factory.mktemp("refusals"), PASSWORDS, f"H100:{INVENTORY}", TENANTS, traits=traits)
    with h.running():
        yield h


@pytest.fixture(scope="module")
def clients(hub: Hub) -> dict[str, Client]:
    return {name: hub.login(name, PASSWORDS[name]) for name in ("alice", "bob", "carol", "kim")}


@pytest.fixture(autouse=True)
def no_servers_left(clients: dict[str, Client]) -> Iterator[None]:
    yield
    stop_all_servers(clients.values())


def ledger(hub: Hub) -> sqlite3.Connection:
    """The quotas database, read-only: reading never takes the hub's write lock."""
    return sqlite3.connect(f"file:{hub.data_dir / 'quotas.sqlite'}?mode=ro", uri=True, timeout=30)


def open_gpus(db: sqlite3.Connection) -> int:
    return int(db.execute("SELECT coalesce(sum(gpu_count), 0) FROM runs WHERE ended IS NULL").fetchone()[0])


def test_a_gpu_burst_larger_than_the_machine_leaves_no_phantom_runs(hub: Hub, clients: dict[str, Client]) -> None:
    db = ledger(hub)
    runs_before = db.execute("SELECT count(*) FROM runs").fetchone()[0]
    most: list[int] = [0]
    done = threading.Event()

    def watch() -> None:
        watcher = ledger(hub)
        while not done.is_set():
            most[0] = max(most[0], open_gpus(watcher))
            time.sleep(0.002)
        watcher.close()

    answers: dict[tuple[str, str], int] = {}

    def spawn(name: str, server: str) -> None:
        answers[(name, server)] = clients[name].spawn(server, tenant="lab", profile="h100-x1").status_code

    watcher = threading.Thread(target=watch)
    watcher.start()
    burst = [threading.Thread(target=spawn, args=(n, s)) for n in ("alice", "bob", "carol") for s in ("a", "b")]
    try:
        for t in burst:
            t.start()
        for t in burst:
            t.join(120)
        started = [key for key, status in answers.items() if status in (201, 202)]
        for name, server in started:
            clients[name].wait_ready(server)
    finally:
        done.set()
        watcher.join(10)

    refused = sorted(status for status in answers.values() if status not in (201, 202))
    assert len(started) == INVENTORY and refused == [503] * (6 - INVENTORY), answers
    assert most[0] <= INVENTORY, f"open runs held {most[0]} H100 on a machine with {INVENTORY}"
    # the ledger has a run for each server that started, and none for the refusals
    assert db.execute("SELECT count(*) FROM runs").fetchone()[0] - runs_before == INVENTORY
    assert open_gpus(db) == INVENTORY

    stop_all_servers(clients.values())
    # what the usage report counts: the runs that started, nothing else
    usage = requests.get(
        f"{hub.url}/services/quotas/api/tenants/lab/usage?by=tenant",
        headers={"Authorization": f"token {clients['kim'].token}"},
        timeout=30,
    )
    assert usage.status_code == 200, usage.text
    assert usage.json()["total"]["runs"] == runs_before + INVENTORY, usage.json()
    db.close()


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (
            {"user_options": {"tenant": "lab", "profile": "h100-x1"}, "gpus": 64},
            "Unknown key in the request body: gpus",
        ),
        (
            {"user_options": {"tenant": "lab", "profile": "cpu"}, "display_name": "x", "image": "evil", "cpu": 64},
            "Unknown keys in the request body: cpu, image",
        ),
        ({"display_name": "gpu box", "mem_limit": "1Ti"}, "Unknown key in the request body: mem_limit"),
    ],
)
def test_a_spawn_body_with_undocumented_keys_is_refused(
    hub: Hub, clients: dict[str, Client], body: dict, words: str
) -> None:
    alice = clients["alice"]
    db = ledger(hub)
    runs_before = db.execute("SELECT count(*) FROM runs").fetchone()[0]
    r = alice.api("POST", "/users/alice/servers/forged", json=body)
    assert r.status_code == 400, r.text
    message = r.json()["message"]
    assert words in message and "'user_options'" in message and "'display_name'" in message
    assert alice.api("GET", "/users/alice").json()["servers"].get("forged", {}).get("ready") is not True
    assert db.execute("SELECT count(*) FROM runs").fetchone()[0] == runs_before  # nothing was reserved
    db.close()
    # the documented form still starts
    ok = alice.api("POST", "/users/alice/servers/forged", json={"user_options": {"tenant": "lab", "profile": "cpu"}})
    assert ok.status_code in (201, 202), ok.text
    alice.wait_ready("forged")


@pytest.mark.parametrize(
    ("method", "body", "words"),
    [
        (
            "PUT",
            {"user_options": {"tenant": "lab", "profile": "cpu"}, "gpus": 64},
            "Unknown key in the request body: gpus",
        ),
        ("PUT", {"tenant": "lab", "profile": "cpu", "image": "evil"}, "Unknown server option: image"),
        ("PUT", {"user_options": {"profile": 7}}, "Server option 'profile' must be a string"),
        ("PATCH", {"user_options": {"tenant": "lab"}, "gpus": 64}, "Unknown key in the request body: gpus"),
        ("PATCH", {"user_options": {"mem_limit": "1T"}}, "Unknown server option: mem_limit"),
        ("PATCH", {"user_options": ["x"]}, "Server options must be an object"),
    ],
)
def test_server_bodies_that_create_or_edit_are_checked_too(
    hub: Hub,
    clients: dict[str, Client],
    method: str,
    body: dict,
    words: str,  # type: ignore[type-arg]
) -> None:
    """JupyterHub's PUT (create without starting) dropped unknown keys and stored any options; its
    PATCH answered unknown keys with a 500. Both now refuse (400), change nothing, and say why."""
    alice = clients["alice"]
    if method == "PATCH":
        made = alice.api(
            "PUT", "/users/alice/servers/edited", json={"user_options": {"tenant": "lab", "profile": "cpu"}}
        )
        assert made.status_code in (201, 409), made.text
    before = alice.api("GET", "/users/alice").json()["servers"].get("edited")
    r = alice.api(method, "/users/alice/servers/edited", json=body)
    assert r.status_code == 400, r.text
    assert words in r.json()["message"], r.json()["message"]
    assert alice.api("GET", "/users/alice").json()["servers"].get("edited") == before
    # a caller without the scope learns nothing from the body check
    other = clients["bob"].api(method, "/users/alice/servers/edited", json=body)
    assert other.status_code in (403, 404), other.text
    ok = alice.api("PATCH", "/users/alice/servers/edited", json={"user_options": {"tenant": "lab", "profile": "cpu"}})
    assert ok.status_code == 200 or (method == "PUT" and ok.status_code == 404), ok.text


def test_a_member_who_breaks_their_own_server_cannot_stop_the_hub(hub: Hub, clients: dict[str, Client]) -> None:
    """The hub exits after 2 failed spawns in a row here (its own failures); alice's server config
    exits and bob's home is a file: many more failures than that, and the hub serves everyone."""
    alice, bob, carol = clients["alice"], clients["bob"], clients["carol"]
    homes = hub.homes
    config = homes / "alice" / ".jupyter" / "jupyter_server_config.py"
    account = ensure_account("alice", str(homes / "alice"), hub.account_template)  # alice writes it, as herself
    ensure_home(account, str(homes / "alice"))
    config.parent.mkdir(exist_ok=True)
    config.write_text("import os\nos._exit(3)\n")
    for path in (config.parent, config):
        os.chown(path, account.uid, account.gid)
    shutil.rmtree(homes / "bob", ignore_errors=True)
    (homes / "bob").write_text("not a folder")
    try:
        for _ in range(3):
            message = alice.spawn_failure(tenant="lab", profile="cpu")
            assert "exited (status 3) before it answered" in message, message
            assert "~/.jupyter/jupyter_server_config.py" in message and "Fix or move aside" in message
            message = bob.spawn_failure("b", tenant="lab", profile="cpu")
            assert "Your server 'b' cannot start: your home folder cannot be used" in message, message
        time.sleep(3)  # the hub aborts 2 s after the failure that reaches the limit
        assert hub.proc is not None and hub.proc.poll() is None, f"the hub exited:\n{hub.log_tail()}"
        assert carol.spawn(tenant="lab", profile="cpu").status_code in (201, 202)
        carol.wait_ready()
    finally:
        config.unlink()
        (homes / "bob").unlink()
    # and once the person repairs it, their server starts
    assert alice.spawn(tenant="lab", profile="cpu").status_code in (201, 202)
    alice.wait_ready()


def test_a_hub_that_cannot_start_any_server_still_exits(tmp_path: Path) -> None:
    """Its own failure (here: the workspace program is missing) counts, as z2jh intends: the
    hub exits after ``consecutive_failure_limit`` of them, so that its supervisor restarts it."""
    traits = {"Spawner.consecutive_failure_limit": 2, "Spawner.cmd": ["/nonexistent/jupyterhub-singleuser"]}
    hub = Hub(tmp_path, PASSWORDS, "H100:1", TENANTS, traits=traits)
    hub.start()
    try:
        for name in ("alice", "dave"):
            client = hub.login(name, PASSWORDS[name])
            message = client.spawn_failure(tenant="startup" if name == "dave" else "lab", profile="cpu")
            assert "the platform failed to start its process" in message and "not caused by your files" in message
        assert hub.proc is not None
        hub.proc.wait(30)
        assert "Aborting due to 2 consecutive spawn failures" in hub.log_tail()
    finally:
        hub.stop()


def _children(pid: int) -> dict[int, str]:
    """The processes whose parent is ``pid``: their command lines."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == pid:
                found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, IndexError, ValueError):
            continue
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")  # a zombie has exited: its reaper is not ours


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.parametrize("when", ["as-soon-as-started", "once-listening"])
def test_services_of_a_killed_hub_stop_and_free_their_ports(tmp_path: Path, when: str) -> None:
    hub = Hub(tmp_path, accounts=PASSWORDS, tenants=TENANTS)
    ports = {"sshgateway": int(hub.env["AIDC_SSH_PORT"]), "quotas.service": int(hub.env["AIDC_QUOTAS_PORT"])}
    with open(hub.log_path, "ab") as log:
        hub.proc = hub._popen(log)
    services: dict[str, int] = {}
    try:
        deadline = time.monotonic() + 60
        while len(services) < len(ports) and time.monotonic() < deadline:
            assert hub.proc.poll() is None, hub.log_tail()
            for pid, cmd in _children(hub.proc.pid).items():
                services.update({name: pid for name in ports if f"-m {name}" in cmd})
            time.sleep(0.01)
        assert len(services) == len(ports), f"the hub did not start its services: {services}\n{hub.log_tail()}"
        if when == "once-listening":
            while not all(_listening(p) for p in ports.values()) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert all(_listening(p) for p in ports.values()), hub.log_tail()
        hub.kill()
        deadline = time.monotonic() + 5
        while any(_alive(pid) for pid in services.values()) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = {name: pid for name, pid in services.items() if _alive(pid)}
        assert not left, f"services of the killed hub still run: {left}\n{hub.log_tail()}"
        assert not any(_listening(p) for p in ports.values())
    finally:
        hub._kill_everything()
        for pid in services.values():  # services run in sessions of their own: not in the hub's group
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
