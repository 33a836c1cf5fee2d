"""Crash safety of the usage ledger with a real hub: SIGKILL the hub in the middle of spawns and
stops; after the restart the reservations (open ledger runs) are exactly the servers that run,
and every ended run is counted once."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import func, select

from quotas.schema import runs, usage_rollups
from quotas.store import Store
from tests.bed.hub import PASSWORDS, Client, Hub, running_hub, stop_all_servers

PEOPLE = ("alice", "bob", "carol", "dave")


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    with running_hub(tmp_path_factory.mktemp("crash"), traits={"Spawner.poll_interval": 2}) as h:
        yield h


def running_servers(admin: Client) -> set[tuple[str, str]]:
    users = admin.api("GET", "/users?state=active").json()
    return {(u["name"], name) for u in users for name, s in u["servers"].items() if s["ready"] or s["pending"]}


def ledger(hub: Hub) -> Store:
    return Store(f"sqlite:///{hub.data_dir / 'quotas.sqlite'}", migrate=False)


def test_sigkill_during_spawns_and_stops_keeps_the_ledger_exact(hub: Hub) -> None:
    clients = {name: hub.login(name, PASSWORDS[name]) for name in (*PEOPLE, "admin")}
    admin = clients["admin"]
    tenant = {"alice": "lab", "bob": "lab", "carol": "lab", "dave": "startup"}
    # a first wave that runs, then stops of half of it racing with a second wave of spawns
    for name in PEOPLE:
        assert clients[name].spawn("one", tenant=tenant[name], profile="cpu").status_code in (201, 202)
    for name in PEOPLE:
        clients[name].wait_ready("one")

    def churn(name: str) -> None:
        try:
            if name in ("alice", "carol"):
                clients[name].api("DELETE", f"/users/{name}/servers/one")
            clients[name].spawn("two", tenant=tenant[name], profile="cpu")
        except Exception:  # the hub dies under our feet: that is the point
            pass

    threads = [threading.Thread(target=churn, args=(n,)) for n in PEOPLE]
    for t in threads:
        t.start()
    time.sleep(0.4)
    hub.kill()
    for t in threads:
        t.join(30)

    hub.start()
    clients = {name: hub.login(name, PASSWORDS[name]) for name in (*PEOPLE, "admin")}
    admin = clients["admin"]
    admin.wait_settled()
    # the first admission after the restart closes runs no surviving server holds
    assert clients["bob"].spawn("three", tenant="lab", profile="cpu").status_code in (201, 202, 403)
    admin.wait_settled()

    store = ledger(hub)
    try:
        open_runs = {(r.holding.user, r.holding.server) for r in store.open_runs()}
        assert open_runs == running_servers(admin)
        with store.engine.connect() as conn:
            closed = conn.execute(select(func.count()).select_from(runs).where(runs.c.ended.is_not(None))).scalar()
            rolled = conn.execute(
                select(func.sum(usage_rollups.c.runs)).where(
                    usage_rollups.c.kind == "tenant", usage_rollups.c.period == "day"
                )
            ).scalar()
        assert closed == (rolled or 0), "an ended run was counted twice or not at all"
    finally:
        store.close()
        stop_all_servers(clients.values())
    store = ledger(hub)
    try:
        assert store.open_runs() == [], "stopping every server must close every run"
    finally:
        store.close()
