"""SIGKILL the quotas service while tenant admins write limits: every limit is the old one or a
new one whole (never a mix of two writes), the hub restarts the service, and the ledger of the
running servers is untouched."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator

import pytest
import requests

from quotas import paths
from quotas.store import Store
from tests.bed.hub import PASSWORDS, Client, Hub, running_hub, stop_all_servers


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    with running_hub(tmp_path_factory.mktemp("service-crash")) as h:
        yield h


def service_pid(hub: Hub) -> int:
    """The quotas service this hub started (its child running ``-m quotas.service``)."""
    assert hub.proc is not None
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()
            cmdline = open(f"/proc/{entry}/cmdline", "rb").read().split(b"\0")
        except OSError:
            continue
        if int(stat[1]) == hub.proc.pid and b"quotas.service" in cmdline:
            return int(entry)
    raise AssertionError("the hub runs no quotas service")


def put_limit(kim: Client, gpus: int, hours: int) -> int:
    try:
        r = requests.put(
            f"{kim.hub.url}/services/quotas/api/tenants/lab/limits/users/alice",
            json={"gpus": {"H100": gpus}, "gpu_hours": hours},
            headers={"Authorization": f"token {kim.token}"},
            timeout=30,
        )
        return r.status_code
    except requests.RequestException:
        return 0


def test_killed_service_leaves_whole_limits_and_comes_back(hub: Hub) -> None:
    kim, bob = hub.login("kim", PASSWORDS["kim"]), hub.login("bob", PASSWORDS["bob"])
    assert put_limit(kim, 1, 10) == 200
    assert bob.spawn(tenant="lab", profile="cpu").status_code in (201, 202)
    bob.wait_ready()
    store = Store(paths.db_url(str(hub.data_dir)), migrate=False)
    try:
        runs_before = [(r.id, r.holding) for r in store.open_runs()]

        stop = threading.Event()

        def writer() -> None:  # each write pairs gpus n with gpu_hours 10n
            n = 0
            while not stop.is_set():
                n = n % 4 + 1
                put_limit(kim, n, 10 * n)

        threads = [threading.Thread(target=writer) for _ in range(3)]
        for t in threads:
            t.start()
        time.sleep(1.5)
        old = service_pid(hub)
        os.kill(old, signal.SIGKILL)
        time.sleep(0.5)
        stop.set()
        for t in threads:
            t.join(60)

        limit = store.limit("lab", "user", "alice")
        assert limit is not None
        n = limit.gpus["H100"]
        assert limit.gpu_hours == 10 * n, "a limit mixes two writes"

        deadline = time.monotonic() + 60  # JupyterHub restarts a managed service that died
        while time.monotonic() < deadline and put_limit(kim, 2, 20) != 200:
            time.sleep(1)
        assert service_pid(hub) != old
        limit = store.limit("lab", "user", "alice")
        assert limit is not None and limit.gpus == {"H100": 2} and limit.gpu_hours == 20
        assert [(r.id, r.holding) for r in store.open_runs()] == runs_before, "the ledger changed"
    finally:
        store.close()
        stop_all_servers([bob])
