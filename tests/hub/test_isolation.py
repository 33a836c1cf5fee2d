"""People kept apart on one machine (issue 13, part 2): a hub run by root runs each person's
workspaces as their own Unix account, in their own cgroup (the profile's CPU and memory), opening
only the GPUs they hold. The GPUs are character devices with NVIDIA's major number made here: with
no driver behind them an allowed open fails with ENXIO, one the devices cgroup denies with EPERM.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.bed.hub import PASSWORDS, TENANTS, Client, Hub, stop_all_servers

pytestmark = pytest.mark.usefixtures("root")

GIB = 2**30


@pytest.fixture(scope="module")
def devices() -> Iterator[Path]:
    """/dev/nvidia0-3 and nvidiactl stand-ins (major 195), and /dev/mem's numbers (1:1), all mode 0666."""
    folder = Path(tempfile.mkdtemp(prefix="aidc-test-devices-"))
    folder.chmod(0o755)
    nodes = {f"nvidia{n}": (195, n) for n in range(4)} | {"nvidiactl": (195, 255), "mem": (1, 1)}
    for name, (major, minor) in nodes.items():
        os.mknod(folder / name, 0o666 | stat.S_IFCHR, os.makedev(major, minor))
        (folder / name).chmod(0o666)
    yield folder
    shutil.rmtree(folder)


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    h = Hub(tmp_path_factory.mktemp("isolation"), PASSWORDS, "H100:4", TENANTS, traits={"Spawner.poll_interval": 2})
    with h.running():
        yield h


@pytest.fixture(scope="module")
def clients(hub: Hub) -> dict[str, Client]:
    return {name: hub.login(name, PASSWORDS[name]) for name in ("alice", "bob")}


@pytest.fixture(autouse=True)
def no_servers_left(clients: dict[str, Client]) -> Iterator[None]:
    yield
    stop_all_servers(clients.values())


PROBE = r"""
import errno, json, os, pwd

def attempt(action):
    try:
        action()
        return "ok"
    except OSError as e:
        return errno.errorcode[e.errno]

def open_close(path, flags=os.O_RDWR):
    os.close(os.open(path, flags))

cgroups = dict(line.split(":", 2)[1:] for line in open("/proc/self/cgroup").read().splitlines())

def limit(controller, name):
    with open(f"/sys/fs/cgroup/{controller}{cgroups[controller]}/{name}") as f:
        return f.read().strip()

print(json.dumps({
    "user": pwd.getpwuid(os.getuid()).pw_name,
    "groups": os.getgroups(),
    "home": os.environ["HOME"],
    "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"),
    "devices": {n: attempt(lambda: open_close(os.path.join(DEVICES, n))) for n in sorted(os.listdir(DEVICES))},
    "other_home": attempt(lambda: os.listdir(OTHER_HOME)),
    "hub_data": attempt(lambda: os.listdir(HUB_DATA)),
    "cpu_quota": limit("cpu", "cpu.cfs_quota_us"),
    "cpu_period": limit("cpu", "cpu.cfs_period_us"),
    "memory": limit("memory", "memory.limit_in_bytes"),
    "cgroup": cgroups,
}))
"""


def probe(client: Client, server: str, devices: Path, other_home: Path, hub: Hub) -> dict:  # type: ignore[type-arg]
    srv = client.wait_ready(server)
    code = f"DEVICES = {str(devices)!r}\nOTHER_HOME = {str(other_home)!r}\nHUB_DATA = {str(hub.data_dir)!r}\n{PROBE}"
    return json.loads(client.run_in_kernel(srv["url"], code).strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_each_person_runs_as_their_own_account_with_only_their_gpus(
    hub: Hub, clients: dict[str, Client], devices: Path
) -> None:
    alice, bob = clients["alice"], clients["bob"]
    assert alice.spawn("gpu", tenant="lab", profile="h100-x1").status_code in (201, 202)
    assert bob.spawn(tenant="lab", profile="cpu").status_code in (201, 202)
    bob.wait_ready()
    seen = probe(alice, "gpu", devices, hub.homes / "bob", hub)

    account = pwd.getpwnam(hub.account("alice"))
    assert seen["user"] == hub.account("alice") and account.pw_uid != 0
    assert 0 not in seen["groups"]
    home = Path(seen["home"])
    assert home == hub.homes / "alice"
    assert (home.stat().st_uid, stat.S_IMODE(home.stat().st_mode)) == (account.pw_uid, 0o700)

    # the GPU she holds opens (no driver: ENXIO); every other GPU is refused by the kernel (EPERM),
    # whatever CUDA_VISIBLE_DEVICES says; so is any device not on the list
    held = seen["cuda"]
    assert held is not None and len(held.split(",")) == 1
    expected = {f"nvidia{n}": "ENXIO" if str(n) == held else "EPERM" for n in range(4)}
    assert seen["devices"] == {**expected, "nvidiactl": "ENXIO", "mem": "EPERM"}, seen

    # nobody else's files: bob's home and the hub's data directory are closed to her
    assert seen["other_home"] == "EACCES"
    assert seen["hub_data"] == "EACCES"

    # the profile's CPU (2) and memory (4Gi), in cgroups of her own
    assert int(seen["cpu_quota"]) == 2 * int(seen["cpu_period"])
    assert int(seen["memory"]) == 4 * GIB
    assert "aidc-workspaces/" in seen["cgroup"]["memory"]


def test_memory_beyond_the_profile_is_killed_and_stop_takes_background_programs(
    hub: Hub, clients: dict[str, Client]
) -> None:
    alice = clients["alice"]
    assert alice.spawn(tenant="lab", profile="cpu").status_code in (201, 202)  # memory: 2Gi
    srv = alice.wait_ready()
    code = """
import subprocess, sys
hog = "x = bytearray(3 << 30); x[::4096] = b'a' * len(x[::4096]); print('not killed')"
r = subprocess.run([sys.executable, "-c", hog], capture_output=True, text=True)
bg = subprocess.Popen(["sleep", "1000"], start_new_session=True)
print(r.returncode, bg.pid)
"""
    returncode, background = alice.run_in_kernel(srv["url"], code).split()
    assert int(returncode) == -9  # the kernel's OOM killer, inside her cgroup only
    assert Path(f"/proc/{background}").exists()  # a program started in the background, detached
    assert hub.proc is not None and hub.proc.poll() is None
    # her workspace's memory cgroup (other hubs on this machine have theirs)
    mine = [
        p
        for p in Path("/sys/fs/cgroup/memory").rglob("aidc-workspaces/*/cgroup.procs")
        if background in p.read_text().split()
    ]
    assert len(mine) == 1, mine
    alice.stop_server()
    deadline = time.monotonic() + 10
    while Path(f"/proc/{background}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not Path(f"/proc/{background}").exists(), "a program of the stopped workspace still runs"
    assert not mine[0].exists() or not mine[0].read_text().strip(), mine


def test_a_hub_that_does_not_isolate_people_says_so(tmp_path: Path) -> None:
    hub = Hub(tmp_path, PASSWORDS, "H100:1", TENANTS, traits={"TenantLocalSpawner.isolation": "none"})
    hub.start()
    try:
        alice = hub.login("alice", PASSWORDS["alice"])
        page = alice.session.get(f"{hub.url}/hub/spawn", timeout=30).text
        assert 'id="aidc-not-isolated"' in page and "does not isolate people" in page
        assert "isolation is 'none'" in hub.log_tail(400)
        assert alice.spawn(tenant="lab", profile="cpu").status_code in (201, 202)
        alice.wait_ready()
        alice.stop_server()
    finally:
        hub.stop()
