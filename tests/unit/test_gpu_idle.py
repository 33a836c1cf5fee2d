"""GPU-idle culling (quotas/culler.py): the idle clock of a server's GPUs, the decision keep, warn
or stop, which setting applies, and how it joins the other culling decisions. Missing metrics
never cull."""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from quotas.culler import (
    END_REASONS,
    SCOPES,
    Action,
    Culler,
    GpuIdleClock,
    GpuIdleRule,
    Overrun,
    Server,
    cull_decisions,
    gpu_idle_clock,
    gpu_idle_decision,
    gpu_idle_rule,
    server_gpus,
    servers_from_hub,
)
from quotas.gpu_use import GpuSample, GpuUseUnavailable, ServerGpus
from quotas.loader import parse_platform
from quotas.model import Image, PlatformConfig
from quotas.notices import ENDED_BECAUSE, Notice, server_notices
from quotas.policy import Holding
from quotas.service.app import SERVICE_SCOPES
from quotas.store import Run, Store

NOW = datetime(2026, 11, 20, 14, 0, tzinfo=UTC)
STARTED = NOW - timedelta(days=1)
MIN = timedelta(minutes=1)

PLATFORM: dict[str, Any] = {
    "culling": {"gpu_idle_timeout": "8h", "cpu_idle_timeout": "8h", "interval": "5m",
                "gpu_idle": {"threshold": "5%", "after": "2h", "warn_before": "30m"}},
    "gpu_types": {"H100": {}},
    "profiles": [
        {"id": "cpu", "display_name": "CPU", "cpu": "2", "memory": "8Gi", "image": "base"},
        {"id": "h100-x1", "display_name": "1 H100", "gpu": {"type": "H100", "count": 1}, "cpu": "8", "memory": "64Gi",
         "image": "pytorch"},
        {"id": "h100-x2", "display_name": "2 H100", "gpu": {"type": "H100", "count": 2}, "cpu": "8", "memory": "64Gi",
         "image": "pytorch", "gpu_idle": {"threshold": "10%", "after": "1h"}},
    ],
    "tenants": [
        {"id": "lab", "display_name": "Lab", "kind": "university", "members": {"users": ["alice", "bob"]},
         "profiles": ["cpu", "h100-x1", "h100-x2"], "quota": {"gpus": {"H100": 8}, "gpu_hours_per_month": 1000},
         "culling": {"stop_over_budget": True, "over_budget_grace": "15m"}},
        {"id": "corp", "display_name": "Corp", "kind": "company", "members": {"users": ["carol"]},
         "profiles": ["h100-x1", "h100-x2"], "quota": {"gpus": {"H100": 8}},
         "culling": {"gpu_idle": {"after": "4h", "warn_before": 0}}},
        {"id": "free", "display_name": "Free", "kind": "startup", "members": {"users": ["dave"]},
         "profiles": ["h100-x1"], "quota": {"gpus": {"H100": 1}}, "culling": {"gpu_idle": {"after": 0}}},
    ],
}  # fmt: skip


@pytest.fixture(scope="module")
def config(images: Mapping[str, Image]) -> PlatformConfig:
    return parse_platform(copy.deepcopy(PLATFORM), images)


def server(
    user: str = "alice",
    name: str = "",
    tenant: str | None = "lab",
    profile: str = "h100-x1",
    indices: tuple[str, ...] | None = None,
    started: datetime | None = STARTED,
    active: timedelta = timedelta(0),
    pending: str | None = None,
) -> Server:
    count = {"h100-x1": 1, "h100-x2": 2}.get(profile, 0) if tenant else 0
    return Server(
        user=user,
        name=name,
        tenant=tenant,
        profile=profile if tenant else None,
        last_activity=NOW - active,  # JupyterHub sees activity: GPU-idle culling does not care
        started=started,
        pending=pending,
        gpus={"H100": count} if count else {},
        gpu_indices=tuple(str(i) for i in range(count)) if indices is None else indices,
    )


def sample(gpu: str, utilization: float, read_at: datetime | None = NOW) -> GpuSample:
    return GpuSample(gpu, utilization, 1024.0, read_at)


RULE = GpuIdleRule(Decimal(5), timedelta(hours=2), timedelta(minutes=30), "the platform's setting")
NO_WARNING = GpuIdleRule(Decimal(5), timedelta(hours=2), timedelta(0), "t")
OFF = GpuIdleRule(Decimal(5), timedelta(0), timedelta(minutes=30), "t")


def clock(idle: timedelta | None) -> GpuIdleClock | None:
    return None if idle is None else GpuIdleClock(NOW - idle, STARTED)


# ---------------------------------------------------------------------------
# the decision


@pytest.mark.parametrize(
    ("idle", "rule", "warned_stop_at", "expected"),
    [
        (None, RULE, None, ("keep", None)),  # not idle (or no data): never culled
        (timedelta(0), RULE, None, ("keep", None)),
        (89 * MIN, RULE, None, ("keep", None)),
        (90 * MIN, RULE, None, ("warn", NOW + 30 * MIN)),  # after - warn_before: warned of the stop at after
        (100 * MIN, RULE, None, ("warn", NOW + 20 * MIN)),
        (150 * MIN, RULE, None, ("warn", NOW)),  # warned late (a long interval): the stop is the next round
        (100 * MIN, RULE, NOW + 20 * MIN, ("keep", None)),  # warned: waits for the announced time
        (120 * MIN, RULE, NOW, ("stop", None)),
        (130 * MIN, RULE, NOW - 10 * MIN, ("stop", None)),
        (119 * MIN, NO_WARNING, None, ("keep", None)),  # warn_before 0: no warning, stopped at after
        (120 * MIN, NO_WARNING, None, ("stop", None)),
        (timedelta(days=30), OFF, None, ("keep", None)),  # after 0: off
        (timedelta(days=30), OFF, NOW, ("keep", None)),
    ],
)
def test_gpu_idle_decision(
    idle: timedelta | None, rule: GpuIdleRule, warned_stop_at: datetime | None, expected: tuple[str, datetime | None]
) -> None:
    assert gpu_idle_decision(clock(idle), rule, NOW, warned_stop_at) == expected


# ---------------------------------------------------------------------------
# the idle clock: since when every GPU of the server is under the threshold

EARLIER = GpuIdleClock(NOW - 40 * MIN, STARTED)
TWO = server(profile="h100-x2")  # GPUs 0 and 1


@pytest.mark.parametrize(
    ("case", "previous", "srv", "samples", "expected"),
    [
        ("all idle: the clock starts", None, TWO, [sample("0", 0), sample("1", 4.9)], GpuIdleClock(NOW, STARTED)),
        ("all idle: the clock goes on", EARLIER, TWO, [sample("0", 0), sample("1", 1)], EARLIER),
        ("one GPU busy", EARLIER, TWO, [sample("0", 0), sample("1", 80)], None),
        ("at the threshold is busy", EARLIER, TWO, [sample("0", 0), sample("1", 5)], None),
        ("no data", EARLIER, TWO, None, None),
        ("no samples", EARLIER, TWO, [], None),
        ("partial data: fewer samples than GPUs held", EARLIER, TWO, [sample("0", 0)], None),
        ("the same GPU twice is still partial", EARLIER, TWO, [sample("0", 0), sample("0", 0)], None),
        ("data older than the round", EARLIER, TWO, [sample("0", 0), sample("1", 0, NOW - 6 * MIN)], None),
        ("data of the round", EARLIER, TWO, [sample("0", 0), sample("1", 0, NOW - 4 * MIN)], EARLIER),
        ("no timestamp: read now", EARLIER, TWO, [sample("0", 0, None), sample("1", 0, None)], EARLIER),
        (
            "a restarted server starts a new clock",
            EARLIER,
            server(profile="h100-x2", started=NOW - 10 * MIN),
            [sample("0", 0), sample("1", 0)],
            GpuIdleClock(NOW, NOW - 10 * MIN),
        ),
        ("a CPU server has no GPU clock", None, server(profile="cpu"), [], None),
        (
            "Kubernetes: GPUs held by the ledger, named by UUID",
            None,
            server(profile="h100-x2", indices=()),
            [sample("GPU-a", 1), sample("GPU-b", 2)],
            GpuIdleClock(NOW, STARTED),
        ),
        (
            "Kubernetes: one of two GPUs reported",
            None,
            server(profile="h100-x2", indices=()),
            [sample("GPU-a", 1)],
            None,
        ),
    ],
)
def test_gpu_idle_clock(
    case: str,
    previous: GpuIdleClock | None,
    srv: Server,
    samples: list[GpuSample] | None,
    expected: GpuIdleClock | None,
) -> None:
    assert gpu_idle_clock(previous, srv, samples, Decimal(5), NOW, fresh_since=NOW - 5 * MIN) == expected, case


# ---------------------------------------------------------------------------
# which setting applies: one key at a time, tenant > profile > platform


@pytest.mark.parametrize(
    ("srv", "expected"),
    [
        (server(), GpuIdleRule(Decimal(5), timedelta(hours=2), timedelta(minutes=30), "the platform's setting")),
        (
            server(profile="h100-x2"),
            GpuIdleRule(Decimal(10), timedelta(hours=1), timedelta(minutes=30), "the setting of profile h100-x2"),
        ),
        (
            server("carol", tenant="corp", profile="h100-x2"),
            GpuIdleRule(Decimal(10), timedelta(hours=4), timedelta(0), "tenant corp's setting"),
        ),
        (
            server("dave", tenant="free"),
            GpuIdleRule(Decimal(5), timedelta(0), timedelta(minutes=30), "tenant free's setting"),
        ),
    ],
)
def test_gpu_idle_rule(config: PlatformConfig, srv: Server, expected: GpuIdleRule) -> None:
    assert gpu_idle_rule(srv, config) == expected


# ---------------------------------------------------------------------------
# with the other culling decisions


def test_an_idle_gpu_server_is_warned_with_the_figures_then_stopped(config: PlatformConfig) -> None:
    srv = server(active=timedelta(0))  # JupyterHub sees activity right now
    clocks = {srv.key: GpuIdleClock(NOW - 90 * MIN, STARTED)}
    [warn] = cull_decisions([srv], config, NOW, {}, gpu_idle=clocks)
    assert (warn.kind, warn.stops, warn.stop_at) == ("idle_gpu_warn", False, NOW + 30 * MIN)
    assert warn.reason == (
        "GPUs idle: alice's default server (tenant lab, profile h100-x1, 1 H100 GPU) will be stopped at 14:30:00 UTC:"
        " every GPU it holds [0] has been under 5% utilization since 12:30:00 UTC, and GPU servers whose GPUs stay"
        " under 5% for 2h are stopped (the platform's setting). Save your work now; to keep it, run work on its"
        " GPUs, or, if you do not need a GPU now, start a CPU-only profile instead."
    )
    assert warn.note == (
        "its GPUs (1 H100 GPU [0]) have been under 5% utilization since 12:30:00 UTC; to keep it, run work on its"
        " GPUs, or, if you do not need a GPU now, start a CPU-only profile instead"
    )
    assert cull_decisions([srv], config, NOW, {}, gpu_idle=clocks, gpu_warned={srv.key: NOW + 30 * MIN}) == []
    later = NOW + 30 * MIN
    [stop] = cull_decisions([srv], config, later, {}, gpu_idle=clocks, gpu_warned={srv.key: NOW + 30 * MIN})
    assert (stop.kind, stop.stops) == ("idle_gpu", True)
    assert stop.reason.startswith(
        "Stopped alice's default server (tenant lab, profile h100-x1, 1 H100 GPU): every GPU it held [0] was under 5%"
        " utilization from 12:30:00 UTC for 2h"
    )
    assert END_REASONS[stop.kind] == "idle-gpu" and "idle-gpu" in ENDED_BECAUSE


def test_missing_data_and_busy_gpus_never_cull(config: PlatformConfig) -> None:
    srv = server()
    assert cull_decisions([srv], config, NOW, {}, gpu_idle={}) == []  # no clock: no data, or busy
    assert cull_decisions([server(profile="cpu")], config, NOW, {}, gpu_idle={}) == []
    pending = server(pending="spawn")
    assert cull_decisions([pending], config, NOW, {}, gpu_idle={pending.key: clock(timedelta(days=1))}) == []


def test_activity_idle_comes_first_then_gpu_idle_then_over_budget(config: PlatformConfig) -> None:
    idle_both = server(active=timedelta(hours=9))
    clocks = {idle_both.key: GpuIdleClock(NOW - timedelta(hours=3), STARTED)}
    [action] = cull_decisions([idle_both], config, NOW, {}, gpu_idle=clocks, gpu_warned={idle_both.key: NOW})
    assert action.kind == "idle"  # the existing reason first, as before
    srv = server()
    overrun = {"lab": [Overrun("lab", "tenant", "lab", Decimal(11), Decimal(10))]}
    stopping = {srv.key: GpuIdleClock(NOW - timedelta(hours=3), STARTED)}
    [action] = cull_decisions([srv], config, NOW, overrun, gpu_idle=stopping, gpu_warned={srv.key: NOW})
    assert action.kind == "idle_gpu"
    warning = {srv.key: GpuIdleClock(NOW - 90 * MIN, STARTED)}
    [action] = cull_decisions([srv], config, NOW, overrun, gpu_idle=warning)
    assert action.kind == "over_budget_warn"  # one action a round: the GPU-idle warning comes next round
    [action] = cull_decisions([srv], config, NOW, overrun, {srv.key: NOW}, gpu_idle=warning)
    assert action.kind == "idle_gpu_warn"


def test_servers_from_hub_read_where_the_gpus_are() -> None:
    users = [
        {"name": "alice", "servers": {"": {"started": "2026-11-20T10:00:00Z", "state": {"pid": 7, "aidc": {"gpus": ["2", "3"], "run": "r1"}}}}},
        {"name": "bob", "servers": {"train": {"state": {"pod_name": "jupyter-bob--train", "namespace": "aidc-lab"}}}},
        {"name": "carol", "servers": {"": {}}},  # no state: a token without admin:server_state
    ]  # fmt: skip
    found = {s.key: server_gpus(s) for s in servers_from_hub(users, [])}
    assert found == {
        ("alice", ""): ServerGpus(("alice", ""), ("2", "3")),
        ("bob", "train"): ServerGpus(("bob", "train"), namespace="aidc-lab", pod="jupyter-bob--train"),
        ("carol", ""): ServerGpus(("carol", "")),
    }


def test_the_service_may_read_server_state() -> None:
    assert "admin:server_state" in SCOPES
    assert set(SCOPES) <= set(SERVICE_SCOPES)


# ---------------------------------------------------------------------------
# the culler's rounds, with a source of GPU use and the quotas store (the hub's API replaced)


class Source:
    """A :class:`GpuUseSource` that answers what a test sets, or fails."""

    def __init__(self) -> None:
        self.use: dict[tuple[str, str], list[GpuSample]] = {}
        self.failure: Exception | None = None
        self.asked: list[list[ServerGpus]] = []

    async def sample(self, servers: Sequence[ServerGpus]) -> dict[tuple[str, str], list[GpuSample]]:
        self.asked.append(list(servers))
        if self.failure is not None:
            raise self.failure
        return {s.key: self.use[s.key] for s in servers if s.key in self.use}


async def test_culler_rounds_warn_on_the_run_take_back_and_stop(
    config: PlatformConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    store = Store(f"sqlite:///{tmp_path / 'quotas.sqlite'}")
    holding = Holding("lab", "alice", "", "h100-x1", {"H100": 1}, Decimal(8), Decimal(2**36))
    store.restore(holding, None, STARTED)
    key = ("alice", "")
    store.mark_to_stop(key, NOW, "left by a culler before its restart")
    source = Source()
    culler = Culler(config, store, "http://hub.invalid/hub/api", "token", gpu_source=source)
    model = {"started": STARTED.isoformat(), "last_activity": NOW.isoformat(), "state": {"aidc": {"gpus": ["3"]}}}
    users = [{"name": "alice", "servers": {"": model}}]
    deleted: list[str] = []

    async def active_users() -> list[dict[str, Any]]:
        return users

    async def request(method: str, path: str, accept: str = "") -> Any:
        deleted.append(f"{method} {path}")
        return SimpleNamespace(code=204)

    monkeypatch.setattr(culler, "_active_users", active_users)
    monkeypatch.setattr(culler, "_request", request)

    async def at(later: timedelta) -> list[Action]:
        """A round at NOW + ``later``, with JupyterHub seeing activity just then."""
        now = NOW + later
        model["last_activity"] = now.isoformat()
        return await culler.run_once(now)

    def run() -> Run:
        [found] = [r for r in store.open_runs("lab") if r.holding.user == "alice"]
        return found

    # the first round takes back a warning left over; no data yet: not idle
    assert await at(timedelta(0)) == []
    assert run().stop_at is None
    assert source.asked == [[ServerGpus(key, ("3",))]]
    # idle from this round on; warned at 90 minutes, on the ledger's run (the hub's pages show it)
    source.use[key] = [GpuSample("3", 0.0, 10.0, None)]
    assert await at(MIN) == []
    [warn] = await at(91 * MIN)
    assert warn.kind == "idle_gpu_warn" and run().stop_at == NOW + 121 * MIN
    assert run().stop_note is not None and "under 5% utilization since 14:01:00 UTC" in str(run().stop_note)
    # the GPU is used again: the warning is taken back
    source.use[key] = [GpuSample("3", 60.0, 10.0, None)]
    assert await at(92 * MIN) == []
    assert run().stop_at is None
    # idle again; a source that fails is no data: the clock starts over, logged once
    source.use[key] = [GpuSample("3", 0.0, 10.0, None)]
    assert await at(93 * MIN) == []
    source.failure = GpuUseUnavailable("nvidia-smi did not answer within 10s")
    with caplog.at_level(logging.WARNING, logger="aidc.culler"):
        for minute in range(94, 400, 30):
            assert await at(minute * MIN) == []
    assert caplog.text.count("Reading GPU use failed") == 1
    source.failure = None
    assert await at(400 * MIN) == []
    [warn] = await at(490 * MIN)
    assert warn.stop_at == NOW + 520 * MIN
    assert await at(519 * MIN) == []
    [stop] = await at(520 * MIN)
    assert stop.kind == "idle_gpu" and deleted == ["DELETE /users/alice/server"]
    assert run().end_reason == "idle-gpu"  # the hub's stop closes the run with it
    store.close()


def test_the_hub_pages_say_when_why_and_how_to_keep_it() -> None:
    holding = Holding("lab", "bob", "", "h100-x1", {"H100": 1}, Decimal(8), Decimal(2**36))
    note = (
        "its GPUs (1 H100 GPU [1]) have been under 5% utilization since 12:30:00 UTC; to keep it, run work on its GPUs"
    )
    warned = Run("r1", holding, STARTED, stop_at=NOW + 30 * MIN, stop_note=note)
    assert server_notices([warned], NOW) == [
        Notice("warning", f"Your default server will be stopped at 14:30:00 UTC (in 30m): {note}. Save your work now.")
    ]
    ended = Run("r2", holding, STARTED, ended=NOW - MIN, end_reason="idle-gpu")
    assert server_notices([ended], NOW) == [
        Notice(
            "info",
            "Your default server was stopped at 2026-11-20 13:59 UTC: its GPUs sat idle (under the platform's"
            " utilization threshold) longer than allowed; start it again when you need a GPU, or use a CPU-only"
            " profile.",
        )
    ]
